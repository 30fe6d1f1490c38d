"""Edit a trained model: crop, remove faint / huge / far Gaussians and floaters, drop SH bands,
and apply a similarity transform. `splatlab edit` is the command-line face of `edit_gaussians`.

    from splatlab.edit import EditConfig, edit_gaussians
    result = edit_gaussians(gaussians, EditConfig(crop_box=(-1, -1, -1, 1, 1, 1), min_opacity=0.05))
    result.gaussians, result.summary.line()

Order of operations (each removal is counted under the first rule that removes a Gaussian):
crop box, crop sphere, min opacity, max size, far outside the scene, floaters; then the SH degree;
then the transform p' = scale * R_euler * R_upright * p + translate.

Frames. Crop coordinates are in the model's own frame, or (crop_frame="upright") in the frame
turned about the origin so that the model's up direction is +z (geometry.rotation_to_z_up). The
up direction comes from the training cameras (geometry.up_from_cameras) when the model comes
from a training run, from a USD file's upAxis, or is unknown.

Rotating a model rotates its view-dependent colour: the SH bands 1..3 are rotated with it
(`rotate_sh`), so a rotated model seen from a rotated camera renders the same image.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import torch

from .camera import Camera
from .gaussians import Gaussians
from .geometry import quat_multiply, quat_to_rotmat, rotation_to_z_up, rotmat_to_quat, up_from_cameras
from .sh import sh_basis

__all__ = [
    "EditConfig",
    "EditResult",
    "EditSummary",
    "edit_gaussians",
    "euler_to_rotmat",
    "rotate_sh",
    "similarity_transform",
]


@dataclass
class EditConfig:
    """What `splatlab edit` does to a model. Every rule is off unless set."""

    crop_box: Optional[tuple[float, float, float, float, float, float]] = None
    """Keep only Gaussians whose centres lie in this box: XMIN YMIN ZMIN XMAX YMAX ZMAX (inclusive)."""
    crop_sphere: Optional[tuple[float, float, float, float]] = None
    """Keep only Gaussians whose centres lie in this sphere: CX CY CZ RADIUS (inclusive)."""
    crop_frame: Literal["model", "upright"] = "model"
    """Frame of the crop coordinates: the model's own, or turned so that the up direction found
    from the training cameras (or a USD file's upAxis) is +z."""
    crop_invert: bool = False
    """Remove what lies inside the crop instead of what lies outside."""
    min_opacity: Optional[float] = None
    """Remove Gaussians whose opacity is below this (0..1; 3DGS prunes below 0.005)."""
    max_scale: Optional[float] = None
    """Remove Gaussians whose largest standard deviation exceeds this, in model units."""
    max_distance: Optional[float] = None
    """Remove Gaussians farther from the scene centre than this many scene radii. Scene centre
    and radius: the training cameras' mean and 1.1x their largest distance from it (3DGS's
    extent); without cameras, the median centre and the 90th-percentile distance of the Gaussians."""
    floaters: Literal["none", "density", "visibility"] = "none"
    """density: remove small clusters detached from the rest (Gaussians linked to those of their
    k nearest neighbours they touch, see `floater_reach`; clusters holding less than
    `floater_cluster_fraction` of the model go); visibility: remove Gaussians whose centre fewer
    than `floater_min_views` training cameras see."""
    floater_neighbours: int = 16
    """density: k nearest neighbours a Gaussian may be linked to."""
    floater_reach: float = 3.0
    """density: two Gaussians touch when their centres are closer than this times the sum of
    their largest standard deviations (3: their three-sigma spheres, 99.7% of each, meet).
    Chosen on a tuning split of statue_colmap (docs/edit_and_usd.md): 1 cost 0.32 dB there,
    1.5-3 less than 0.06 dB."""
    floater_cluster_fraction: float = 0.01
    """density: clusters smaller than this fraction of all Gaussians are floaters."""
    floater_min_views: int = 2
    """visibility: training cameras that must see a Gaussian's centre (in front, inside the image)."""
    sh_degree: Optional[int] = None
    """Keep the SH bands up to this degree (0..3), dropping the higher ones; None keeps all."""
    upright: bool = False
    """Rotate the model so that its up direction (from the cameras or the data) becomes +z."""
    rotate: Optional[tuple[float, float, float]] = None
    """Rotation in degrees about x, then y, then z (fixed axes), after `upright`."""
    scale: float = 1.0
    """Uniform scale about the origin, after the rotation."""
    translate: Optional[tuple[float, float, float]] = None
    """Translation, last."""

    def validate(self) -> None:
        if self.crop_box is not None:
            lo, hi = self.crop_box[:3], self.crop_box[3:]
            if len(self.crop_box) != 6 or not all(math.isfinite(v) for v in self.crop_box) or any(
                a > b for a, b in zip(lo, hi)
            ):
                raise ValueError(f"crop box must be XMIN YMIN ZMIN XMAX YMAX ZMAX with min <= max, got {self.crop_box}")
        if self.crop_sphere is not None and not (
            len(self.crop_sphere) == 4 and all(math.isfinite(v) for v in self.crop_sphere) and self.crop_sphere[3] > 0
        ):
            raise ValueError(f"crop sphere must be CX CY CZ RADIUS with RADIUS > 0, got {self.crop_sphere}")
        if self.min_opacity is not None and not 0.0 <= self.min_opacity <= 1.0:
            raise ValueError(f"min opacity must be in [0, 1], got {self.min_opacity}")
        if not 0.0 < self.floater_cluster_fraction < 1.0:
            raise ValueError(f"floater cluster fraction must be in (0, 1), got {self.floater_cluster_fraction}")
        for name in ("max_scale", "max_distance", "floater_reach"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name.replace('_', ' ')} must be a positive number, got {value}")
        if self.floater_neighbours < 1 or self.floater_min_views < 1:
            raise ValueError("floater neighbours and floater min views must be at least 1")
        if self.sh_degree is not None and self.sh_degree not in (0, 1, 2, 3):
            raise ValueError(f"SH degree must be 0, 1, 2 or 3, got {self.sh_degree}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a positive number, got {self.scale}")

    @property
    def needs_up(self) -> bool:
        return self.upright or (self.crop_frame == "upright" and (self.crop_box or self.crop_sphere) is not None)


@dataclass(frozen=True)
class EditSummary:
    """What an edit did, for people (`line()`) and for code."""

    input_count: int
    output_count: int
    removed: tuple[tuple[str, int], ...]  # (why, how many), in the order the rules ran
    sh_degree_before: int
    sh_degree_after: int
    transform: str  # "" when none

    def line(self) -> str:
        """One line: what was removed and why, and what else changed."""
        head = f"kept {self.output_count:,} of {self.input_count:,} Gaussians"
        parts = [f"{count:,} {why}" for why, count in self.removed if count]
        text = head + (f" (removed {', '.join(parts)})" if parts else " (none removed)")
        if self.sh_degree_after != self.sh_degree_before:
            text += f"; SH degree {self.sh_degree_before} -> {self.sh_degree_after}"
        return text + (f"; {self.transform}" if self.transform else "")


@dataclass
class EditResult:
    gaussians: Gaussians
    summary: EditSummary
    up: Optional[torch.Tensor]  # [3] the model's up direction in the output frame, None if unknown
    kept: torch.Tensor  # [N_in] bool: which input Gaussians are in the output


# ---- rotations of Gaussians and their colour ----------------------------------------------------


def euler_to_rotmat(degrees: Sequence[float]) -> torch.Tensor:
    """[3, 3] rotation by degrees[0] about x, then degrees[1] about y, then degrees[2] about z."""
    ax, ay, az = (math.radians(float(v)) for v in degrees)
    rx = torch.tensor([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]], dtype=torch.float64)
    ry = torch.tensor([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]], dtype=torch.float64)
    rz = torch.tensor([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]], dtype=torch.float64)
    return rz @ ry @ rx


def _fibonacci_sphere(n: int) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = math.pi * (3.0 - math.sqrt(5.0)) * i
    r = (1.0 - z * z).sqrt()
    return torch.stack([r * phi.cos(), r * phi.sin(), z], dim=-1)  # [n, 3]


def sh_rotation_matrices(rotation: torch.Tensor, degree: int) -> list[torch.Tensor]:
    """Per band l = 1..degree, the [2l+1, 2l+1] matrix T_l with new_coeffs = T_l @ old_coeffs.

    A rotated model must show in direction R d the colour it showed in direction d:
    sum_k c'_k Y_k(d) = sum_k c_k Y_k(R^T d) for every d. Each band is closed under rotation, so
    Y_l(R^T d) = M_l Y_l(d) for a (2l+1)^2 matrix M_l, and c' = M_l^T c. M_l is solved exactly
    (least squares on 64 well-spread directions, float64) with splatlab's own basis (sh.py), so
    the 3DGS sign convention is kept without a second table of constants. Works for mirrors too.
    """
    r = rotation.detach().to(torch.float64).cpu()
    dirs = _fibonacci_sphere(64)  # [M, 3]
    basis = sh_basis(degree, dirs)  # [M, K]
    basis_rot = sh_basis(degree, dirs @ r)  # [M, K]: row i is Y(R^T d_i)
    mats = []
    for l in range(1, degree + 1):
        band = slice(l * l, (l + 1) * (l + 1))
        # Rows: Y_l(R^T d_i)^T = Y_l(d_i)^T M_l^T, so basis_rot = basis @ M_l^T; solve for M_l^T.
        mats.append(torch.linalg.lstsq(basis[:, band], basis_rot[:, band]).solution)  # [2l+1, 2l+1]
    return mats


def rotate_sh(shN: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """[N, K-1, 3] higher SH coefficients of Gaussians rotated by `rotation` [3, 3] -> same shape."""
    degree = {0: 0, 3: 1, 8: 2, 15: 3}.get(shN.shape[1])
    if degree is None:
        raise ValueError(f"shN must have 0, 3, 8 or 15 coefficients per channel, got {shN.shape[1]}")
    if degree == 0:
        return shN.clone()
    out = torch.empty_like(shN)
    for l, m_t in enumerate(sh_rotation_matrices(rotation, degree), start=1):
        band = slice(l * l - 1, (l + 1) * (l + 1) - 1)  # shN index = coefficient index - 1
        out[:, band] = torch.einsum("ij,njc->nic", m_t.to(shN.dtype), shN[:, band])  # c' = T_l c
    return out


def similarity_transform(
    g: Gaussians, rotation: torch.Tensor, scale: float = 1.0, translation: Optional[torch.Tensor] = None
) -> Gaussians:
    """Gaussians moved by p' = scale * rotation @ p + translation, their colour rotated with them.

    rotation: [3, 3] orthogonal (a mirror, det = -1, is allowed: a Gaussian is symmetric, so its
    frame is re-made right-handed by flipping one local axis). Means are rotated, scaled and
    translated; quaternions composed with the rotation; log-scales shifted by log(scale);
    opacities and the DC colour unchanged; SH bands 1..3 rotated (rotate_sh).
    """
    r = torch.as_tensor(rotation, dtype=torch.float64).cpu()
    if r.shape != (3, 3) or not torch.allclose(r.T @ r, torch.eye(3, dtype=torch.float64), atol=1e-6):
        raise ValueError(f"rotation must be an orthogonal 3x3 matrix, got {r.tolist()}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale}")
    t = torch.zeros(3, dtype=torch.float64) if translation is None else torch.as_tensor(translation, dtype=torch.float64)
    dtype, device = g.dtype, g.device
    means = scale * (g.means.detach().double().cpu() @ r.T) + t  # [N, 3]
    q = torch.nn.functional.normalize(g.quats.detach().double().cpu(), dim=-1)  # [N, 4]
    if torch.det(r) > 0:
        quats = quat_multiply(rotmat_to_quat(r).expand_as(q), q)  # rotation r, after the Gaussian's own
    else:
        frames = r @ quat_to_rotmat(q)  # [N, 3, 3], det -1
        frames[:, :, 0] = -frames[:, :, 0]
        quats = rotmat_to_quat(frames)
    out = Gaussians(
        means=means,
        quats=quats,
        log_scales=g.log_scales.detach().double().cpu() + math.log(scale),
        logit_opacities=g.logit_opacities.detach().double().cpu(),
        sh0=g.sh0.detach().double().cpu(),
        shN=rotate_sh(g.shN.detach().double().cpu(), r),
    )
    return out.to(device=device, dtype=dtype)


# ---- what to remove -----------------------------------------------------------------------------


def _scene_sphere(means: torch.Tensor, cameras: Optional[Sequence[Camera]]) -> tuple[torch.Tensor, float]:
    """(centre [3], radius) of the scene: from the training cameras if any, else from the Gaussians."""
    if cameras:
        from .data.scene import camera_extent

        centres = torch.stack([c.position.double().cpu() for c in cameras])
        return centres.mean(0), camera_extent(cameras)
    centre = means.median(dim=0).values
    dist = (means - centre).norm(dim=1)  # [N]
    radius = dist.kthvalue(max(1, math.ceil(0.9 * len(dist)))).values.item() if len(dist) else 1.0  # 90th pct
    return centre, max(radius, 1e-12)


def _crop_frame(means: torch.Tensor, cfg: EditConfig, up: Optional[torch.Tensor]) -> torch.Tensor:
    if cfg.crop_frame == "model":
        return means
    return means @ rotation_to_z_up(up).T


def _describe_bounds(points: torch.Tensor) -> str:
    lo, hi = points.min(0).values.tolist(), points.max(0).values.tolist()
    return ", ".join(f"{a} in [{l:.4g}, {h:.4g}]" for a, l, h in zip("xyz", lo, hi))


def _crop_rules(means: torch.Tensor, cfg: EditConfig, up) -> list[tuple[str, torch.Tensor]]:
    """(why, mask of Gaussians to remove) for the crop box and sphere; ValueError for an empty crop."""
    rules = []
    if cfg.crop_box is None and cfg.crop_sphere is None:
        return rules
    p = _crop_frame(means, cfg, up)  # [N, 3] float64
    frame = " (upright frame)" if cfg.crop_frame == "upright" else ""
    for kind, shape in (("box", cfg.crop_box), ("sphere", cfg.crop_sphere)):
        if shape is None:
            continue
        if kind == "box":
            lo, hi = torch.tensor(shape[:3], dtype=torch.float64), torch.tensor(shape[3:], dtype=torch.float64)
            inside = ((p >= lo) & (p <= hi)).all(dim=1)
        else:
            inside = (p - torch.tensor(shape[:3], dtype=torch.float64)).norm(dim=1) <= shape[3]
        keep = ~inside if cfg.crop_invert else inside
        if not keep.any() and len(p):
            what = "leaves none" if cfg.crop_invert else "contains none"
            raise ValueError(f"the crop {kind} {list(shape)}{frame} {what} of the {len(p):,} Gaussians' centres "
                             f"({_describe_bounds(p)}); nothing written")
        rules.append((f"{'inside' if cfg.crop_invert else 'outside'} the crop {kind}", ~keep))
    return rules


def _floaters_by_density(means: torch.Tensor, sigmas: torch.Tensor, cfg: EditConfig) -> torch.Tensor:
    """[N] bool: Gaussians in small clusters detached from the rest of the model.

    A graph links each Gaussian to those of its k nearest neighbours it touches (centre distance
    <= reach * (sigma_i + sigma_j), sigma the largest standard deviation); its connected
    components are the clusters. Measured on a trained capture, this keeps the large, sparse
    background Gaussians that a plain statistical outlier test on centre distances removes
    (see docs/edit_and_usd.md), and it catches clumps of floaters, which such a test does not.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(means)
    k = min(cfg.floater_neighbours, n - 1)
    if k < 1:
        return torch.zeros(n, dtype=torch.bool)
    pts, sig = means.numpy(), sigmas.numpy()
    dists, idx = cKDTree(pts).query(pts, k=k + 1)  # [N, k+1]; column 0 is the point itself
    touch = dists[:, 1:] <= cfg.floater_reach * (sig[:, None] + sig[idx[:, 1:]])  # [N, k]
    rows = np.repeat(np.arange(n), k)[touch.ravel()]
    cols = idx[:, 1:].ravel()[touch.ravel()]
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    counts = np.bincount(label)
    small = counts[label] < cfg.floater_cluster_fraction * n  # [N]
    # Beyond the main body lies the far field (sky, distant background), which a real capture's
    # model paints with large, sparse Gaussians that touch few neighbours: there, only Gaussians
    # smaller than the main body's typical one count as floaters. Removing the far field too cost
    # 0.39 dB on a statue_colmap model trained on every pixel (docs/edit_and_usd.md).
    main = label == counts.argmax()
    centre = np.median(pts[main], axis=0)
    reach = np.quantile(np.linalg.norm(pts[main] - centre, axis=1), 0.99)
    far = np.linalg.norm(pts - centre, axis=1) > reach
    large = sig >= np.median(sig[main])
    return torch.from_numpy(small & ~(far & large))


def _views_seeing(means: torch.Tensor, cameras: Sequence[Camera]) -> torch.Tensor:
    """[N] int: how many cameras have each centre in front of them and inside their image."""
    from .constants import NEAR_PLANE

    count = torch.zeros(len(means), dtype=torch.int32)
    for cam in cameras:
        uvz = cam.project(means)  # [N, 3]
        u, v, z = uvz.unbind(-1)
        count += ((z > NEAR_PLANE) & (u >= 0) & (u <= cam.width) & (v >= 0) & (v <= cam.height)).int()
    return count


def _removal_rules(g: Gaussians, cfg: EditConfig, cameras, up) -> list[tuple[str, torch.Tensor]]:
    """(why, [N] bool mask of Gaussians the rule would remove), in the order they apply."""
    means = g.means.detach().double().cpu()  # [N, 3]
    rules = _crop_rules(means, cfg, up)
    if cfg.min_opacity is not None:
        rules.append((f"with opacity < {cfg.min_opacity:g}", g.opacities.detach().cpu() < cfg.min_opacity))
    if cfg.max_scale is not None:
        big = g.log_scales.detach().double().cpu().max(dim=1).values > math.log(cfg.max_scale)
        rules.append((f"larger than {cfg.max_scale:g}", big))
    if cfg.max_distance is not None:
        centre, radius = _scene_sphere(means, cameras)
        far = (means - centre).norm(dim=1) > cfg.max_distance * radius
        rules.append((f"farther than {cfg.max_distance:g} scene radii ({cfg.max_distance * radius:.4g})", far))
    if cfg.floaters == "density":
        sigmas = g.log_scales.detach().double().cpu().max(dim=1).values.exp()  # [N]
        rules.append(("floaters (detached clusters)", _floaters_by_density(means, sigmas, cfg)))
    elif cfg.floaters == "visibility":
        if not cameras:
            raise ValueError("floater removal by visibility needs the training cameras: edit a training run "
                             "whose config.json names its dataset, or pass the dataset (--data)")
        seen = _views_seeing(means, cameras)
        rules.append((f"floaters (seen by < {cfg.floater_min_views} of {len(cameras)} cameras)",
                      seen < cfg.floater_min_views))
    return rules


# ---- the edit -----------------------------------------------------------------------------------


def _transform_of(cfg: EditConfig, up: Optional[torch.Tensor]) -> tuple[torch.Tensor, str]:
    """(rotation [3, 3], description) of upright + euler rotation."""
    r = torch.eye(3, dtype=torch.float64)
    words = []
    if cfg.upright:
        r = rotation_to_z_up(up)
        angle = math.degrees(math.acos(max(-1.0, min(1.0, (float(r.trace()) - 1.0) / 2.0))))
        words.append(f"turned upright ({angle:.1f} deg)")
    if cfg.rotate is not None and any(cfg.rotate):
        r = euler_to_rotmat(cfg.rotate) @ r
        words.append("rotated x/y/z by " + "/".join(f"{v:g}" for v in cfg.rotate) + " deg")
    if cfg.scale != 1.0:
        words.append(f"scaled x{cfg.scale:g}")
    if cfg.translate is not None and any(cfg.translate):
        words.append("translated by (" + ", ".join(f"{v:g}" for v in cfg.translate) + ")")
    return r, ", ".join(words)


def edit_gaussians(
    gaussians: Gaussians,
    config: EditConfig,
    cameras: Optional[Sequence[Camera]] = None,
    up: Optional[torch.Tensor | Sequence[float]] = None,
) -> EditResult:
    """Apply `config` to `gaussians` (not modified). Returns the edited Gaussians and a summary.

    cameras: the training cameras (visibility floaters, scene radius, and `up` when not given).
    up: the model's up direction [3] (else from the cameras; else unknown).
    Raises ValueError for an empty crop, an edit that removes every Gaussian, or a rule that needs
    cameras or an up direction that is not known.
    """
    config.validate()
    if up is None and cameras:
        up = up_from_cameras([c.c2w for c in cameras])
    up = None if up is None else torch.as_tensor(up, dtype=torch.float64).reshape(3)
    if config.needs_up and up is None:
        raise ValueError("the upright frame needs the model's up direction: edit a training run whose dataset "
                         "is available (or pass --data), or a USD file (its upAxis)")
    g = gaussians.detach()
    n = len(g)
    gone = torch.zeros(n, dtype=torch.bool)
    removed = []
    for why, mask in _removal_rules(g, config, cameras, up):
        new = mask & ~gone
        removed.append((why, int(new.sum())))
        gone |= new
    if n and gone.all():
        raise ValueError(f"the edit would remove all {n:,} Gaussians ({', '.join(f'{c:,} {w}' for w, c in removed if c)}); "
                         "nothing written")
    kept = ~gone
    out = g[kept.to(g.device)] if gone.any() else g.clone()
    degree_before = g.sh_degree
    if config.sh_degree is not None and config.sh_degree != degree_before:
        out = out.with_sh_degree(config.sh_degree)
    rotation, words = _transform_of(config, up)
    translation = torch.tensor(config.translate or (0.0, 0.0, 0.0), dtype=torch.float64)
    if words:
        out = similarity_transform(out, rotation, config.scale, translation)
        up = None if up is None else rotation @ up
    summary = EditSummary(n, len(out), tuple(removed), degree_before, out.sh_degree, words)
    return EditResult(out, summary, up, kept)


# ---- files: where a model's cameras and orientation come from, and writing the result ---------


@dataclass(frozen=True)
class RunDataset:
    """The dataset a training run's config.json names, with the options it was loaded with."""

    path: Path
    downscale: int = 1
    test_every: int = 8
    eval_split: str = "test"
    intrinsics: str = "auto"


def run_dataset(run: Optional[Path]) -> Optional[RunDataset]:
    """The dataset of a `splatlab train` output folder (None when there is no run or config.json).

    A relative path in config.json is relative to where training was started, as given on its
    command line; it is tried against the current directory, then the run folder's parent.
    """
    if run is None or not (Path(run) / "config.json").is_file():
        return None
    data = json.loads((Path(run) / "config.json").read_text()).get("data", {}) or {}
    if not data.get("path"):
        return None
    path = Path(data["path"]).expanduser()
    if not path.is_absolute() and not path.exists() and (Path(run).resolve().parent / path).exists():
        path = Path(run).resolve().parent / path
    return RunDataset(path, int(data.get("downscale") or 1), int(data.get("test_every", 8)),
                      str(data.get("eval_split", "test")), str(data.get("intrinsics", "auto")))


def load_dataset(dataset: RunDataset):
    """The dataset as a Scene (ValueError naming the folder when it is not there)."""
    from .data import load_scene

    if not dataset.path.exists():
        raise ValueError(f"dataset {dataset.path} (named by the run's config.json) does not exist here; "
                         "pass it with --data")
    return load_scene(dataset.path, downscale=dataset.downscale, test_every=dataset.test_every,
                      eval_split=dataset.eval_split, verbose=False, triangulate=False,
                      intrinsics=dataset.intrinsics)


def up_of_model_file(path: Path) -> Optional[torch.Tensor]:
    """What a model file says is up: a USD stage's upAxis (in the frame splatlab reads it in);
    None for formats that do not say."""
    from .io.usd import USD_FORMATS, read_usd_info

    if Path(path).suffix.lower().lstrip(".") not in USD_FORMATS:
        return None
    return torch.tensor(read_usd_info(path).up, dtype=torch.float64)


def save_model(path: Path, gaussians: Gaussians, format: Optional[str] = None,
               up: Optional[torch.Tensor] = None) -> Path:
    """Write any registered format (io.export_model); USD files get `up` as their upAxis."""
    from .io import export_model, format_from_suffix
    from .io.usd import USD_FORMATS, write_usd

    fmt = (format or format_from_suffix(path)).lower().lstrip(".")
    if fmt in USD_FORMATS:
        return write_usd(path, gaussians, up=up, format=fmt)
    return export_model(path, gaussians, fmt)


def model_up(model_file: Path, run: Optional[Path], data: Optional[Path] = None) -> Optional[torch.Tensor]:
    """The model's up direction: from its training cameras (a run whose dataset is here, or `data`),
    else what the file says (a USD upAxis), else None (unknown: USD files then say Z)."""
    dataset = RunDataset(Path(data)) if data is not None else run_dataset(run)
    if dataset is not None and dataset.path.exists():
        try:
            scene = load_dataset(dataset)
        except (ValueError, OSError) as exc:  # orientation is worth a warning, not a failed export
            warnings.warn(f"could not read the training cameras from {dataset.path} ({exc}); "
                          "the model's up direction is taken from the file", stacklevel=2)
        else:
            return up_from_cameras([v.camera.c2w for v in scene.train])
    return up_of_model_file(model_file)

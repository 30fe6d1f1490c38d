"""A set of anisotropic 3D Gaussians, stored as raw (unconstrained) parameters.

Each parameter is named for the space it lives in, and the activations map it to what the
renderer uses:

    means            [N, 3]     world position                      (used as is)
    quats            [N, 4]     rotation, (w, x, y, z), unnormalised  -> normalised quaternion
    log_scales       [N, 3]     log of the per-axis standard deviation -> exp
    logit_opacities  [N]        logit of the opacity                   -> sigmoid
    sh0              [N, 1, 3]  DC spherical-harmonics coefficient
    shN              [N, K-1, 3] higher SH coefficients, K = (max_degree + 1)^2

The container holds tensors only: optimizers, statistics and densification live elsewhere
(train/strategy), so that every tool (renderer, exporters, viewer) can share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from .sh import num_sh_bases, rgb_to_sh0, sh_degree_from_bases

PARAM_NAMES = ("means", "quats", "log_scales", "logit_opacities", "sh0", "shN")


@dataclass
class Gaussians:
    means: torch.Tensor  # [N, 3]
    quats: torch.Tensor  # [N, 4] (w, x, y, z)
    log_scales: torch.Tensor  # [N, 3]
    logit_opacities: torch.Tensor  # [N]
    sh0: torch.Tensor  # [N, 1, 3]
    shN: torch.Tensor  # [N, K-1, 3]

    # ---- structure ----------------------------------------------------------------------

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        """The largest SH degree these coefficients can represent."""
        return sh_degree_from_bases(self.shN.shape[1] + 1)

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def params(self) -> dict[str, torch.Tensor]:
        """The raw parameters by name, in PARAM_NAMES order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def validate(self, check_finite: bool = True) -> None:
        """Raise ValueError naming the parameter whose shape, dtype or values are wrong."""
        n = self.means.shape[0] if self.means.dim() >= 1 else -1
        expected = {
            "means": (n, 3),
            "quats": (n, 4),
            "log_scales": (n, 3),
            "logit_opacities": (n,),
            "sh0": (n, 1, 3),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"Gaussians.{name} must be a torch.Tensor, got {type(value).__name__}")
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"Gaussians.{name} must have shape {list(shape)} (N={n} from means), got {list(value.shape)}"
                )
        shN = self.shN
        if shN.dim() != 3 or shN.shape[0] != n or shN.shape[2] != 3 or shN.shape[1] + 1 not in (1, 4, 9, 16):
            raise ValueError(
                f"Gaussians.shN must have shape [N, K-1, 3] with K in (1, 4, 9, 16) (N={n}), got {list(shN.shape)}"
            )
        dtype, device = self.means.dtype, self.means.device
        for name, value in self.params().items():
            if not value.is_floating_point():
                raise TypeError(f"Gaussians.{name} must be a floating-point tensor, got {value.dtype}")
            if value.dtype != dtype or value.device != device:
                raise ValueError(
                    f"Gaussians.{name} is {value.dtype} on {value.device}, but means is {dtype} on {device}"
                )
            if check_finite and value.numel() and not _all_finite(value.detach()):
                bad = (~torch.isfinite(value.detach())).reshape(value.shape[0], -1).any(-1)
                idx = bad.nonzero()[:5].flatten().tolist()
                raise ValueError(
                    f"Gaussians.{name} has non-finite values (NaN or Inf) at {int(bad.sum())} Gaussian(s), e.g. {idx}"
                )

    # ---- activations --------------------------------------------------------------------

    @property
    def scales(self) -> torch.Tensor:
        return torch.exp(self.log_scales)  # [N, 3]

    @property
    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.logit_opacities)  # [N]

    @property
    def rotations(self) -> torch.Tensor:
        return torch.nn.functional.normalize(self.quats, dim=-1)  # [N, 4]

    @property
    def sh(self) -> torch.Tensor:
        return torch.cat([self.sh0, self.shN], dim=1)  # [N, K, 3]

    # ---- tensor-like helpers ------------------------------------------------------------

    def map(self, fn) -> "Gaussians":
        """A new Gaussians with `fn` applied to every parameter tensor."""
        return Gaussians(**{k: fn(v) for k, v in self.params().items()})

    def to(self, device=None, dtype=None) -> "Gaussians":
        return self.map(lambda t: t.to(device=device, dtype=dtype))

    def detach(self) -> "Gaussians":
        return self.map(lambda t: t.detach())

    def clone(self) -> "Gaussians":
        return self.map(lambda t: t.clone())

    def requires_grad_(self, flag: bool = True) -> "Gaussians":
        for value in self.params().values():
            value.requires_grad_(flag)
        return self

    def with_sh_degree(self, degree: int) -> "Gaussians":
        """A copy that keeps the SH bands up to `degree` (dropping higher ones; never adds any)."""
        if degree not in (0, 1, 2, 3):
            raise ValueError(f"SH degree must be 0, 1, 2 or 3, got {degree}")
        if degree > self.sh_degree:
            raise ValueError(f"cannot raise the SH degree from {self.sh_degree} to {degree}: the bands do not exist")
        k = num_sh_bases(degree)
        return Gaussians(self.means, self.quats, self.log_scales, self.logit_opacities, self.sh0,
                         self.shN[:, : k - 1].contiguous())

    def __getitem__(self, index) -> "Gaussians":
        """Select Gaussians with a mask, index tensor or slice."""
        return self.map(lambda t: t[index])

    @staticmethod
    def cat(parts: list["Gaussians"]) -> "Gaussians":
        return Gaussians(**{k: torch.cat([getattr(p, k) for p in parts]) for k in PARAM_NAMES})

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def empty(cls, sh_degree: int = 3, dtype=torch.float32, device=None) -> "Gaussians":
        k = num_sh_bases(sh_degree)
        z = lambda *s: torch.zeros(*s, dtype=dtype, device=device)  # noqa: E731
        return cls(z(0, 3), z(0, 4), z(0, 3), z(0), z(0, 1, 3), z(0, k - 1, 3))

    @classmethod
    def from_points(
        cls,
        points: torch.Tensor,
        colors: torch.Tensor | None = None,
        sh_degree: int = 3,
        init_opacity: float = 0.1,
        scale_multiplier: float = 1.0,
    ) -> "Gaussians":
        """Initial Gaussians at a point cloud, as 3DGS initialises from SfM points.

        points: [N, 3]; colors: [N, 3] in [0, 1] (grey when None). Each Gaussian is isotropic,
        with scale = root-mean-square distance to its 3 nearest neighbours, identity rotation,
        opacity `init_opacity`, and the colour in the DC SH coefficient.
        """
        points = torch.as_tensor(points, dtype=torch.float32)
        if points.dim() != 2 or points.shape[1] != 3:
            raise ValueError(f"points must have shape [N, 3], got {list(points.shape)}")
        if points.shape[0] == 0:
            raise ValueError("cannot initialise Gaussians from an empty point cloud")
        if not torch.isfinite(points).all():
            raise ValueError("point cloud contains NaN or Inf positions")
        n = points.shape[0]
        if colors is None:
            colors = torch.full((n, 3), 0.5)
        colors = torch.as_tensor(colors, dtype=torch.float32)
        if colors.shape != (n, 3):
            raise ValueError(f"colors must have shape [{n}, 3] to match the points, got {list(colors.shape)}")
        if colors.numel() and colors.max() > 1.0 + 1e-6:  # 0..255 colours, as COLMAP and PLY store them
            colors = colors / 255.0
        if not 0.0 < init_opacity < 1.0:
            raise ValueError(f"init_opacity must be in (0, 1), got {init_opacity}")
        dist = nearest_neighbour_rms(points, k=3) * scale_multiplier  # [N]
        k = num_sh_bases(sh_degree)
        return cls(
            means=points.clone(),
            quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
            log_scales=torch.log(dist).unsqueeze(-1).repeat(1, 3),
            logit_opacities=torch.full((n,), math.log(init_opacity / (1.0 - init_opacity))),
            sh0=rgb_to_sh0(colors).unsqueeze(1),
            shN=torch.zeros(n, k - 1, 3),
        )

    @classmethod
    def random(
        cls,
        n: int,
        box_min=(-1.0, -1.0, -1.0),
        box_max=(1.0, 1.0, 1.0),
        sh_degree: int = 3,
        init_opacity: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> "Gaussians":
        """`n` Gaussians at uniform random positions in a box, random colours, NN-based scales."""
        if n <= 0:
            raise ValueError(f"number of Gaussians must be positive, got {n}")
        lo, hi = torch.tensor(box_min, dtype=torch.float32), torch.tensor(box_max, dtype=torch.float32)
        if lo.shape != (3,) or hi.shape != (3,) or not (hi > lo).all():
            raise ValueError(f"box must satisfy min < max on every axis, got min={box_min}, max={box_max}")
        points = lo + (hi - lo) * torch.rand(n, 3, generator=generator)
        colors = torch.rand(n, 3, generator=generator)
        return cls.from_points(points, colors, sh_degree=sh_degree, init_opacity=init_opacity)


def _all_finite(value: torch.Tensor) -> bool:
    """True if no NaN/Inf. A sum is much cheaper than an elementwise test and is finite
    whenever every element is (NaN and Inf propagate); only if it is not do we look closer
    (a sum of huge finite values can overflow)."""
    if torch.isfinite(value.sum()):
        return True
    return bool(torch.isfinite(value).all())


def nearest_neighbour_rms(points: torch.Tensor, k: int = 3) -> torch.Tensor:
    """[N, 3] -> [N]: sqrt(mean squared distance to the k nearest other points), floored at 1e-7.

    Uses scipy's KD-tree (O(N log N)); 3DGS computes the same quantity with a CUDA kernel.
    """
    from scipy.spatial import cKDTree

    pts = points.detach().cpu().double().numpy()
    n = pts.shape[0]
    if n == 1:
        return torch.ones(1, dtype=points.dtype)  # nothing to measure against: unit scale
    kk = min(k, n - 1)
    dists, _ = cKDTree(pts).query(pts, k=kk + 1)  # first column is the point itself
    d2 = (dists[:, 1:] ** 2).mean(axis=1)
    return torch.from_numpy(d2).sqrt().clamp_min(1e-7).to(points.dtype)

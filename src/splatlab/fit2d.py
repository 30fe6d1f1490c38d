"""Fit N 2D Gaussians to one image (GaussianImage-style), rendered by splatlab's own rasterizer.

The trick: no second renderer
-----------------------------
Each 2D Gaussian is a *flat* 3D Gaussian lying in the plane z = 1, seen by a pinhole camera at
the world origin looking down +z (identity `viewmat`) with fx = fy = 1 and the principal point
at the image centre (cx, cy) = (W/2, H/2). One world unit on the plane is then exactly one
pixel: a point (x, y, 1) lands at (u, v) = (x + cx, y + cy), so `splatlab.rasterize` (any
backend, with its gradients) renders and differentiates the 2D model.

Per Gaussian, with u = (mu_u, mu_v) its centre in pixels (pixel (j, i) has its centre at
(j + 0.5, i + 0.5), splatlab's convention):

    means      = (mu_u - cx, mu_v - cy, 1)            z fixed at 1 by construction
    quats      = (cos(theta/2), 0, 0, sin(theta/2))   a rotation about z only
    log_scales = (log s1, log s2, Z_LOG_SCALE)        Z_LOG_SCALE fixed and tiny

The quaternion about z makes the 3D covariance block-diagonal: Sigma = diag(Sigma_2, s_z^2)
with Sigma_2 = R(theta) diag(s1^2, s2^2) R(theta)^T (the z-row and column of R are exactly
(0, 0, 1)). The EWA Jacobian at the centre, with z = 1 and f = 1, is

    J = [[f/z, 0, -f x/z^2], [0, f/z, -f y/z^2]] = [[1, 0, -x], [0, 1, -y]]

so the projected covariance is

    J Sigma J^T = Sigma_2 + s_z^2 * (x, y)^T (x, y)

The perspective column (-f x / z^2 = -x, in pixels per world unit of z) leaks the z-scale into
the 2D covariance by s_z^2 * r^2 px^2, r being the distance from the image centre in pixels
(the renderer clamps x, y to 1.3x the half field of view, |x| <= 0.65 W, which only bounds this
term further). With s_z = exp(Z_LOG_SCALE) = 1e-7, the leak is below 1e-14 r^2 px^2: under
1e-7 px^2 even 3000 px from the centre, six orders of magnitude below the renderer's 0.3 px^2
low-pass and about the float32 rounding of the covariance itself. s_z^2 = 1e-14 is still a
normal float32 (and no backend inverts the 3D covariance), so nothing underflows or blows up. The rendered 2D covariance is therefore Sigma_2 + eps2d * I exactly, and the
opacity of a pixel is the closed-form min(0.99, o * exp(-1/2 d^T (Sigma_2 + eps2d I)^-1 d))
(tests/test_fit2d.py checks this to 1e-4). z and the z-scale are never optimised: the raw
parameters are re-parametrised (means from (u, v), quats from theta), so no gradient needs masking.

All Gaussians share depth 1, so the renderer's front-to-back order is their index order
(both backends sort stably); compositing is the usual alpha blending over a fixed background.

Usage::

    from splatlab.fit2d import Fit2DConfig, fit_image
    result = fit_image("photo.jpg", Fit2DConfig(num_gaussians=5000, output="outputs/fit2d"))
    result.psnr, result.files["video"]

Outputs (in `config.output`, each written atomically): reconstruction.png, comparison.png
(original | fit | |error| x4), psnr.png, fit.mp4 (fit.gif when MP4 writing fails),
gaussians2d.pt, metrics.json.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from .camera import Camera
from .gaussians import Gaussians, nearest_neighbour_rms
from .io.images import save_png, to_uint8
from .render import RenderSettings, rasterize
from .render.settings import Backend
from .losses import photometric_loss
from .metrics import psnr, ssim_metric
from .sh import SH_C0, rgb_to_sh0
from .train.schedule import exp_decay

__all__ = [
    "Fit2DConfig",
    "Fit2DResult",
    "Z_LOG_SCALE",
    "fit_image",
    "flat_gaussians",
    "image_plane_camera",
    "load_image",
    "render_2d",
]

Z_LOG_SCALE = math.log(1e-7)
"""Fixed log standard deviation of every flat Gaussian along z (see the module docstring)."""

ERROR_GAIN = 4.0
"""comparison.png shows |fit - original| multiplied by this, so that small errors are visible."""


# ---- configuration and result -----------------------------------------------------------------


@dataclass
class Fit2DConfig:
    """How to fit 2D Gaussians to an image."""

    num_gaussians: int = 5000
    """Number of 2D Gaussians (fixed: no densification)."""
    iterations: int = 2000
    """Adam steps."""
    means_lr: float = 0.3
    """Learning rate of the centres, in pixels (Adam's step size is about the learning rate);
    decays exponentially to `means_lr_final` over the run."""
    means_lr_final: float = 0.01
    """Final learning rate of the centres, in pixels."""
    scales_lr: float = 0.05
    """Learning rate of the two log standard deviations."""
    angles_lr: float = 0.02
    """Learning rate of the rotation angle, in radians."""
    opacity_lr: float = 0.05
    """Learning rate of the logit opacity."""
    colors_lr: float = 0.02
    """Learning rate of the DC spherical-harmonics colour coefficient (rgb = 0.282 * sh0 + 0.5)."""
    loss: Literal["mse", "l1_ssim"] = "mse"
    """'mse' optimises PSNR directly (the reported metric) and has smooth gradients near the
    optimum; 'l1_ssim' is the 3DGS loss (1 - ssim_lambda) L1 + ssim_lambda (1 - SSIM), sharper
    edges perceptually, slightly lower PSNR."""
    ssim_lambda: float = 0.2
    """Weight of the SSIM term for loss='l1_ssim'."""
    init: Literal["gradient", "uniform"] = "gradient"
    """Initial centres: 'gradient' samples pixels with probability proportional to the image
    gradient magnitude plus its mean (half the Gaussians follow edges and texture, half are
    spread uniformly); 'uniform' samples every pixel equally."""
    init_opacity: float = 0.7
    """Opacity of the initial Gaussians."""
    eps2d: float = 0.3
    """Low-pass filter added to every 2D covariance (px^2), as 3DGS does: no Gaussian is
    thinner than about half a pixel, which avoids aliasing. 0 turns it off."""
    background: Optional[tuple[float, float, float]] = None
    """Colour behind the Gaussians; None = the image's mean colour."""
    max_size: Optional[int] = 512
    """Images whose longer side exceeds this are area-downscaled to it first; None keeps the size."""
    seed: int = 0
    """Seed of the initialisation."""
    max_minutes: Optional[float] = None
    """Wall-clock budget; the fit stops cleanly (and writes its outputs) when it is spent."""
    frames_every: int = 20
    """Add a frame to the animation every this many iterations (0 = no animation)."""
    video_fps: int = 15
    """Frames per second of the animation."""
    output: Optional[Path] = None
    """Output folder (created). `splatlab fit2d` defaults to outputs/fit2d_<image name>; from
    Python, None writes nothing and just returns the result."""
    backend: Backend = "auto"
    """Renderer backend (auto = the compiled CPU kernels on CPU)."""
    num_threads: Optional[int] = None
    """CPU threads for the renderer; None = torch's setting."""
    progress: bool = True
    """Show a progress bar."""

    def validate(self) -> None:
        def positive_int(name):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"Fit2DConfig.{name} must be a positive integer, got {v!r}")

        positive_int("num_gaussians")
        positive_int("iterations")
        positive_int("video_fps")
        if isinstance(self.frames_every, bool) or int(self.frames_every) != self.frames_every or self.frames_every < 0:
            raise ValueError(f"Fit2DConfig.frames_every must be an integer >= 0, got {self.frames_every!r}")
        for name in ("means_lr", "means_lr_final", "scales_lr", "angles_lr", "opacity_lr", "colors_lr"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"Fit2DConfig.{name} must be a finite number >= 0, got {v!r}")
        if self.loss not in ("mse", "l1_ssim"):
            raise ValueError(f"Fit2DConfig.loss must be 'mse' or 'l1_ssim', got {self.loss!r}")
        if self.init not in ("gradient", "uniform"):
            raise ValueError(f"Fit2DConfig.init must be 'gradient' or 'uniform', got {self.init!r}")
        if not 0.0 < self.init_opacity < 1.0:
            raise ValueError(f"Fit2DConfig.init_opacity must be in (0, 1), got {self.init_opacity}")
        if not 0.0 <= self.ssim_lambda <= 1.0:
            raise ValueError(f"Fit2DConfig.ssim_lambda must be in [0, 1], got {self.ssim_lambda}")
        if self.eps2d < 0:
            raise ValueError(f"Fit2DConfig.eps2d must be >= 0, got {self.eps2d}")
        if self.max_size is not None and (int(self.max_size) != self.max_size or self.max_size < 8):
            raise ValueError(f"Fit2DConfig.max_size must be an integer >= 8 or None, got {self.max_size!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"Fit2DConfig.max_minutes must be positive or None, got {self.max_minutes}")
        if self.background is not None:
            bg = tuple(self.background)
            if len(bg) != 3 or not all(0.0 <= float(c) <= 1.0 for c in bg):
                raise ValueError(f"Fit2DConfig.background must be 3 numbers in [0, 1] or None, got {self.background!r}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"Fit2DConfig.num_threads must be >= 1 or None, got {self.num_threads}")


@dataclass
class Fit2DResult:
    """A fitted set of 2D Gaussians and how the fit went.

    Raw parameters (what Adam optimised), N Gaussians:
        means [N, 2] centres in pixels (pixel (j, i) has its centre at (j + 0.5, i + 0.5)),
        log_scales [N, 2], angles [N] (radians, rotation of the first axis from +u towards +v),
        logit_opacities [N], sh0 [N, 3] (rgb = 0.282 sh0 + 0.5, clamped at 0).
    """

    means: torch.Tensor  # [N, 2]
    log_scales: torch.Tensor  # [N, 2]
    angles: torch.Tensor  # [N]
    logit_opacities: torch.Tensor  # [N]
    sh0: torch.Tensor  # [N, 3]
    width: int
    height: int
    background: tuple[float, float, float]
    image: torch.Tensor  # [H, W, 3] final render, clamped to [0, 1]
    target: torch.Tensor  # [H, W, 3] the image that was fitted (after any downscale)
    psnr: float
    ssim: float
    iterations: int  # steps done
    seconds: float  # wall-clock time of the optimisation
    stopped: str  # "completed" | "time budget"
    history: list[dict] = field(default_factory=list, repr=False)  # per step: iteration, loss, psnr, seconds
    files: dict[str, Path] = field(default_factory=dict)  # what was written, by role
    notes: list[str] = field(default_factory=list)  # e.g. "MP4 writing failed, wrote fit.gif"

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    @property
    def covariances(self) -> torch.Tensor:
        """[N, 2, 2] 2D covariances in px^2 (without the renderer's eps2d low-pass)."""
        return covariance_2d(self.log_scales, self.angles)

    @property
    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.logit_opacities)  # [N]

    @property
    def colors(self) -> torch.Tensor:
        return (self.sh0 * SH_C0 + 0.5).clamp_min(0.0)  # [N, 3]

    def gaussians(self) -> Gaussians:
        """The flat 3D Gaussians that render this fit with `image_plane_camera(width, height)`."""
        return flat_gaussians(self.means, self.log_scales, self.angles, self.logit_opacities, self.sh0,
                              self.width, self.height)  # fmt: skip


# ---- the 2D <-> flat 3D mapping ------------------------------------------------------------------


def image_plane_camera(width: int, height: int, dtype=torch.float32) -> Camera:
    """Pinhole camera at the origin looking down +z, f = 1, principal point at the image centre:
    the plane z = 1 maps to pixels one world unit per pixel."""
    return Camera(1.0, 1.0, 0.5 * width, 0.5 * height, torch.eye(4, dtype=dtype), int(width), int(height))


def flat_gaussians(
    means: torch.Tensor,
    log_scales: torch.Tensor,
    angles: torch.Tensor,
    logit_opacities: torch.Tensor,
    sh0: torch.Tensor,
    width: int,
    height: int,
) -> Gaussians:
    """2D Gaussians -> flat 3D Gaussians on z = 1 (SH degree 0), differentiable in every input.

    means [N, 2] in pixels, log_scales [N, 2], angles [N], logit_opacities [N], sh0 [N, 3].
    """
    n = means.shape[0]
    centre = torch.tensor([0.5 * width, 0.5 * height], dtype=means.dtype, device=means.device)
    ones = torch.ones(n, 1, dtype=means.dtype, device=means.device)
    zeros = torch.zeros(n, dtype=means.dtype, device=means.device)
    half = 0.5 * angles
    return Gaussians(
        means=torch.cat([means - centre, ones], dim=1),  # [N, 3] on the plane z = 1
        quats=torch.stack([torch.cos(half), zeros, zeros, torch.sin(half)], dim=-1),  # [N, 4] about z
        log_scales=torch.cat([log_scales, torch.full_like(ones, Z_LOG_SCALE)], dim=1),  # [N, 3]
        logit_opacities=logit_opacities,  # [N]
        sh0=sh0.reshape(n, 1, 3),  # [N, 1, 3]
        shN=torch.zeros(n, 0, 3, dtype=means.dtype, device=means.device),  # [N, 0, 3]: degree 0
    )


def covariance_2d(log_scales: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """[N, 2, 2] R(theta) diag(s^2) R(theta)^T from log_scales [N, 2] and angles [N]."""
    c, s = torch.cos(angles), torch.sin(angles)
    rot = torch.stack([c, -s, s, c], dim=-1).reshape(-1, 2, 2)  # [N, 2, 2]
    m = rot * torch.exp(log_scales).unsqueeze(-2)  # R diag(s)
    return m @ m.transpose(-1, -2)


def render_2d(
    means, log_scales, angles, logit_opacities, sh0, width: int, height: int, settings: RenderSettings
):
    """Render 2D Gaussians with `splatlab.rasterize`; returns its RenderOutput ([H, W, 3] image)."""
    g = flat_gaussians(means, log_scales, angles, logit_opacities, sh0, width, height)
    return rasterize(g, image_plane_camera(width, height, dtype=means.dtype), settings)


# ---- input ---------------------------------------------------------------------------------------


def load_image(image: Union[str, os.PathLike, torch.Tensor, np.ndarray], max_size: Optional[int] = None) -> torch.Tensor:
    """An image file or array -> [H, W, 3] float32 in [0, 1] (RGBA composited over white).

    Arrays: [H, W], [H, W, 3] or [H, W, 4], uint8 (0..255) or float (0..1). Raises
    FileNotFoundError / ValueError naming the file or describing the array when unusable.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such image file")
        if not path.is_file():
            raise ValueError(f"{path}: is not a file; expected an image (PNG, JPEG, ...)")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im.load()
                arr = np.asarray(im.convert("RGBA") if im.mode in ("RGBA", "LA", "PA", "P") else im.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read it as an image ({type(exc).__name__}: {exc})") from exc
        what = str(path)
    else:
        arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        what = "image array"
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{what}: expected an image of shape [H, W], [H, W, 3] or [H, W, 4], got {list(arr.shape)}")
    if arr.dtype == np.uint8:
        x = torch.from_numpy(arr.astype(np.float32) / 255.0)
    elif np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer):
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        if not torch.isfinite(x).all():
            raise ValueError(f"{what}: contains NaN or Inf")
        if x.min() < 0.0 or x.max() > 1.0 + 1e-6:
            raise ValueError(
                f"{what}: values must be in [0, 1] (float) or 0..255 (uint8), got range "
                f"[{x.min().item():.4g}, {x.max().item():.4g}] with dtype {arr.dtype}"
            )
    else:
        raise ValueError(f"{what}: unsupported dtype {arr.dtype}; expected uint8 or float")
    if x.shape[2] == 4:  # composite over white
        a = x[:, :, 3:4]
        x = x[:, :, :3] * a + (1.0 - a)
    x = x.clamp(0.0, 1.0).contiguous()  # [H, W, 3]
    h, w = x.shape[:2]
    if max_size is not None and max(h, w) > max_size:
        k = max_size / max(h, w)
        size = (max(1, round(h * k)), max(1, round(w * k)))
        x = F.interpolate(x.permute(2, 0, 1)[None], size=size, mode="area")[0].permute(1, 2, 0).contiguous()
    return x


# ---- initialisation ------------------------------------------------------------------------------


def _init_params(target: torch.Tensor, cfg: Fit2DConfig) -> dict[str, torch.Tensor]:
    """Initial raw parameters: centres sampled over the image, NN-based scales, pixel colours."""
    h, w = target.shape[:2]
    n = cfg.num_gaussians
    gen = torch.Generator().manual_seed(int(cfg.seed))
    if cfg.init == "gradient":
        lum = target.mean(-1)  # [H, W]
        gx = torch.zeros_like(lum)
        gy = torch.zeros_like(lum)
        gx[:, 1:-1] = 0.5 * (lum[:, 2:] - lum[:, :-2])
        gy[1:-1, :] = 0.5 * (lum[2:, :] - lum[:-2, :])
        mag = torch.sqrt(gx * gx + gy * gy).reshape(-1)  # [H*W]
        weights = mag + mag.mean() + 1e-12  # half the mass uniform, half on edges and texture
    else:
        weights = torch.ones(h * w)
    idx = torch.multinomial(weights, n, replacement=True, generator=gen)  # [N] pixel indices
    rows, cols = idx // w, idx % w
    jitter = torch.rand(n, 2, generator=gen)
    means = torch.stack([cols, rows], dim=-1).float() + jitter  # [N, 2] inside the sampled pixel

    # Scale: root-mean-square distance to the 3 nearest centres, so that dense (textured) regions
    # get small Gaussians and flat ones large; clamped to a sensible range.
    spacing = math.sqrt(h * w / n)  # mean spacing of a uniform layout
    pts3 = torch.cat([means, torch.zeros(n, 1)], dim=1)
    dist = nearest_neighbour_rms(pts3, k=3) if n > 1 else torch.tensor([spacing])
    sigma = dist.clamp(0.3 * spacing, 2.0 * spacing).clamp_min(0.5)  # [N] px
    log_scales = torch.log(sigma).unsqueeze(-1).repeat(1, 2)  # [N, 2]
    angles = torch.rand(n, generator=gen) * math.pi  # [N]
    colors = target[rows, cols]  # [N, 3]
    p = cfg.init_opacity
    return {
        "means": means,
        "log_scales": log_scales,
        "angles": angles,
        "logit_opacities": torch.full((n,), math.log(p / (1.0 - p))),
        "sh0": rgb_to_sh0(colors),
    }


# ---- the animation -------------------------------------------------------------------------------


class _Animation:
    """Streams frames to fit.mp4 (imageio's bundled ffmpeg) through an atomic temporary file;
    falls back to fit.gif if the MP4 writer cannot be started or fails on the first frame."""

    def __init__(self, folder: Path, fps: int, frame_hw: tuple[int, int]) -> None:
        self.folder, self.fps = folder, fps
        h, w = frame_hw
        # Small images are enlarged (nearest) so that the video is watchable; even sizes for yuv420p.
        self.zoom = max(1, math.ceil(256 / max(h, w)))
        self.notes: list[str] = []
        self.path: Optional[Path] = None
        self._writer = None
        self._cm = None
        self._frames = 0
        self._failed = False

    def _open(self, name: str, **kwargs) -> None:
        import imageio.v2 as iio

        from .io import atomic_write_path

        self._cm = atomic_write_path(self.folder / name)
        tmp = self._cm.__enter__()
        try:
            self._writer = iio.get_writer(tmp, **kwargs)
        except BaseException as exc:
            self._abort(exc)
            raise
        self.path = self.folder / name

    def _abort(self, exc: BaseException) -> None:
        """Drop the temporary file without touching the destination."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - already failing; the file is discarded anyway
                pass
        self._writer = None
        if self._cm is not None:
            self._cm.__exit__(type(exc), exc, exc.__traceback__)
        self._cm, self.path = None, None

    def _prepare(self, frame: np.ndarray) -> np.ndarray:
        if self.zoom > 1:
            frame = frame.repeat(self.zoom, axis=0).repeat(self.zoom, axis=1)
        h, w = frame.shape[:2]
        return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")

    def append(self, frame: np.ndarray) -> None:
        if self._failed:
            return
        frame = self._prepare(frame)
        if self._frames == 0:
            try:
                self._open("fit.mp4", format="FFMPEG", mode="I", fps=self.fps, codec="libx264",
                           quality=8, macro_block_size=2, ffmpeg_log_level="error")  # fmt: skip
                self._writer.append_data(frame)
            except Exception as exc:  # noqa: BLE001 - any ffmpeg problem: fall back to GIF
                if self._cm is not None:
                    self._abort(exc)
                self.notes.append(f"writing fit.mp4 failed ({type(exc).__name__}: {exc}); wrote fit.gif instead")
                try:
                    self._open("fit.gif", format="GIF", mode="I", duration=1000.0 / self.fps, loop=0)
                    self._writer.append_data(frame)
                except Exception as exc2:  # noqa: BLE001
                    if self._cm is not None:
                        self._abort(exc2)
                    self.notes.append(f"writing fit.gif failed too ({type(exc2).__name__}: {exc2}); no animation")
                    self._failed = True
                    return
        else:
            try:
                self._writer.append_data(frame)
            except Exception as exc:  # noqa: BLE001
                self.notes.append(f"the animation writer failed at frame {self._frames} ({exc}); no animation written")
                self._abort(exc)
                self._failed = True
                return
        self._frames += 1

    def close(self) -> Optional[Path]:
        if self._writer is None or self._failed:
            return None
        try:
            self._writer.close()
        except Exception as exc:  # noqa: BLE001
            self.notes.append(f"closing the animation failed ({type(exc).__name__}: {exc}); no animation written")
            self._writer = None
            self._abort(exc)
            return None
        self._writer = None
        self._cm.__exit__(None, None, None)  # commit: the temporary file replaces the target
        self._cm = None
        return self.path

    def discard(self, exc: BaseException) -> None:
        if self._cm is not None:
            self._abort(exc)


# ---- the fit -------------------------------------------------------------------------------------


@dataclass
class _Fit:
    """The state of a fit while it runs."""

    params: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    target: torch.Tensor  # [H, W, 3]
    settings: RenderSettings
    history: list[dict]
    animation: Optional["_Animation"]
    step: int = 0
    elapsed: float = 0.0
    stopped: str = "completed"

    def render(self):
        h, w = self.target.shape[:2]
        p = self.params
        return render_2d(p["means"], p["log_scales"], p["angles"], p["logit_opacities"], p["sh0"], w, h, self.settings)


def _loss(image: torch.Tensor, target: torch.Tensor, cfg: Fit2DConfig) -> torch.Tensor:
    if cfg.loss == "mse":
        return torch.mean((image - target) ** 2)
    return photometric_loss(image, target, cfg.ssim_lambda)  # the 3DGS training loss


def fit_image(image: Union[str, os.PathLike, torch.Tensor, np.ndarray], config: Optional[Fit2DConfig] = None) -> Fit2DResult:
    """Fit `config.num_gaussians` 2D Gaussians to `image` (a file path or an [H, W, 3] array).

    Adam on every parameter (centres, two log scales, angle, logit opacity, DC colour) with the
    loss `config.loss`; the centres' learning rate decays exponentially (the 3D trainer's
    schedule). Every step renders with `splatlab.rasterize` through the flat-3D mapping of this
    module. Writes the outputs listed in the module docstring when `config.output` is set, and
    returns a `Fit2DResult`.
    """
    cfg = config or Fit2DConfig()
    cfg.validate()
    target = load_image(image, cfg.max_size)  # [H, W, 3]
    h, w = target.shape[:2]
    background = tuple(float(c) for c in (cfg.background if cfg.background is not None else target.mean((0, 1))))
    settings = RenderSettings(backend=cfg.backend, background=background, eps2d=cfg.eps2d, num_threads=cfg.num_threads)
    out_dir = None if cfg.output is None else Path(cfg.output)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    params = {k: v.clone().requires_grad_(True) for k, v in _init_params(target, cfg).items()}
    lrs = {"means": cfg.means_lr, "log_scales": cfg.scales_lr, "angles": cfg.angles_lr,
           "logit_opacities": cfg.opacity_lr, "sh0": cfg.colors_lr}  # fmt: skip
    # eps tiny as in 3DGS: per-parameter gradients of a mean over H*W pixels are small.
    optimizer = torch.optim.Adam([{"params": [params[k]], "lr": lrs[k], "name": k} for k in lrs], eps=1e-15)
    animation = _Animation(out_dir, cfg.video_fps, (h, w)) if out_dir is not None and cfg.frames_every > 0 else None
    fit = _Fit(params, optimizer, target, settings, [], animation)
    try:
        _run_steps(fit, cfg)
    except BaseException as exc:
        if animation is not None:
            animation.discard(exc)
        raise
    return _finish(fit, cfg, background, out_dir)


def _run_steps(fit: _Fit, cfg: Fit2DConfig) -> None:
    """Adam steps until `cfg.iterations` or the time budget, recording PSNR and frames."""
    with torch.no_grad():
        first = fit.render().image
    fit.history.append({"iteration": 0, "loss": None, "psnr": psnr(first.clamp(0, 1), fit.target), "seconds": 0.0})
    if fit.animation is not None:
        fit.animation.append(to_uint8(first))
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.iterations, desc="fit2d", unit="it", dynamic_ncols=True)
    t_start = time.perf_counter()
    try:
        for step in range(1, cfg.iterations + 1):
            fit.optimizer.param_groups[0]["lr"] = exp_decay(cfg.means_lr, cfg.means_lr_final,
                                                            (step - 1) / max(cfg.iterations - 1, 1))
            img = fit.render().image  # [H, W, 3]
            loss = _loss(img, fit.target, cfg)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fit2d: the loss became {loss.item()} at iteration {step}; "
                                         "try lower learning rates")
            fit.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            fit.optimizer.step()
            fit.step, fit.elapsed = step, time.perf_counter() - t_start
            fit.history.append({"iteration": step, "loss": float(loss.item()),
                                "psnr": psnr(img.detach().clamp(0, 1), fit.target), "seconds": fit.elapsed})
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(psnr=f"{fit.history[-1]['psnr']:.2f}")
            if fit.animation is not None and step % cfg.frames_every == 0:
                fit.animation.append(to_uint8(img))
            if cfg.max_minutes is not None and fit.elapsed >= 60.0 * cfg.max_minutes:
                fit.stopped = "time budget"
                break
    finally:
        if bar is not None:
            bar.close()


def _finish(fit: _Fit, cfg: Fit2DConfig, background, out_dir: Optional[Path]) -> Fit2DResult:
    with torch.no_grad():
        final = fit.render().image.clamp(0, 1)  # [H, W, 3], after the last step
    h, w = fit.target.shape[:2]
    raw = {k: v.detach().clone() for k, v in fit.params.items()}
    result = Fit2DResult(
        means=raw["means"], log_scales=raw["log_scales"], angles=raw["angles"],
        logit_opacities=raw["logit_opacities"], sh0=raw["sh0"], width=w, height=h, background=background,
        image=final, target=fit.target, psnr=psnr(final, fit.target), ssim=ssim_metric(final, fit.target),
        iterations=fit.step, seconds=fit.elapsed, stopped=fit.stopped, history=fit.history,
    )  # fmt: skip
    if out_dir is not None:
        if fit.animation is not None:
            if fit.step % cfg.frames_every != 0:
                fit.animation.append(to_uint8(final))  # always end on the final state
            video = fit.animation.close()
            result.notes.extend(fit.animation.notes)
            if video is not None:
                result.files["video"] = video
        _write_outputs(result, cfg, out_dir)
    return result


# ---- outputs -------------------------------------------------------------------------------------


def comparison_image(target: torch.Tensor, fit: torch.Tensor, gap: int = 4) -> np.ndarray:
    """[H, 3W + 2 gap, 3] uint8: original | fit | |fit - original| x ERROR_GAIN, on white."""
    err = ((fit - target).abs() * ERROR_GAIN).clamp(0, 1)
    h = target.shape[0]
    sep = np.full((h, gap, 3), 255, np.uint8)
    return np.concatenate([to_uint8(target), sep, to_uint8(fit), sep, to_uint8(err)], axis=1)


def _psnr_plot(path: Path, history: list[dict], title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .io import atomic_write

    its = [r["iteration"] for r in history if math.isfinite(r["psnr"])]
    vals = [r["psnr"] for r in history if math.isfinite(r["psnr"])]
    fig = Figure(figsize=(6, 4), dpi=100)  # no pyplot: no global state, Agg only
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(its, vals, lw=1.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
    return path


def _write_outputs(result: Fit2DResult, cfg: Fit2DConfig, out_dir: Path) -> None:
    from .io import atomic_write

    files = result.files
    files["reconstruction"] = save_png(out_dir / "reconstruction.png", to_uint8(result.image))
    files["comparison"] = save_png(out_dir / "comparison.png", comparison_image(result.target, result.image))
    files["psnr_plot"] = _psnr_plot(
        out_dir / "psnr.png", result.history,
        f"{result.num_gaussians} Gaussians, {result.width}x{result.height}: {result.psnr:.2f} dB",
    )  # fmt: skip
    payload = {
        "format": "splatlab.fit2d/1",
        "width": result.width,
        "height": result.height,
        "background": list(result.background),
        "z_log_scale": Z_LOG_SCALE,
        "eps2d": cfg.eps2d,
        # raw parameters (what was optimised)
        "means": result.means, "log_scales": result.log_scales, "angles": result.angles,
        "logit_opacities": result.logit_opacities, "sh0": result.sh0,
        # derived, for convenience
        "covariances": result.covariances, "opacities": result.opacities, "colors": result.colors,
    }  # fmt: skip
    files["gaussians"] = out_dir / "gaussians2d.pt"
    with atomic_write(files["gaussians"]) as f:
        torch.save(payload, f)
    cfg_dict = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    metrics = {
        "psnr": result.psnr,
        "ssim": result.ssim,
        "initial_psnr": result.history[0]["psnr"] if result.history else None,
        "num_gaussians": result.num_gaussians,
        "iterations": result.iterations,
        "seconds": result.seconds,
        "seconds_per_iteration": result.seconds / max(result.iterations, 1),
        "stopped": result.stopped,
        "width": result.width,
        "height": result.height,
        "comparison_error_gain": ERROR_GAIN,
        "animation": files["video"].name if "video" in files else None,
        "notes": result.notes,
        "config": cfg_dict,
    }
    files["metrics"] = out_dir / "metrics.json"
    with atomic_write(files["metrics"], "w") as f:
        json.dump(metrics, f, indent=2)

"""Exposure compensation: a learned affine colour transform per training image.

Photo collections change exposure and white balance from photo to photo. Without
compensation the Gaussians explain those changes with view-dependent colour and floaters.
As the official 3DGS train.py does (its `exposure_optimizer`, added with the 2024 depth
regularisation release), each training image i gets a 3x4 matrix E_i, initialised to
[I | 0], applied to the render before the loss:

    rgb' = rgb @ E_i[:, :3] + E_i[:, 3]

trained by its own Adam with an exponentially decaying learning rate (3DGS: 1e-2 -> 1e-3).

One difference from 3DGS: the transforms are parametrised as E_i = [I | 0] + D_i - mean_j D_j,
so their mean over the training images is exactly the identity. Otherwise the model's own
colours are free to drift (any common transform can move between the Gaussians and the
E_i), and a held-out photo, rendered without a transform, is compared with an arbitrary
colouring; pinned to the mean, the model shows the average exposure of the collection.
Test views have no learned transform; `metrics.psnr_exposure_fitted` is the matching
evaluation protocol (fit on the left half of a test image, measure on the right half).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn.functional as F

from .schedule import exp_decay


@dataclass
class ExposureConfig:
    """Per-image exposure compensation (3DGS train.py's exposure_optimizer)."""

    enabled: Optional[bool] = None
    """Learn an affine colour transform per training image. None = on for photographs, off
    for renders of synthetic scenes (datasets with a known background: one fixed exposure)."""
    lr: float = 1e-2
    """Initial learning rate (3DGS exposure_lr_init)."""
    lr_final: float = 1e-3
    """Final learning rate (3DGS exposure_lr_final); exponential decay over the run."""
    model: Literal["affine", "bilateral"] = "affine"
    """"affine": one 3x4 colour transform per image (3DGS). "bilateral": a bilateral grid of them
    per image, varying over the image and with brightness (Wang et al. 2024, as gsplat's
    --use_bilateral_grid): for photos whose colour changes are not one transform (sky and
    statue under another light)."""
    grid: tuple[int, int, int] = (16, 16, 8)
    """Bilateral grid cells: across, down, brightness levels (gsplat's defaults)."""
    grid_lr: float = 2e-3
    """Bilateral grid learning rate (gsplat's), warmed up over the first 3% of the run from 1%,
    then decayed exponentially to 1% of it."""
    grid_tv_weight: float = 10.0
    """Weight of the grid's total-variation loss (gsplat's): neighbouring cells agree."""
    lighting: Optional[bool] = None
    """Also learn a lighting change per image that scales each Gaussian's diffuse colour by a
    function of its normal (9 SH terms of degree <= 2: Lambertian shading), so that the lit
    side can change from photo to photo (train/lighting.py). Same learning rates as `lr`.
    None = on for a photo collection (photos from more than one camera, by their EXIF)."""


def _over_background(image: torch.Tensor, alpha: torch.Tensor | None, background, linear, offset: torch.Tensor):
    """An affine colour map (linear part `linear`: [H, W, 3] -> [H, W, 3], `offset` [3] or
    [H, W, 3]) applied to a render [H, W, 3]; with `alpha` [H, W, 1] and the `background` it was
    composited over, to the Gaussians' colour only: linear(image - T bg) + alpha offset + T bg."""
    if alpha is None:
        return linear(image) + offset
    behind = (1 - alpha) * torch.as_tensor(background, dtype=image.dtype, device=image.device)  # [H, W, 3]
    return linear(image - behind) + alpha * offset + behind


class Learned:
    """A learned tensor (the attribute named by `param`) and its Adam, saved and restored with a
    checkpoint under that name."""

    param = "deltas"
    optimizer: torch.optim.Optimizer

    def state_dict(self) -> dict:
        return {self.param: getattr(self, self.param).detach().cpu(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        value = getattr(self, self.param)
        with torch.no_grad():
            value.copy_(d[self.param].to(value.device))
        self.optimizer.load_state_dict(d["optimizer"])


class _PerImageDeltas(Learned):
    """Per-image learned offsets `deltas` and their Adam, saved and restored with a checkpoint."""

    deltas: torch.nn.Parameter

    def step(self, progress: float, config: ExposureConfig) -> None:
        """One Adam step at the exposure schedule's learning rate (3DGS's exponential decay)."""
        self.optimizer.param_groups[0]["lr"] = exp_decay(config.lr, config.lr_final, progress)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


class Exposure(_PerImageDeltas):
    """The transforms of all training views and their optimizer."""

    def __init__(self, num_views: int, device: torch.device) -> None:
        self.eye = torch.eye(3, 4, device=device)
        self.deltas = torch.nn.Parameter(torch.zeros(num_views, 3, 4, device=device))  # [V, 3, 4]
        self.optimizer = torch.optim.Adam([self.deltas], lr=1e-2, eps=1e-15)

    @property
    def matrices(self) -> torch.Tensor:
        """[V, 3, 4] the transforms, whose mean is the identity."""
        return self.eye + self.deltas - self.deltas.mean(0)

    def apply(self, image: torch.Tensor, index: int, alpha: torch.Tensor | None = None,
              background: tuple[float, float, float] | None = None) -> torch.Tensor:
        """image [H, W, 3] -> the image as training view `index` was exposed.

        With `alpha` [H, W, 1] and the `background` the render was composited over, only the
        Gaussians' colour is transformed: (image - T bg) E + alpha b + T bg, so that an empty
        pixel keeps its background colour (object masks train against a random background)."""
        e = self.eye + self.deltas[index] - self.deltas.mean(0)  # [3, 4]
        return _over_background(image, alpha, background, lambda c: c @ e[:, :3], e[:, 3])

    def loss(self, index: int) -> None:
        return None  # no regulariser: one transform per image


class BilateralGrids(_PerImageDeltas):
    """Per training image a bilateral grid of 3x4 affine colour transforms [12, L, H, W]: each
    pixel's transform is read (trilinearly) at its position and its brightness, so shadows, sky
    and lit surfaces of one photo can change colour differently. Starts as the identity
    everywhere, and, as `Exposure`, the grids' mean over the images is pinned to the identity.
    Bilateral Guided Radiance Field Processing (Wang et al., SIGGRAPH 2024); gsplat's
    BilateralGrid has the same layout (x, y, luminance) and losses."""

    def __init__(self, num_views: int, device: torch.device, config: ExposureConfig) -> None:
        w, h, levels = config.grid
        self.eye = torch.eye(3, 4, device=device).reshape(12, 1, 1, 1)  # [12, 1, 1, 1]
        self.deltas = torch.nn.Parameter(torch.zeros(num_views, 12, levels, h, w, device=device))  # [V, 12, L, H, W]
        self.optimizer = torch.optim.Adam([self.deltas], lr=config.grid_lr, eps=1e-15)
        self.tv_weight = config.grid_tv_weight

    def grid(self, index: int) -> torch.Tensor:
        """[12, L, H, W] image `index`'s grid of transforms (mean over images = identity)."""
        return self.eye + self.deltas[index] - self.deltas.mean(0)

    def transforms(self, image: torch.Tensor, index: int) -> torch.Tensor:
        """image [H, W, 3] -> [H, W, 3, 4] each pixel's transform, read at (x, y, brightness)."""
        return slice_grid(self.grid(index).to(image.dtype), image)

    def apply(self, image: torch.Tensor, index: int, alpha: torch.Tensor | None = None,
              background: tuple[float, float, float] | None = None) -> torch.Tensor:
        """As Exposure.apply, with each pixel's own transform."""
        a = self.transforms(image, index)  # [H, W, 3, 4]
        return _over_background(image, alpha, background, lambda c: (a[..., :3] @ c[..., None])[..., 0], a[..., 3])

    def loss(self, index: int) -> torch.Tensor:
        """Total variation of image `index`'s grid: mean squared step between neighbouring cells."""
        g = self.deltas[index]  # [12, L, H, W]
        tv = sum(torch.diff(g, dim=d).square().mean() for d in (1, 2, 3) if g.shape[d] > 1)
        return self.tv_weight * tv

    def step(self, progress: float, config: ExposureConfig) -> None:
        warm = min(1.0, 0.01 + 0.99 * progress / 0.03)
        self.optimizer.param_groups[0]["lr"] = warm * exp_decay(config.grid_lr, 0.01 * config.grid_lr, progress)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def slice_grid(grid: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """grid [12, L, Gh, Gw], image [H, W, 3] -> [H, W, 3, 4]: the grid read trilinearly at each
    pixel's (x, y, brightness), the corners of the image at the grid's corner cells."""
    h, w = image.shape[:2]
    ys = torch.linspace(-1.0, 1.0, h, device=image.device, dtype=image.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=image.device, dtype=image.dtype)
    # Brightness guides the lookup; it is the render's, without a gradient through the lookup.
    gray = image.detach() @ torch.tensor([0.299, 0.587, 0.114], device=image.device, dtype=image.dtype)
    coords = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), gray.clamp(0, 1) * 2 - 1], dim=-1)
    out = F.grid_sample(grid[None], coords[None, None], mode="bilinear", align_corners=True)  # [1, 12, 1, h, w]
    return out[0, :, 0].permute(1, 2, 0).reshape(h, w, 3, 4)


def make_appearance(num_views: int, device: torch.device, config: ExposureConfig):
    """The per-image colour model the config asks for: Exposure (affine) or BilateralGrids."""
    if config.model == "bilateral":
        return BilateralGrids(num_views, device, config)
    if config.model != "affine":
        raise ValueError(f"exposure model must be 'affine' or 'bilateral', got {config.model!r}")
    return Exposure(num_views, device)

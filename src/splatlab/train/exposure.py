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
from typing import Optional

import torch

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


class Exposure:
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
        if alpha is None:
            return image @ e[:, :3] + e[:, 3]
        bg = torch.as_tensor(background, dtype=image.dtype, device=image.device)
        behind = (1 - alpha) * bg  # [H, W, 3]
        return (image - behind) @ e[:, :3] + alpha * e[:, 3] + behind

    def step(self, progress: float, config: ExposureConfig) -> None:
        self.optimizer.param_groups[0]["lr"] = exp_decay(config.lr, config.lr_final, progress)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {"deltas": self.deltas.detach().cpu(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        with torch.no_grad():
            self.deltas.copy_(d["deltas"].to(self.deltas.device))
        self.optimizer.load_state_dict(d["optimizer"])

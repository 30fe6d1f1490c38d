"""Mip-Splatting's 3D smoothing filter (Yu et al., CVPR 2024): no Gaussian finer than the
training photos could resolve.

A Gaussian seen by the training cameras at most nu pixels per world unit (nu = focal length /
depth, the largest over the cameras that see it) carries no detail that the photos sampled
below their pixel spacing 1/nu. Nothing in the loss stops it from being thinner than that, and
such a Gaussian looks right at the training views' resolution but breaks up ("erodes") when a
held-out view comes closer or zooms in: the statue's telephoto photos of the torch and face.
The filter convolves every Gaussian with an isotropic Gaussian of variance

    s_f^2 = SMOOTHING_3D_VARIANCE / nu^2        (0.2 px^2 in screen space, as Mip-Splatting)

so the rendered covariance is Sigma + s_f^2 I, with its opacity scaled by
sqrt(det Sigma / det(Sigma + s_f^2 I)) so that a Gaussian keeps its integrated weight (the 3D
counterpart of `--render.antialiased`'s 2D filter). The trained parameters stay unfiltered; the
filter is applied to them before every training render and baked into what the run saves and
evaluates (the .ply snapshots, metrics, the viewer), so every reader of the model sees it as
trained. nu is recomputed every SMOOTHING_3D_EVERY steps and whenever densification changes the
number of Gaussians, from the training cameras at full training resolution.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

import torch

from ..camera import Camera
from ..constants import NEAR_PLANE, SMOOTHING_3D_EVERY, SMOOTHING_3D_MARGIN, SMOOTHING_3D_VARIANCE
from ..gaussians import Gaussians


@torch.no_grad()
def sampling_rates(means: torch.Tensor, cameras: Sequence[Camera]) -> torch.Tensor:
    """[N] the largest sampling rate (pixels per world unit: focal / depth) at which any camera
    sees each of `means` [N, 3], within SMOOTHING_3D_MARGIN of its frame; 0 for one no camera sees."""
    best = means.new_zeros(len(means))
    for camera in cameras:
        uvz = camera.project(means)  # [N, 3]
        u, v, z = uvz.unbind(-1)
        mu, mv = SMOOTHING_3D_MARGIN * camera.width, SMOOTHING_3D_MARGIN * camera.height
        seen = (z > NEAR_PLANE) & (u >= -mu) & (u <= camera.width + mu) & (v >= -mv) & (v <= camera.height + mv)
        rate = max(camera.fx, camera.fy) / z.clamp_min(NEAR_PLANE)
        best = torch.where(seen, torch.maximum(best, rate), best)
    return best


def filter_variances(means: torch.Tensor, cameras: Sequence[Camera]) -> torch.Tensor:
    """[N] s_f^2 for each Gaussian; one no camera sees gets the largest of the others (as
    Mip-Splatting does: it is free to be as coarse as the coarsest seen one)."""
    rates = sampling_rates(means, cameras)
    seen = rates > 0
    if not bool(seen.any()):
        return torch.zeros_like(rates)
    rates = torch.where(seen, rates, rates[seen].min())
    return SMOOTHING_3D_VARIANCE / (rates * rates)


def smoothed(gaussians: Gaussians, variances: torch.Tensor) -> Gaussians:
    """The Gaussians convolved with isotropic Gaussians of `variances` [N]: scales
    sqrt(s^2 + s_f^2), opacity x sqrt(prod s^2 / prod (s^2 + s_f^2)). Differentiable in the
    parameters (the variances are constants)."""
    var = torch.exp(2.0 * gaussians.log_scales)  # [N, 3]
    var_f = var + variances.to(var)[:, None]  # [N, 3]
    log_scales = 0.5 * torch.log(var_f)
    log_keep = 0.5 * (torch.log(var) - torch.log(var_f)).sum(-1)  # [N] log of the opacity factor, <= 0
    # opacity p * keep in logit space: log(p keep) - log(1 - p keep), with log p = logsigmoid(l)
    log_p = torch.nn.functional.logsigmoid(gaussians.logit_opacities) + log_keep
    logits = log_p - torch.log1p(-torch.exp(log_p).clamp(max=1.0 - 1e-7))
    return replace(gaussians, log_scales=log_scales, logit_opacities=logits)


class SmoothingFilter3D:
    """The filter of a run: its training cameras and the current per-Gaussian variances
    (kept in checkpoints, so that a resumed run filters exactly as an uninterrupted one)."""

    def __init__(self, cameras: Sequence[Camera]) -> None:
        self.cameras = list(cameras)
        self.variances: Optional[torch.Tensor] = None  # [N], None until the first refresh

    def refresh(self, gaussians: Gaussians, step: int) -> None:
        """Recompute the variances at every SMOOTHING_3D_EVERY-th step, and whenever the number
        of Gaussians changed (densification)."""
        if self.variances is None or len(self.variances) != len(gaussians) or step % SMOOTHING_3D_EVERY == 0:
            self.variances = filter_variances(gaussians.means.detach(), self.cameras)

    def apply(self, gaussians: Gaussians) -> Gaussians:
        """The filtered Gaussians (their variances recomputed first if their number changed)."""
        if self.variances is None or len(self.variances) != len(gaussians):
            self.variances = filter_variances(gaussians.means.detach(), self.cameras)
        return smoothed(gaussians, self.variances)

    def state_dict(self) -> dict:
        return {"variances": None if self.variances is None else self.variances.cpu()}

    def load_state_dict(self, d: dict) -> None:
        device = self.cameras[0].viewmat.device if self.cameras else None
        self.variances = None if d["variances"] is None else d["variances"].to(device)

"""Camera pose refinement: a small learned correction of each training photo's pose.

SfM poses are not exact (the statue's model reprojects its points with a mean error of 1.3 px,
under one shared camera for photos from 19 cameras). Gaussians fitted to photos whose poses
disagree by a pixel come out soft: each photo pulls an edge to its own place. As gsplat's
`--pose_opt` and nerfstudio's camera optimizer do, each training photo j gets a rigid
correction Δ_j = [R(ω_j) | s t_j] applied on the camera side, so that the photo is rendered by
the camera Δ_j V_j instead of V_j (ω_j a rotation vector in radians, t_j a translation in
units of s = the scene extent, both starting at zero).

Rendering the Gaussians with Δ V is the same as rendering them moved by M = V⁻¹ Δ V with V,
so the correction is applied to the Gaussians (means and rotations, in torch, differentiable)
and every backend renders them unchanged. Exact for positions, shapes and diffuse colour; the
view-dependent colour (SH degree >= 1) is read at directions turned by the correction's
rotation (the SH are not rotated with the Gaussians), which is of the order of a milliradian.

As for exposure, the corrections' mean over the photos is pinned to none: a common shift of all
cameras is a shift of the whole scene, which the Gaussians can make, and held-out views (whose
poses come from the same SfM, uncorrected) must see the scene where its training views put it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..camera import Camera
from ..gaussians import Gaussians
from ..geometry import quat_multiply, rotmat_to_quat
from .exposure import _PerImageDeltas
from .schedule import exp_decay


@dataclass
class PoseConfig:
    """Per-photo camera pose refinement (gsplat's --pose_opt)."""

    enabled: bool = False
    """Learn a small rigid correction of each training photo's camera pose."""
    lr: float = 1e-4
    """Initial learning rate of the corrections (radians; translation in scene extents)."""
    lr_final: float = 1e-6
    """Final learning rate; exponential decay over the run."""
    start: float = 0.1
    """Fraction of the schedule after which the poses start to move (the first steps fit a
    model too coarse to say where a photo's edges belong)."""


def skew(w: torch.Tensor) -> torch.Tensor:
    """[3] -> [3, 3] the matrix of w x (.)."""
    z = torch.zeros((), dtype=w.dtype, device=w.device)
    return torch.stack([torch.stack([z, -w[2], w[1]]), torch.stack([w[2], z, -w[0]]),
                        torch.stack([-w[1], w[0], z])])  # fmt: skip


class PoseCorrection(_PerImageDeltas):
    """The pose corrections of all training views [V, 6] (rotation vector, translation) and
    their Adam."""

    def __init__(self, num_views: int, device: torch.device, extent: float) -> None:
        self.extent = float(extent)
        self.deltas = torch.nn.Parameter(torch.zeros(num_views, 6, device=device))  # [V, 6]
        self.optimizer = torch.optim.Adam([self.deltas], lr=1e-4, eps=1e-15)

    def correction(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(R [3, 3], t [3]) view `index`'s correction, in its camera's frame (mean = none)."""
        d = self.deltas[index] - self.deltas.mean(0)  # [6]
        return torch.linalg.matrix_exp(skew(d[:3])), self.extent * d[3:]

    def apply(self, gaussians: Gaussians, index: int, camera: Camera) -> Gaussians:
        """The Gaussians moved by V⁻¹ Δ V: seen from `camera` as view `index`'s corrected camera
        sees the originals."""
        r_d, t_d = (x.to(gaussians.dtype) for x in self.correction(index))
        view = camera.viewmat.to(device=gaussians.means.device, dtype=gaussians.dtype)
        r_v, t_v = view[:3, :3], view[:3, 3]
        a = r_v.T @ r_d @ r_v  # [3, 3]
        b = r_v.T @ (r_d @ t_v + t_d - t_v)  # [3]
        quats = quat_multiply(rotmat_to_quat(a).expand_as(gaussians.quats), gaussians.quats)  # [N, 4]
        return replace(gaussians, means=gaussians.means @ a.T + b, quats=quats)

    def step_at(self, progress: float, config: PoseConfig) -> None:
        """One Adam step at the pose schedule; none before `config.start` of the run."""
        if progress < config.start:
            self.optimizer.zero_grad(set_to_none=True)
            return
        rel = (progress - config.start) / (1.0 - config.start)
        self.optimizer.param_groups[0]["lr"] = exp_decay(config.lr, config.lr_final, rel)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

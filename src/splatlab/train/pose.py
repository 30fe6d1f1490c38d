"""Camera pose refinement: a small learned correction of each training photo's pose.

SfM poses are not exact (the statue's model reprojects its points with a mean error of 1.3 px,
under one shared camera for photos from 19 cameras). Gaussians fitted to photos whose poses
disagree by a pixel come out soft: each photo pulls an edge to its own place. As gsplat's
`--pose_opt` and nerfstudio's camera optimizer do, each training photo j gets a rigid
correction, a turn R(ω_j) about its camera's centre c_j and a shift s t_j, both in world axes
(ω_j a rotation vector in radians, t_j in units of s = the scene extent, both starting at zero):

    M_j x = R(ω_j) (x - c_j) + c_j + s t_j

Rendering the Gaussians moved by M_j with the camera V_j is rendering them as they are with the
corrected camera V_j M_j, so the correction is applied to the Gaussians (means and
rotations, in torch, differentiable) and every backend renders them unchanged. Exact for
positions, shapes and diffuse colour; the
view-dependent colour (SH degree >= 1) is read at directions turned by the correction's
rotation (the SH are not rotated with the Gaussians), which is of the order of a milliradian.

As for exposure, the corrections' mean over the photos is pinned to none: the same turn and
shift of every camera is a motion of the whole scene, which the held-out views (whose poses come
from the same SfM, uncorrected) would not follow. That is why the corrections live in world
axes: the mean of corrections written in each camera's own axes is not a motion of the scene,
and pinning it let the scene drift away from the held-out cameras (measured: -1 dB on the
statue's held-out views).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..camera import Camera
from ..gaussians import Gaussians
from ..geometry import quat_multiply, rotmat_to_quat
from .exposure import _PerImageDeltas


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
        """(R [3, 3], t [3]) view `index`'s turn about its camera centre and shift, world axes
        (mean over the views = none)."""
        d = self.deltas[index] - self.deltas.mean(0)  # [6]
        return torch.linalg.matrix_exp(skew(d[:3])), self.extent * d[3:]

    def apply(self, gaussians: Gaussians, index: int, camera: Camera) -> Gaussians:
        """The Gaussians moved by M: seen from `camera` as view `index`'s corrected camera
        (camera V M) sees the originals."""
        rot, shift = (x.to(gaussians.dtype) for x in self.correction(index))
        centre = camera.position.to(device=gaussians.means.device, dtype=gaussians.dtype)  # [3]
        quats = quat_multiply(rotmat_to_quat(rot).expand_as(gaussians.quats), gaussians.quats)  # [N, 4]
        means = (gaussians.means - centre) @ rot.T + centre + shift  # [N, 3]
        return replace(gaussians, means=means, quats=quats)

    def corrected_camera(self, index: int, camera: Camera) -> Camera:
        """View `index`'s camera with its correction: V M."""
        rot, shift = (x.detach().double().cpu() for x in self.correction(index))
        centre = camera.position.double().cpu()
        move = torch.eye(4, dtype=torch.float64)  # [4, 4] M
        move[:3, :3] = rot
        move[:3, 3] = centre - rot @ centre + shift
        return replace(camera, viewmat=camera.viewmat.double().cpu() @ move)

    def step_at(self, progress: float, config: PoseConfig) -> None:
        """One Adam step, its learning rate decaying from `config.start` of the run (the step
        only takes the corrections from then on: train.step.train_step)."""
        self.step((progress - config.start) / (1.0 - config.start), config)

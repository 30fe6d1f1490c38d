"""Camera paths for rendering videos: an orbit fitted to the capture, or a smooth path through it."""

from __future__ import annotations

import math
import statistics
from typing import Sequence

import torch

from .camera import Camera
from .gaussians import Gaussians
from .geometry import quat_to_rotmat, rotmat_to_quat, slerp, up_from_cameras


def look_at_point(cameras: Sequence[Camera]) -> torch.Tensor:
    """[3] the point closest (least squares) to all optical axes: what an orbit capture circles."""
    a = torch.zeros(3, 3, dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.float64)
    for cam in cameras:
        c2w = cam.c2w.double()
        d = c2w[:3, 2]  # +z: viewing direction in the OpenCV convention
        p = c2w[:3, 3]
        proj = torch.eye(3, dtype=torch.float64) - torch.outer(d, d)
        a += proj
        b += proj @ p
    if torch.linalg.matrix_rank(a) < 3:  # parallel axes (forward-facing capture)
        c2w = cameras[0].c2w.double()
        return c2w[:3, 3] + c2w[:3, 2]
    return torch.linalg.solve(a, b)


def orbit_from_cameras(cameras: Sequence[Camera], num_frames: int = 120) -> list[Camera]:
    """A circle around the capture's look-at point, at the cameras' mean height and distance,
    around their mean 'up' direction, with the first camera's image size and the cameras'
    median horizontal field of view (a photo collection mixes focal lengths: its first photo
    may be a telephoto that frames only part of what the others show)."""
    if not cameras:
        raise ValueError("orbit_from_cameras needs at least one camera")
    target = look_at_point(cameras)
    up = up_from_cameras([c.c2w for c in cameras])  # level, whatever the cameras' pitch
    offsets = torch.stack([c.position.double() - target for c in cameras])  # [N, 3]
    height = (offsets @ up).mean()
    radial = offsets - (offsets @ up)[:, None] * up
    radius = radial.norm(dim=1).mean().clamp_min(1e-6)
    e1 = radial[0] / radial[0].norm().clamp_min(1e-12)
    e2 = torch.linalg.cross(up, e1)
    ref = cameras[0]
    fov_x = statistics.median(2 * math.atan(0.5 * c.width / c.fx) for c in cameras)  # radians
    frames = []
    for i in range(num_frames):
        t = 2 * math.pi * i / num_frames
        eye = target + height * up + radius * (math.cos(t) * e1 + math.sin(t) * e2)
        frames.append(Camera.look_at(eye.tolist(), target.tolist(), up.tolist(), fov_x=fov_x,
                                     width=ref.width, height=ref.height, name=f"orbit_{i:04d}"))
    return frames


def orbit_around_gaussians(
    gaussians: Gaussians, num_frames: int = 120, width: int = 512, height: int = 512, up=(0.0, 0.0, 1.0)
) -> list[Camera]:
    """An orbit around the model's robust centre when no capture cameras are known."""
    means = gaussians.means.detach().double()
    weights = gaussians.opacities.detach().double()
    keep = weights > 0.1 if (weights > 0.1).sum() > 10 else torch.ones_like(weights, dtype=torch.bool)
    centre = means[keep].median(0).values
    spread = (means[keep] - centre).norm(dim=1).quantile(0.9).item() if keep.sum() > 1 else 1.0
    up_t = torch.tensor(up, dtype=torch.float64)
    side = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    if abs(float(side @ up_t)) > 0.9:
        side = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    e1 = side - (side @ up_t) * up_t
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(up_t, e1)
    radius = 2.5 * max(spread, 1e-3)
    frames = []
    for i in range(num_frames):
        t = 2 * math.pi * i / num_frames
        eye = centre + 0.4 * radius * up_t + radius * (math.cos(t) * e1 + math.sin(t) * e2)
        frames.append(Camera.look_at(eye.tolist(), centre.tolist(), up, fov_x=math.radians(50),
                                     width=width, height=height, name=f"orbit_{i:04d}"))
    return frames


def interpolate_cameras(cameras: Sequence[Camera], frames_per_segment: int = 10) -> list[Camera]:
    """A path through the cameras in order: positions linear, rotations slerped."""
    if len(cameras) < 2:
        return list(cameras)
    out = []
    for a, b in zip(cameras[:-1], cameras[1:]):
        ca, cb = a.c2w.double(), b.c2w.double()
        qa, qb = rotmat_to_quat(ca[:3, :3]), rotmat_to_quat(cb[:3, :3])
        for k in range(frames_per_segment):
            t = k / frames_per_segment
            c2w = torch.eye(4, dtype=torch.float64)
            c2w[:3, :3] = quat_to_rotmat(slerp(qa, qb, t)[None])[0]
            c2w[:3, 3] = (1 - t) * ca[:3, 3] + t * cb[:3, 3]
            out.append(Camera(a.fx, a.fy, a.cx, a.cy, torch.linalg.inv(c2w), a.width, a.height,
                              f"path_{len(out):04d}"))
    last = cameras[-1]
    out.append(Camera(last.fx, last.fy, last.cx, last.cy, last.viewmat, last.width, last.height,
                      f"path_{len(out):04d}"))
    return out

"""Geometry shared by the renderer, the trainer, the viewer and the camera paths.

Quaternions are (w, x, y, z) and need not be normalised on input. Rotation matrices act on
column vectors. Nothing here is specific to one backend; the kernels re-implement the same
formulas inline and are tested against these.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """[N, 4] quaternions (w, x, y, z), any norm -> [N, 3, 3] rotation matrices."""
    # Components made contiguous first: elementwise ops on stride-4 views are several x slower.
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).T.contiguous()  # 4 x [N]
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(-1, 3, 3)


def quat_scale_to_covar(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Sigma = R S S^T R^T. quats [N, 4], scales [N, 3] (standard deviations) -> [N, 3, 3]."""
    m = quat_to_rotmat(quats) * scales.unsqueeze(-2)  # [N, 3, 3] = R @ diag(s)
    return m @ m.transpose(-1, -2)


def rotmat_to_quat(r: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] rotation matrices -> [..., 4] unit quaternions (w, x, y, z), w >= 0.

    Shepperd's method: pick the largest of (trace, diagonal) to divide by, so that no branch
    divides by a small number.
    """
    r = r.to(torch.float64) if r.dtype not in (torch.float32, torch.float64) else r
    m00, m01, m02 = r[..., 0, 0], r[..., 0, 1], r[..., 0, 2]
    m10, m11, m12 = r[..., 1, 0], r[..., 1, 1], r[..., 1, 2]
    m20, m21, m22 = r[..., 2, 0], r[..., 2, 1], r[..., 2, 2]
    cands = torch.stack([
        torch.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
        torch.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
        torch.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
    ], -2)  # [..., 4, 4]: row k is 4 q_k q (unnormalised)  # fmt: skip
    diag = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = diag.argmax(-1, keepdim=True)  # [..., 1]
    q = torch.take_along_dim(cands, best[..., None].expand(*best.shape, 4), dim=-2).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b of [..., 4] (w, x, y, z) quaternions (rotation b, then a)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], -1)  # fmt: skip


def slerp(q0: torch.Tensor, q1: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical linear interpolation between unit quaternions [4] at t in [0, 1]."""
    dot = float(q0 @ q1)
    if dot < 0:  # the shorter way round
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: linear is exact enough and avoids 0/0
        q = q0 + t * (q1 - q0)
        return q / q.norm()
    theta = math.acos(dot)
    return (math.sin((1 - t) * theta) * q0 + math.sin(t * theta) * q1) / math.sin(theta)


# ---- orientation of a capture ----------------------------------------------------------------


def up_from_cameras(c2ws: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """[3] unit "up" direction of a capture from its OpenCV camera->world matrices [N, 4, 4].

    People hold cameras level: little roll, any pitch. Each camera's right axis (+x) is then
    horizontal, so up is the direction most orthogonal to all of them: the eigenvector of
    sum x x^T with the smallest eigenvalue, signed to agree with the cameras' up axes (-y).
    The mean of the up axes alone (nerfstudio's "up" orientation) tilts by the cameras'
    pitch when they all look up at a tall subject (23 degrees on the statue capture). When
    the right axes do not span a plane (all cameras facing one way), that mean is used,
    with its component along the right axes removed. Falls back to +z for no cameras.
    """
    c2w = torch.stack(list(c2ws)) if not isinstance(c2ws, torch.Tensor) else c2ws
    z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    if c2w.numel() == 0:
        return z
    rights = c2w[:, :3, 0].double()  # [N, 3]
    mean_up = -c2w[:, :3, 1].double().mean(0)  # [3]
    values, vectors = torch.linalg.eigh(rights.T @ rights / len(rights))  # ascending
    if values[1] > 0.05 * values[2]:  # the right axes span a plane: its normal is up
        up = vectors[:, 0]
        up = up if float(up @ mean_up) >= 0 else -up
    else:
        right = vectors[:, 2]
        up = mean_up - (mean_up @ right) * right
    norm = up.norm()
    return z if norm < 1e-6 else up / norm


def rotation_to_z_up(up: torch.Tensor) -> torch.Tensor:
    """[3, 3] the smallest rotation taking the unit vector `up` to +z (Rodrigues' formula)."""
    up = up.double() / up.double().norm()
    z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    v = torch.linalg.cross(up, z)
    c = float(up @ z)
    if c < -1.0 + 1e-9:  # upside down: half a turn about x
        return torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    vx = torch.tensor([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + vx + vx @ vx / (1.0 + c)

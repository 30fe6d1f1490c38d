"""Triton kernels of projection and SH colour, forward and backward (one lane per Gaussian).

Same stages, conventions and masks as render/reference.py (the oracle) and the chain rule of
render/cpu/project.py's project_backward, vectorised over a block of Gaussians:

    project_forward    raw parameters -> means2d, conics, depths, opacities (with the
                       anti-aliasing compensation), colours, radii, and the inclusive tile
                       rectangle (x0, y0, x1, y1) of the tiles the Gaussian is binned into
    project_backward   gradients of the raw parameters from those of the projected quantities

Arithmetic runs in the data dtype (float32 or float64), as the reference's does, except the
conservative alpha >= 1/255 box, which is computed in float64 so that it stays conservative
for elongated splats. Camera values arrive as one small tensor of the data dtype (see
`camera_tensor`): Triton passes Python floats as float32, which would round float64 cameras.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._const import const

from ...constants import (
    ALPHA_MIN,
    FOV_CLAMP,
    LAMBDA_FLOOR,
    RADIUS_SIGMAS,
    SH_C0,
    SH_C1,
    SH_C2,
    SH_C3,
    TILE_SIZE,
)

_TILE = const(TILE_SIZE)
_LAMBDA_FLOOR = const(LAMBDA_FLOOR)
_RADIUS_SIGMAS = const(RADIUS_SIGMAS)
_INV_ALPHA_MIN = const(1.0 / ALPHA_MIN)
_C0 = const(SH_C0)
_C1 = const(SH_C1)
_C20, _C21, _C22, _C23, _C24 = (const(v) for v in SH_C2)
_C30, _C31, _C32, _C33, _C34, _C35, _C36 = (const(v) for v in SH_C3)

# Layout of the camera tensor (data dtype): world->camera rotation W (row major, 9), translation
# t (3), camera centre (3), fx, fy, cx, cy, near, far, eps2d, then the Jacobian's clamp limits.
CAM_SIZE = 26


def camera_tensor(camera, settings, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[26] camera values in the data dtype, rounded as the reference rounds them
    (viewmat.to(means) and camera.position.to(means))."""
    viewmat = camera.viewmat.detach().to(dtype).double().cpu()
    campos = camera.position.detach().to(dtype).double().cpu()
    fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
    values = viewmat[:3, :3].reshape(-1).tolist() + viewmat[:3, 3].tolist() + campos.tolist() + [
        fx, fy, cx, cy, float(settings.near_plane), float(settings.far_plane), float(settings.eps2d),
        FOV_CLAMP * (camera.width - cx) / fx, FOV_CLAMP * cx / fx,
        FOV_CLAMP * (camera.height - cy) / fy, FOV_CLAMP * cy / fy,
    ]  # fmt: skip
    assert len(values) == CAM_SIZE
    return torch.tensor(values, dtype=dtype, device=device)


# ---- small helpers (inlined) ------------------------------------------------------------------


@triton.jit
def _rotmat(w, x, y, z):
    """Rotation matrix of a unit quaternion (w, x, y, z), row major, as 9 values."""
    return (
        1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y),
        2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x),
        2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y),
    )  # fmt: skip


@triton.jit
def _sh_basis(k: tl.constexpr, x, y, z):
    """The k-th real SH basis function (1 <= k < 16) at unit direction (x, y, z) (sh.py)."""
    if k == 1:
        b = -_C1 * y
    elif k == 2:
        b = _C1 * z
    elif k == 3:
        b = -_C1 * x
    elif k == 4:
        b = _C20 * x * y
    elif k == 5:
        b = _C21 * y * z
    elif k == 6:
        b = _C22 * (2.0 * z * z - x * x - y * y)
    elif k == 7:
        b = _C23 * x * z
    elif k == 8:
        b = _C24 * (x * x - y * y)
    elif k == 9:
        b = _C30 * y * (3.0 * x * x - y * y)
    elif k == 10:
        b = _C31 * x * y * z
    elif k == 11:
        b = _C32 * y * (4.0 * z * z - x * x - y * y)
    elif k == 12:
        b = _C33 * z * (2.0 * z * z - 3.0 * x * x - 3.0 * y * y)
    elif k == 13:
        b = _C34 * x * (4.0 * z * z - x * x - y * y)
    elif k == 14:
        b = _C35 * z * (x * x - y * y)
    else:
        b = _C36 * x * (x * x - 3.0 * y * y)
    return b


@triton.jit
def _sh_basis_grad(k: tl.constexpr, x, y, z):
    """Gradient of the k-th basis function w.r.t. (x, y, z), treated as independent."""
    zero = x * 0.0
    if k == 1:
        gx, gy, gz = zero, zero - _C1, zero
    elif k == 2:
        gx, gy, gz = zero, zero, zero + _C1
    elif k == 3:
        gx, gy, gz = zero - _C1, zero, zero
    elif k == 4:
        gx, gy, gz = _C20 * y, _C20 * x, zero
    elif k == 5:
        gx, gy, gz = zero, _C21 * z, _C21 * y
    elif k == 6:
        gx, gy, gz = -2.0 * _C22 * x, -2.0 * _C22 * y, 4.0 * _C22 * z
    elif k == 7:
        gx, gy, gz = _C23 * z, zero, _C23 * x
    elif k == 8:
        gx, gy, gz = 2.0 * _C24 * x, -2.0 * _C24 * y, zero
    elif k == 9:
        gx, gy, gz = 6.0 * _C30 * x * y, _C30 * (3.0 * x * x - 3.0 * y * y), zero
    elif k == 10:
        gx, gy, gz = _C31 * y * z, _C31 * x * z, _C31 * x * y
    elif k == 11:
        gx, gy, gz = -2.0 * _C32 * x * y, _C32 * (4.0 * z * z - x * x - 3.0 * y * y), 8.0 * _C32 * y * z
    elif k == 12:
        gx, gy, gz = -6.0 * _C33 * x * z, -6.0 * _C33 * y * z, _C33 * (6.0 * z * z - 3.0 * x * x - 3.0 * y * y)
    elif k == 13:
        gx, gy, gz = _C34 * (4.0 * z * z - 3.0 * x * x - y * y), -2.0 * _C34 * x * y, 8.0 * _C34 * x * z
    elif k == 14:
        gx, gy, gz = 2.0 * _C35 * x * z, -2.0 * _C35 * y * z, _C35 * (x * x - y * y)
    else:
        gx, gy, gz = _C36 * (3.0 * x * x - 3.0 * y * y), -6.0 * _C36 * x * y, zero
    return gx, gy, gz


@triton.jit
def _sqrt_rn(x):
    """Correctly rounded square root (tl.sqrt may be approximate in float32): radii are
    ceil(3 sqrt(lambda)), so a last-bit difference can change them."""
    if x.dtype == tl.float32:
        r = tl.sqrt_rn(x)
    else:
        r = tl.sqrt(x)
    return r


@triton.jit
def _view_dir(mx, my, mz, cam_ptr):
    """Unit direction from the camera centre to the mean (F.normalize, eps 1e-12) and its norm."""
    dx = mx - tl.load(cam_ptr + 12)
    dy = my - tl.load(cam_ptr + 13)
    dz = mz - tl.load(cam_ptr + 14)
    dn = tl.sqrt(dx * dx + dy * dy + dz * dz)
    den = tl.maximum(dn, 1e-12)
    return dx / den, dy / den, dz / den, dn


@triton.jit
def _clamped_ratio(u, lo, hi):
    """clamp(u, lo, hi) and whether u lies in [lo, hi] (where torch.clamp passes the gradient)."""
    return tl.minimum(tl.maximum(u, lo), hi), (u >= lo) & (u <= hi)


@triton.jit
def _alpha_tile_box(mx, my, ca, cb, cc, op, x0, y0, x1, y1):
    """Shrink the tile rectangle (x0, y0, x1, y1) to the tiles that the pixel box where
    o * exp(-q/2) >= 1/255 touches (q the conic form), with a generous margin, computed in
    float64; the rectangle becomes empty (x1 < x0) when alpha < 1/255 everywhere. The
    compositing still tests every pixel exactly: the box only saves work (as the cpu backend)."""
    a = ca.to(tl.float64)
    b = cb.to(tl.float64)
    c = cc.to(tl.float64)
    o = op.to(tl.float64)
    det = a * c - b * b
    well_formed = (a > 0.0) & (c > 0.0) & (det > 0.0) & (det < 1e300)
    det = tl.where(well_formed, det, 1.0)
    # o exp(-q/2) >= 1/255  <=>  q <= 2 log(255 o); the ellipse q <= k reaches sqrt(k Sigma_xx).
    k = 2.0 * (tl.maximum(tl.log(tl.maximum(o * _INV_ALPHA_MIN, 1e-30)), 0.0) + 0.05)
    hx = tl.sqrt(k * tl.abs(c) / det) * 1.01 + 0.01
    hy = tl.sqrt(k * tl.abs(a) / det) * 1.01 + 0.01
    fmx = mx.to(tl.float64)
    fmy = my.to(tl.float64)
    bx0 = tl.ceil(fmx - hx - 0.5)
    bx1 = tl.floor(fmx + hx - 0.5)
    by0 = tl.ceil(fmy - hy - 0.5)
    by1 = tl.floor(fmy + hy - 0.5)
    finite = (tl.abs(bx0) < 1e9) & (tl.abs(bx1) < 1e9) & (tl.abs(by0) < 1e9) & (tl.abs(by1) < 1e9)
    use = well_formed & finite
    tx0 = tl.floor(tl.maximum(bx0, -1.0) / _TILE).to(tl.int32)
    tx1 = tl.floor(tl.maximum(bx1, -1.0) / _TILE).to(tl.int32)
    ty0 = tl.floor(tl.maximum(by0, -1.0) / _TILE).to(tl.int32)
    ty1 = tl.floor(tl.maximum(by1, -1.0) / _TILE).to(tl.int32)
    nx0 = tl.where(use, tl.maximum(x0, tx0), x0)
    nx1 = tl.where(use, tl.minimum(x1, tx1), x1)
    ny0 = tl.where(use, tl.maximum(y0, ty0), y0)
    ny1 = tl.where(use, tl.minimum(y1, ty1), y1)
    faint = o * _INV_ALPHA_MIN <= 1.0 - 1e-3  # alpha <= o < 1/255 everywhere
    empty = faint | (nx0 > nx1) | (ny0 > ny1)
    nx1 = tl.where(empty, nx0 - 1, nx1)
    ny1 = tl.where(empty, ny0 - 1, ny1)
    return nx0, ny0, nx1, ny1


# ---- the stages shared by forward and backward ----------------------------------------------------


@triton.jit
def _camera_point(i, m, means_ptr, cam_ptr):
    """The means (world) and their camera-space points p = W m + t, for a block of Gaussians."""
    mx = tl.load(means_ptr + 3 * i, mask=m, other=0.0)
    my = tl.load(means_ptr + 3 * i + 1, mask=m, other=0.0)
    mz = tl.load(means_ptr + 3 * i + 2, mask=m, other=1.0)
    px = tl.load(cam_ptr + 0) * mx + tl.load(cam_ptr + 1) * my + tl.load(cam_ptr + 2) * mz + tl.load(cam_ptr + 9)
    py = tl.load(cam_ptr + 3) * mx + tl.load(cam_ptr + 4) * my + tl.load(cam_ptr + 5) * mz + tl.load(cam_ptr + 10)
    pz = tl.load(cam_ptr + 6) * mx + tl.load(cam_ptr + 7) * my + tl.load(cam_ptr + 8) * mz + tl.load(cam_ptr + 11)
    return mx, my, mz, px, py, pz


@triton.jit
def _jacobian_w(px, py, pz, cam_ptr):
    """Near/far culling, the clamped point of the projection's Jacobian J (3DGS: 1.3x the field
    of view), and A = J W (2 x 3). Culled Gaussians get z = 1 so that nothing divides by zero."""
    in_range = (pz > tl.load(cam_ptr + 19)) & (pz < tl.load(cam_ptr + 20))
    z = tl.where(in_range, pz, 1.0)
    cxr, free_x = _clamped_ratio(px / z, -tl.load(cam_ptr + 23), tl.load(cam_ptr + 22))
    cyr, free_y = _clamped_ratio(py / z, -tl.load(cam_ptr + 25), tl.load(cam_ptr + 24))
    fx, fy = tl.load(cam_ptr + 15), tl.load(cam_ptr + 16)
    j00 = fx / z
    j02 = -fx * (z * cxr) / (z * z)
    j11 = fy / z
    j12 = -fy * (z * cyr) / (z * z)
    a00 = j00 * tl.load(cam_ptr + 0) + j02 * tl.load(cam_ptr + 6)
    a01 = j00 * tl.load(cam_ptr + 1) + j02 * tl.load(cam_ptr + 7)
    a02 = j00 * tl.load(cam_ptr + 2) + j02 * tl.load(cam_ptr + 8)
    a10 = j11 * tl.load(cam_ptr + 3) + j12 * tl.load(cam_ptr + 6)
    a11 = j11 * tl.load(cam_ptr + 4) + j12 * tl.load(cam_ptr + 7)
    a12 = j11 * tl.load(cam_ptr + 5) + j12 * tl.load(cam_ptr + 8)
    return in_range, z, cxr, cyr, free_x, free_y, a00, a01, a02, a10, a11, a12


@triton.jit
def _rotation_and_scales(i, m, quats_ptr, log_scales_ptr):
    """R of the normalised quaternion (F.normalize, eps 1e-12), row major, and exp(log_scales)."""
    qw = tl.load(quats_ptr + 4 * i, mask=m, other=1.0)
    qx = tl.load(quats_ptr + 4 * i + 1, mask=m, other=0.0)
    qy = tl.load(quats_ptr + 4 * i + 2, mask=m, other=0.0)
    qz = tl.load(quats_ptr + 4 * i + 3, mask=m, other=0.0)
    qden = tl.maximum(tl.sqrt(qw * qw + qx * qx + qy * qy + qz * qz), 1e-12)
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = _rotmat(qw / qden, qx / qden, qy / qden, qz / qden)
    s0 = tl.exp(tl.load(log_scales_ptr + 3 * i, mask=m, other=0.0))
    s1 = tl.exp(tl.load(log_scales_ptr + 3 * i + 1, mask=m, other=0.0))
    s2 = tl.exp(tl.load(log_scales_ptr + 3 * i + 2, mask=m, other=0.0))
    return r00, r01, r02, r10, r11, r12, r20, r21, r22, s0, s1, s2


@triton.jit
def _cov2d(a00, a01, a02, a10, a11, a12, r00, r01, r02, r10, r11, r12, r20, r21, r22, s0, s1, s2):
    """V = A R (2 x 3) and the 2D covariance U U^T (U = V diag(s)) before the low-pass filter,
    as (a, b, c) = ([0,0], [0,1], [1,1])."""
    v00 = a00 * r00 + a01 * r10 + a02 * r20
    v01 = a00 * r01 + a01 * r11 + a02 * r21
    v02 = a00 * r02 + a01 * r12 + a02 * r22
    v10 = a10 * r00 + a11 * r10 + a12 * r20
    v11 = a10 * r01 + a11 * r11 + a12 * r21
    v12 = a10 * r02 + a11 * r12 + a12 * r22
    u00, u01, u02 = v00 * s0, v01 * s1, v02 * s2
    u10, u11, u12 = v10 * s0, v11 * s1, v12 * s2
    ca = u00 * u00 + u01 * u01 + u02 * u02
    cb = u00 * u10 + u01 * u11 + u02 * u12
    cc = u10 * u10 + u11 * u11 + u12 * u12
    return v00, v01, v02, v10, v11, v12, ca, cb, cc


@triton.jit
def _sh_color(i, m, ux, uy, uz, sh0_ptr, shN_ptr, sh_stride, NUM_BASES: tl.constexpr):
    """sum_k basis_k(u) coeff_k per channel (before the +0.5 and the clamp), u the view direction."""
    c0 = tl.load(sh0_ptr + 3 * i, mask=m, other=0.0) * _C0
    c1 = tl.load(sh0_ptr + 3 * i + 1, mask=m, other=0.0) * _C0
    c2 = tl.load(sh0_ptr + 3 * i + 2, mask=m, other=0.0) * _C0
    for k in tl.static_range(1, NUM_BASES):
        bk = _sh_basis(k, ux, uy, uz)
        base = shN_ptr + i * sh_stride + 3 * (k - 1)
        c0 += bk * tl.load(base, mask=m, other=0.0)
        c1 += bk * tl.load(base + 1, mask=m, other=0.0)
        c2 += bk * tl.load(base + 2, mask=m, other=0.0)
    return c0, c1, c2


@triton.jit
def _tile_rect(m2x, m2y, radius, tiles_x, tiles_y):
    """Inclusive tile range of the square [mean - r, mean + r], clipped to the grid
    (reference.tile_rect): x0 > x1 or y0 > y1 when it touches no tile."""
    x0 = tl.minimum(tl.maximum(tl.floor((m2x - radius) / _TILE), 0.0), tiles_x * 1.0).to(tl.int32)
    x1 = tl.minimum(tl.maximum(tl.floor((m2x + radius) / _TILE), -1.0), tiles_x - 1.0).to(tl.int32)
    y0 = tl.minimum(tl.maximum(tl.floor((m2y - radius) / _TILE), 0.0), tiles_y * 1.0).to(tl.int32)
    y1 = tl.minimum(tl.maximum(tl.floor((m2y + radius) / _TILE), -1.0), tiles_y - 1.0).to(tl.int32)
    return x0, y0, x1, y1


# ---- forward ----------------------------------------------------------------------------------


@triton.jit
def project_forward_kernel(
    means_ptr, quats_ptr, log_scales_ptr, logit_ptr, sh0_ptr, shN_ptr, cam_ptr,
    means2d_ptr, conics_ptr, depths_ptr, opac_ptr, colors_ptr, radii_ptr, rect_ptr,
    n, sh_stride, width, height, tiles_x, tiles_y,
    NUM_BASES: tl.constexpr, ANTIALIASED: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """EWA projection + SH colour of BLOCK Gaussians (reference.project_gaussians).

    Inputs means [N, 3], quats [N, 4], log_scales [N, 3], logits [N], sh0 [N, 1, 3], shN [N, K-1, 3]
    (sh_stride = 3 (K - 1)), cam [26]. Outputs means2d [N, 2], conics [N, 3], depths [N],
    opacities [N], colors [N, 3], radii [N] int32 (0 = not rendered), rect [N, 4] int32.
    """
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    mx, my, mz, px, py, pz = _camera_point(i, m, means_ptr, cam_ptr)
    in_range, z, _cxr, _cyr, _fx, _fy, a00, a01, a02, a10, a11, a12 = _jacobian_w(px, py, pz, cam_ptr)
    r00, r01, r02, r10, r11, r12, r20, r21, r22, s0, s1, s2 = _rotation_and_scales(i, m, quats_ptr, log_scales_ptr)
    _v00, _v01, _v02, _v10, _v11, _v12, ca, cb, cc = _cov2d(
        a00, a01, a02, a10, a11, a12, r00, r01, r02, r10, r11, r12, r20, r21, r22, s0, s1, s2
    )
    det_raw = ca * cc - cb * cb
    eps2d = tl.load(cam_ptr + 21)
    ca += eps2d  # low-pass filter: every splat covers about a pixel
    cc += eps2d
    det = ca * cc - cb * cb
    opac = 1.0 / (1.0 + tl.exp(-tl.load(logit_ptr + i, mask=m, other=0.0)))
    if ANTIALIASED:  # Mip-Splatting's compensation
        opac = opac * tl.sqrt(tl.maximum(det_raw / tl.maximum(det, 1e-30), 0.0))
    valid = in_range & (det > 0.0)
    detv = tl.where(valid, det, 1.0)
    con_a, con_b, con_c = cc / detv, -cb / detv, ca / detv
    mid = 0.5 * (ca + cc)
    lambda_max = mid + _sqrt_rn(tl.maximum(mid * mid - detv, _LAMBDA_FLOOR))
    radius = tl.ceil(_sqrt_rn(lambda_max) * _RADIUS_SIGMAS)
    m2x = tl.load(cam_ptr + 15) * px / z + tl.load(cam_ptr + 17)
    m2y = tl.load(cam_ptr + 16) * py / z + tl.load(cam_ptr + 18)
    tl.store(means2d_ptr + 2 * i, m2x, mask=m)
    tl.store(means2d_ptr + 2 * i + 1, m2y, mask=m)
    tl.store(conics_ptr + 3 * i, con_a, mask=m)
    tl.store(conics_ptr + 3 * i + 1, con_b, mask=m)
    tl.store(conics_ptr + 3 * i + 2, con_c, mask=m)
    tl.store(depths_ptr + i, pz, mask=m)
    tl.store(opac_ptr + i, opac, mask=m)
    ux, uy, uz, _dn = _view_dir(mx, my, mz, cam_ptr)  # SH in world space, from the camera centre
    c0, c1, c2 = _sh_color(i, m, ux, uy, uz, sh0_ptr, shN_ptr, sh_stride, NUM_BASES)
    tl.store(colors_ptr + 3 * i, tl.maximum(c0 + 0.5, 0.0), mask=m)
    tl.store(colors_ptr + 3 * i + 1, tl.maximum(c1 + 0.5, 0.0), mask=m)
    tl.store(colors_ptr + 3 * i + 2, tl.maximum(c2 + 0.5, 0.0), mask=m)
    # tiles of the 3-sigma square, then only those that alpha >= 1/255 reaches
    x0, y0, x1, y1 = _tile_rect(m2x, m2y, radius, tiles_x, tiles_y)
    visible = valid & (x0 <= x1) & (y0 <= y1)
    tl.store(radii_ptr + i, tl.where(visible, radius.to(tl.int32), 0), mask=m)
    x0, y0, x1, y1 = _alpha_tile_box(m2x, m2y, con_a, con_b, con_c, opac, x0, y0, x1, y1)
    tl.store(rect_ptr + 4 * i, x0, mask=m)
    tl.store(rect_ptr + 4 * i + 1, y0, mask=m)
    tl.store(rect_ptr + 4 * i + 2, tl.where(visible, x1, x0 - 1), mask=m)
    tl.store(rect_ptr + 4 * i + 3, y1, mask=m)


# ---- backward ---------------------------------------------------------------------------------


@triton.jit
def _conic_and_opacity_backward(
    gA, gB, gC, g_op, logit, ca0, cb, cc0, eps2d, valid, ANTIALIASED: tl.constexpr,
):  # fmt: skip
    """Through conic = (c, -b, a) / det and opacity = sigmoid(logit) * compensation to the
    2D covariance entries (before the low-pass filter) and the logit."""
    ca = ca0 + eps2d
    cc = cc0 + eps2d
    det = ca * cc - cb * cb
    inv = 1.0 / tl.where(valid, det, 1.0)
    g_det = (-gA * cc + gB * cb - gC * ca) * inv * inv
    g_ca = tl.where(valid, gC * inv + g_det * cc, gC)
    g_cc = tl.where(valid, gA * inv + g_det * ca, gA)
    g_cb = tl.where(valid, -gB * inv - 2.0 * cb * g_det, -gB)
    sig = 1.0 / (1.0 + tl.exp(-logit))
    if ANTIALIASED:
        det_raw = ca0 * cc0 - cb * cb
        det_c = tl.maximum(det, 1e-30)
        ratio = det_raw / det_c
        comp = tl.sqrt(tl.maximum(ratio, 0.0))
        g_sig = g_op * comp
        g_ratio = tl.where(ratio > 0.0, g_op * sig * 0.5 / tl.where(ratio > 0.0, comp, 1.0), 0.0)
        g_det_raw = g_ratio / det_c
        g_det2 = tl.where(det >= 1e-30, -g_ratio * det_raw / (det_c * det_c), 0.0)
        g_ca += g_det2 * cc + g_det_raw * cc0
        g_cc += g_det2 * ca + g_det_raw * ca0
        g_cb += -2.0 * cb * (g_det2 + g_det_raw)
    else:
        g_sig = g_op
    return g_ca, g_cb, g_cc, g_sig * sig * (1.0 - sig)


@triton.jit
def _quat_backward(qw, qx, qy, qz, gr00, gr01, gr02, gr10, gr11, gr12, gr20, gr21, gr22):
    """From dL/dR (R the rotation of the normalised quaternion) to the raw quaternion."""
    qn = tl.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
    qden = tl.maximum(qn, 1e-12)
    nw, nx, ny, nz = qw / qden, qx / qden, qy / qden, qz / qden
    gnw = 2.0 * (-nz * gr01 + ny * gr02 + nz * gr10 - nx * gr12 - ny * gr20 + nx * gr21)
    gnx = 2.0 * (ny * gr01 + nz * gr02 + ny * gr10 - 2.0 * nx * gr11 - nw * gr12
                 + nz * gr20 + nw * gr21 - 2.0 * nx * gr22)  # fmt: skip
    gny = 2.0 * (-2.0 * ny * gr00 + nx * gr01 + nw * gr02 + nx * gr10 + nz * gr12
                 - nw * gr20 + nz * gr21 - 2.0 * ny * gr22)  # fmt: skip
    gnz = 2.0 * (-2.0 * nz * gr00 - nw * gr01 + nx * gr02 + nw * gr10 - 2.0 * nz * gr11
                 + ny * gr12 + nx * gr20 + ny * gr21)  # fmt: skip
    # normalize: q / max(|q|, eps) passes (g - n (n . g)) / |q| above eps, g / eps below
    big = qn > 1e-12
    dot = tl.where(big, nw * gnw + nx * gnx + ny * gny + nz * gnz, 0.0)
    return (gnw - nw * dot) / qden, (gnx - nx * dot) / qden, (gny - ny * dot) / qden, (gnz - nz * dot) / qden


@triton.jit
def _sh_backward(
    i, m, ux, uy, uz, dn, sh0_ptr, shN_ptr, v_colors_ptr, g_sh0_ptr, g_shN_ptr, sh_stride,
    NUM_BASES: tl.constexpr,
):  # fmt: skip
    """Gradients of the SH coefficients, and of the mean through the view direction."""
    r0, r1, r2 = _sh_color(i, m, ux, uy, uz, sh0_ptr, shN_ptr, sh_stride, NUM_BASES)  # the clamp's mask
    v0 = tl.where(r0 + 0.5 >= 0.0, tl.load(v_colors_ptr + 3 * i, mask=m, other=0.0), 0.0)
    v1 = tl.where(r1 + 0.5 >= 0.0, tl.load(v_colors_ptr + 3 * i + 1, mask=m, other=0.0), 0.0)
    v2 = tl.where(r2 + 0.5 >= 0.0, tl.load(v_colors_ptr + 3 * i + 2, mask=m, other=0.0), 0.0)
    tl.store(g_sh0_ptr + 3 * i, v0 * _C0, mask=m)
    tl.store(g_sh0_ptr + 3 * i + 1, v1 * _C0, mask=m)
    tl.store(g_sh0_ptr + 3 * i + 2, v2 * _C0, mask=m)
    gux = ux * 0.0
    guy = ux * 0.0
    guz = ux * 0.0
    for k in tl.static_range(1, NUM_BASES):
        bk = _sh_basis(k, ux, uy, uz)
        base = shN_ptr + i * sh_stride + 3 * (k - 1)
        gbase = g_shN_ptr + i * sh_stride + 3 * (k - 1)
        tl.store(gbase, bk * v0, mask=m)
        tl.store(gbase + 1, bk * v1, mask=m)
        tl.store(gbase + 2, bk * v2, mask=m)
        vk = (tl.load(base, mask=m, other=0.0) * v0 + tl.load(base + 1, mask=m, other=0.0) * v1
              + tl.load(base + 2, mask=m, other=0.0) * v2)  # fmt: skip
        bx, by, bz = _sh_basis_grad(k, ux, uy, uz)
        gux += vk * bx
        guy += vk * by
        guz += vk * bz
    # through the normalised view direction to the mean (as the 3DGS rasterizer does)
    big = dn > 1e-12
    dot = tl.where(big, ux * gux + uy * guy + uz * guz, 0.0)
    den = tl.maximum(dn, 1e-12)
    return (gux - ux * dot) / den, (guy - uy * dot) / den, (guz - uz * dot) / den


@triton.jit
def _cov2d_backward(
    i, m, g_ca, g_cb, g_cc, v00, v01, v02, v10, v11, v12, s0, s1, s2, g_log_scales_ptr,
):  # fmt: skip
    """cov2d = U U^T, U = V diag(s): stores dL/dlog_scales, returns dL/dV (2 x 3)."""
    u00, u01, u02 = v00 * s0, v01 * s1, v02 * s2
    u10, u11, u12 = v10 * s0, v11 * s1, v12 * s2
    # cov2d read as a = [0,0], b = [0,1], c = [1,1]: dL/dU = (G + G^T) U, G = [[g_a, g_b], [0, g_c]]
    gu00 = 2.0 * g_ca * u00 + g_cb * u10
    gu01 = 2.0 * g_ca * u01 + g_cb * u11
    gu02 = 2.0 * g_ca * u02 + g_cb * u12
    gu10 = g_cb * u00 + 2.0 * g_cc * u10
    gu11 = g_cb * u01 + 2.0 * g_cc * u11
    gu12 = g_cb * u02 + 2.0 * g_cc * u12
    tl.store(g_log_scales_ptr + 3 * i, (gu00 * v00 + gu10 * v10) * s0, mask=m)
    tl.store(g_log_scales_ptr + 3 * i + 1, (gu01 * v01 + gu11 * v11) * s1, mask=m)
    tl.store(g_log_scales_ptr + 3 * i + 2, (gu02 * v02 + gu12 * v12) * s2, mask=m)
    return gu00 * s0, gu01 * s1, gu02 * s2, gu10 * s0, gu11 * s1, gu12 * s2


@triton.jit
def _rotation_backward(
    i, m, quats_ptr, g_quats_ptr, gv00, gv01, gv02, gv10, gv11, gv12,
    a00, a01, a02, a10, a11, a12, r00, r01, r02, r10, r11, r12, r20, r21, r22,
):  # fmt: skip
    """V = A R: stores dL/dquats (through R), returns dL/dA = dL/dV R^T (2 x 3)."""
    qw = tl.load(quats_ptr + 4 * i, mask=m, other=1.0)
    qx = tl.load(quats_ptr + 4 * i + 1, mask=m, other=0.0)
    qy = tl.load(quats_ptr + 4 * i + 2, mask=m, other=0.0)
    qz = tl.load(quats_ptr + 4 * i + 3, mask=m, other=0.0)
    gqw, gqx, gqy, gqz = _quat_backward(  # dL/dR = A^T dL/dV
        qw, qx, qy, qz,
        a00 * gv00 + a10 * gv10, a00 * gv01 + a10 * gv11, a00 * gv02 + a10 * gv12,
        a01 * gv00 + a11 * gv10, a01 * gv01 + a11 * gv11, a01 * gv02 + a11 * gv12,
        a02 * gv00 + a12 * gv10, a02 * gv01 + a12 * gv11, a02 * gv02 + a12 * gv12,
    )  # fmt: skip
    tl.store(g_quats_ptr + 4 * i, gqw, mask=m)
    tl.store(g_quats_ptr + 4 * i + 1, gqx, mask=m)
    tl.store(g_quats_ptr + 4 * i + 2, gqy, mask=m)
    tl.store(g_quats_ptr + 4 * i + 3, gqz, mask=m)
    return (
        gv00 * r00 + gv01 * r01 + gv02 * r02, gv00 * r10 + gv01 * r11 + gv02 * r12,
        gv00 * r20 + gv01 * r21 + gv02 * r22, gv10 * r00 + gv11 * r01 + gv12 * r02,
        gv10 * r10 + gv11 * r11 + gv12 * r12, gv10 * r20 + gv11 * r21 + gv12 * r22,
    )  # fmt: skip


@triton.jit
def _point_backward(i, m, px, py, z, cxr, cyr, free_x, free_y, in_range, ga00, ga01, ga02, ga10, ga11, ga12,
                    v_means2d_ptr, v_depths_ptr, cam_ptr):  # fmt: skip
    """A = J W (only J's entries 00, 02, 11, 12 vary), means2d = (fx px / z + cx, fy py / z + cy)
    and depth = pz, back to the camera-space point, then through p = W m + t to the mean."""
    w00, w01, w02 = tl.load(cam_ptr + 0), tl.load(cam_ptr + 1), tl.load(cam_ptr + 2)
    w10, w11, w12 = tl.load(cam_ptr + 3), tl.load(cam_ptr + 4), tl.load(cam_ptr + 5)
    w20, w21, w22 = tl.load(cam_ptr + 6), tl.load(cam_ptr + 7), tl.load(cam_ptr + 8)
    fx, fy = tl.load(cam_ptr + 15), tl.load(cam_ptr + 16)
    gj00 = ga00 * w00 + ga01 * w01 + ga02 * w02
    gj02 = ga00 * w20 + ga01 * w21 + ga02 * w22
    gj11 = ga10 * w10 + ga11 * w11 + ga12 * w12
    gj12 = ga10 * w20 + ga11 * w21 + ga12 * w22
    zz2 = z * z
    tx, ty = z * cxr, z * cyr
    g_z = (-fx * gj00 - fy * gj11) / zz2 + 2.0 * (fx * tx * gj02 + fy * ty * gj12) / (zz2 * z)
    g_tx = -fx / zz2 * gj02
    g_ty = -fy / zz2 * gj12
    # tx = z * clamp(px / z): to px where inside the clamp, else to z (times the limit)
    g_px = tl.where(free_x, g_tx, 0.0)
    g_py = tl.where(free_y, g_ty, 0.0)
    g_z += tl.where(free_x, 0.0, g_tx * cxr) + tl.where(free_y, 0.0, g_ty * cyr)
    gm2x = tl.load(v_means2d_ptr + 2 * i, mask=m, other=0.0)
    gm2y = tl.load(v_means2d_ptr + 2 * i + 1, mask=m, other=0.0)
    g_px += gm2x * fx / z
    g_py += gm2y * fy / z
    g_z += -(gm2x * fx * px + gm2y * fy * py) / zz2
    g_pz = tl.where(in_range, g_z, 0.0) + tl.load(v_depths_ptr + i, mask=m, other=0.0)
    return (w00 * g_px + w10 * g_py + w20 * g_pz, w01 * g_px + w11 * g_py + w21 * g_pz,
            w02 * g_px + w12 * g_py + w22 * g_pz)  # fmt: skip


@triton.jit
def project_backward_kernel(
    means_ptr, quats_ptr, log_scales_ptr, logit_ptr, sh0_ptr, shN_ptr, cam_ptr,
    v_means2d_ptr, v_conics_ptr, v_depths_ptr, v_opac_ptr, v_colors_ptr,
    g_means_ptr, g_quats_ptr, g_log_scales_ptr, g_logit_ptr, g_sh0_ptr, g_shN_ptr,
    n, sh_stride,
    NUM_BASES: tl.constexpr, ANTIALIASED: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Gradients of the raw parameters from those of project_forward's outputs.

    Recomputes the forward, then the chain rule stage by stage (as render/cpu/project.py's
    project_backward): conic -> 2D covariance (and compensation) -> U = J W R S -> J, R, S ->
    camera-space point, quaternion, log-scales; SH colour -> coefficients and the view
    direction -> means. g_shN's coefficients above the degree used must be zero-initialised.
    """
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    mx, my, mz, px, py, pz = _camera_point(i, m, means_ptr, cam_ptr)
    in_range, z, cxr, cyr, free_x, free_y, a00, a01, a02, a10, a11, a12 = _jacobian_w(px, py, pz, cam_ptr)
    r00, r01, r02, r10, r11, r12, r20, r21, r22, s0, s1, s2 = _rotation_and_scales(i, m, quats_ptr, log_scales_ptr)
    v00, v01, v02, v10, v11, v12, ca0, cb, cc0 = _cov2d(
        a00, a01, a02, a10, a11, a12, r00, r01, r02, r10, r11, r12, r20, r21, r22, s0, s1, s2
    )
    eps2d = tl.load(cam_ptr + 21)
    valid = in_range & ((ca0 + eps2d) * (cc0 + eps2d) - cb * cb > 0.0)
    g_ca, g_cb, g_cc, g_logit = _conic_and_opacity_backward(
        tl.load(v_conics_ptr + 3 * i, mask=m, other=0.0), tl.load(v_conics_ptr + 3 * i + 1, mask=m, other=0.0),
        tl.load(v_conics_ptr + 3 * i + 2, mask=m, other=0.0), tl.load(v_opac_ptr + i, mask=m, other=0.0),
        tl.load(logit_ptr + i, mask=m, other=0.0), ca0, cb, cc0, eps2d, valid, ANTIALIASED,
    )  # fmt: skip
    tl.store(g_logit_ptr + i, g_logit, mask=m)
    gv00, gv01, gv02, gv10, gv11, gv12 = _cov2d_backward(
        i, m, g_ca, g_cb, g_cc, v00, v01, v02, v10, v11, v12, s0, s1, s2, g_log_scales_ptr
    )
    ga00, ga01, ga02, ga10, ga11, ga12 = _rotation_backward(
        i, m, quats_ptr, g_quats_ptr, gv00, gv01, gv02, gv10, gv11, gv12,
        a00, a01, a02, a10, a11, a12, r00, r01, r02, r10, r11, r12, r20, r21, r22,
    )  # fmt: skip
    gmx, gmy, gmz = _point_backward(i, m, px, py, z, cxr, cyr, free_x, free_y, in_range,
                                    ga00, ga01, ga02, ga10, ga11, ga12, v_means2d_ptr, v_depths_ptr, cam_ptr)  # fmt: skip
    ux, uy, uz, dn = _view_dir(mx, my, mz, cam_ptr)
    dmx, dmy, dmz = _sh_backward(
        i, m, ux, uy, uz, dn, sh0_ptr, shN_ptr, v_colors_ptr, g_sh0_ptr, g_shN_ptr, sh_stride, NUM_BASES
    )
    tl.store(g_means_ptr + 3 * i, gmx + dmx, mask=m)
    tl.store(g_means_ptr + 3 * i + 1, gmy + dmy, mask=m)
    tl.store(g_means_ptr + 3 * i + 2, gmz + dmz, mask=m)

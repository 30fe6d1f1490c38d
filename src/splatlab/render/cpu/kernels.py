"""Numba kernels of the CPU backend: projection, binning and compositing, forward and backward.

Every kernel is compiled once per dtype (float32, float64) and cached on disk
(``cache=True``), so a new process loads machine code instead of compiling again.
``fastmath`` stays off: the kernels must agree with the PyTorch reference to 1e-5.

Kernels take NumPy views of torch tensors (zero copy) and write into preallocated outputs.
The stages, with the data each produces:

    project_forward      per Gaussian: means2d, conics, depths, opacities, colours, radii,
                         and the inclusive tile rectangle (x0, y0, x1, y1) it touches
    project_backward     per Gaussian: gradients of the raw parameters from the gradients
                         of the projected quantities (the chain rule written by hand)
    sort_visible_by_depth  stable LSD radix sort of the visible Gaussians by depth
    bin_intersections    stable counting sort of (Gaussian, tile) pairs by tile: the result
                         is ordered by (tile, depth), ties in depth by Gaussian index
    prepare_splats       per Gaussian record [mx, my, A, B, C, o, f_0..f_{C-1}] and the pixel
                         box outside of which alpha < 1/255 (a conservative bound)
    composite_forward    per tile, front to back: accumulated features, T_final, and the
                         index of the last intersection that contributed to each pixel
    finish_forward       background, alpha = 1 - T_final, expected depth (and its backward)
    composite_backward   per tile, back to front: gradient of every intersection, written
                         into a slot that intersection owns (no two threads share a slot)
    reduce_slots         per Gaussian, the sum of its slots in a fixed order (deterministic)

Compositing constants and numerics follow render/reference.py exactly; the compositing
kernels compute in the dtype of their inputs (constants are passed as arrays of that dtype,
because a Python float literal would promote float32 arithmetic to float64).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ...constants import FOV_CLAMP, SH_C0, SH_C1, SH_C2, SH_C3
from ...constants import TILE_SIZE as TILE

NPIX = TILE * TILE
_JIT = dict(cache=True, fastmath=False, nogil=True, error_model="numpy")

# Unpacked to scalars: Numba folds module-level floats into the compiled code as constants.
SH_C2_0, SH_C2_1, SH_C2_2, SH_C2_3, SH_C2_4 = SH_C2
SH_C3_0, SH_C3_1, SH_C3_2, SH_C3_3, SH_C3_4, SH_C3_5, SH_C3_6 = SH_C3

# Slot layout of the per-intersection gradients: d/d[mx, my, A, B, C, opacity, f_0..f_{C-1}].
SLOT_FEATURES = 6


# ---- small helpers (inlined into the kernels) -------------------------------------------------


@njit(inline="always", **_JIT)
def _rotmat(w, x, y, z):
    """Rotation matrix of a unit quaternion (w, x, y, z), row major, as 9 scalars."""
    return (
        1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y),
        2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x),
        2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y),
    )  # fmt: skip


@njit(inline="always", **_JIT)
def _sh_basis_k(k, x, y, z):
    """The k-th real SH basis function (k < 16) at unit direction (x, y, z)."""
    if k == 0:
        return SH_C0
    if k == 1:
        return -SH_C1 * y
    if k == 2:
        return SH_C1 * z
    if k == 3:
        return -SH_C1 * x
    if k == 4:
        return SH_C2_0 * x * y
    if k == 5:
        return SH_C2_1 * y * z
    if k == 6:
        return SH_C2_2 * (2.0 * z * z - x * x - y * y)
    if k == 7:
        return SH_C2_3 * x * z
    if k == 8:
        return SH_C2_4 * (x * x - y * y)
    if k == 9:
        return SH_C3_0 * y * (3.0 * x * x - y * y)
    if k == 10:
        return SH_C3_1 * x * y * z
    if k == 11:
        return SH_C3_2 * y * (4.0 * z * z - x * x - y * y)
    if k == 12:
        return SH_C3_3 * z * (2.0 * z * z - 3.0 * x * x - 3.0 * y * y)
    if k == 13:
        return SH_C3_4 * x * (4.0 * z * z - x * x - y * y)
    if k == 14:
        return SH_C3_5 * z * (x * x - y * y)
    return SH_C3_6 * x * (x * x - 3.0 * y * y)


@njit(inline="always", **_JIT)
def _sh_basis_grad_k(k, x, y, z):
    """Gradient of the k-th basis function w.r.t. (x, y, z), treated as independent."""
    if k == 0:
        return 0.0, 0.0, 0.0
    if k == 1:
        return 0.0, -SH_C1, 0.0
    if k == 2:
        return 0.0, 0.0, SH_C1
    if k == 3:
        return -SH_C1, 0.0, 0.0
    if k == 4:
        return SH_C2_0 * y, SH_C2_0 * x, 0.0
    if k == 5:
        return 0.0, SH_C2_1 * z, SH_C2_1 * y
    if k == 6:
        return -2.0 * SH_C2_2 * x, -2.0 * SH_C2_2 * y, 4.0 * SH_C2_2 * z
    if k == 7:
        return SH_C2_3 * z, 0.0, SH_C2_3 * x
    if k == 8:
        return 2.0 * SH_C2_4 * x, -2.0 * SH_C2_4 * y, 0.0
    xx, yy, zz = x * x, y * y, z * z
    if k == 9:
        return 6.0 * SH_C3_0 * x * y, SH_C3_0 * (3.0 * xx - 3.0 * yy), 0.0
    if k == 10:
        return SH_C3_1 * y * z, SH_C3_1 * x * z, SH_C3_1 * x * y
    if k == 11:
        return -2.0 * SH_C3_2 * x * y, SH_C3_2 * (4.0 * zz - xx - 3.0 * yy), 8.0 * SH_C3_2 * y * z
    if k == 12:
        return -6.0 * SH_C3_3 * x * z, -6.0 * SH_C3_3 * y * z, SH_C3_3 * (6.0 * zz - 3.0 * xx - 3.0 * yy)
    if k == 13:
        return SH_C3_4 * (4.0 * zz - 3.0 * xx - yy), -2.0 * SH_C3_4 * x * y, 8.0 * SH_C3_4 * x * z
    if k == 14:
        return 2.0 * SH_C3_5 * x * z, -2.0 * SH_C3_5 * y * z, SH_C3_5 * (xx - yy)
    return SH_C3_6 * (3.0 * xx - 3.0 * yy), -6.0 * SH_C3_6 * x * y, 0.0


@njit(inline="always", **_JIT)
def _clamp_ratio(u, lo, hi):
    """clamp(u, lo, hi) and whether u was inside [lo, hi] (torch passes the gradient there)."""
    if u < lo:
        return lo, False
    if u > hi:
        return hi, False
    return u, True


@njit(inline="always", **_JIT)
def _floor_div_tile(v):
    return math.floor(v / TILE)


@njit(inline="always", **_JIT)
def _alpha_box(mx, my, a, b, c, o, width, height):
    """Inclusive pixel box (x0, y0, x1, y1) outside of which o * exp(-q/2) < 1/255 (q the conic
    form), with a generous margin; x0 > x1 when the Gaussian is below 1/255 everywhere.

    Arguments are the stored (dtype-rounded) values, converted to float64 here.
    """
    a64, b64, c64, o64 = float(a), float(b), float(c), float(o)
    det = a64 * c64 - b64 * b64
    x0, y0, x1, y1 = 0, 0, width - 1, height - 1
    if not (o64 * 255.0 > 1.0 - 1e-3):
        x0, y0, x1, y1 = 1, 1, 0, 0  # alpha <= o < 1/255 everywhere (power <= 0)
    elif a64 > 0.0 and c64 > 0.0 and det > 0.0 and math.isfinite(det):
        # o exp(-q/2) >= 1/255  <=>  q <= 2 log(255 o); the ellipse q <= k reaches
        # sqrt(k Sigma_xx) along x, with Sigma = conic^-1.
        k = 2.0 * (max(math.log(255.0 * o64), 0.0) + 0.05)
        hx = math.sqrt(k * c64 / det) * 1.01 + 0.01
        hy = math.sqrt(k * a64 / det) * 1.01 + 0.01
        fmx, fmy = float(mx), float(my)
        lo_x, hi_x = fmx - hx - 0.5, fmx + hx - 0.5
        lo_y, hi_y = fmy - hy - 0.5, fmy + hy - 0.5
        if math.isfinite(lo_x) and math.isfinite(hi_x) and math.isfinite(lo_y) and math.isfinite(hi_y):
            x0 = int(max(math.ceil(lo_x), -1.0))
            x1 = int(min(math.floor(hi_x), float(width)))
            y0 = int(max(math.ceil(lo_y), -1.0))
            y1 = int(min(math.floor(hi_y), float(height)))
    return x0, y0, x1, y1


# ---- 1-3. projection and colour, forward ------------------------------------------------------


@njit(parallel=True, **_JIT)
def project_forward(
    means, quats, log_scales, logit_opacities, sh0, shN, sh_degree,
    viewmat, campos, fx, fy, cx, cy, width, height, near, far, eps2d, antialiased,
    means2d, conics, depths, opacities, colors, radius_f, radii, rect,
):  # fmt: skip
    """EWA projection + SH colour of every Gaussian (see reference.project_gaussians).

    Inputs: means [N, 3], quats [N, 4], log_scales [N, 3], logit_opacities [N], sh0 [N, 1, 3],
    shN [N, K-1, 3]; viewmat [4, 4] float64 (already rounded to the data dtype); campos [3].
    Outputs (preallocated): means2d [N, 2], conics [N, 3], depths [N], opacities [N] (with the
    anti-aliasing compensation), colors [N, 3], radius_f [N] (scratch, data dtype), radii [N]
    int32, rect [N, 4] int32 inclusive tile rectangle (x0, y0, x1, y1).
    Arithmetic is float64; results are rounded to the data dtype when stored.
    """
    n = means.shape[0]
    tiles_x = (width + TILE - 1) // TILE
    tiles_y = (height + TILE - 1) // TILE
    lim_x_pos = FOV_CLAMP * (width - cx) / fx
    lim_x_neg = FOV_CLAMP * cx / fx
    lim_y_pos = FOV_CLAMP * (height - cy) / fy
    lim_y_neg = FOV_CLAMP * cy / fy
    w00, w01, w02, t0 = viewmat[0, 0], viewmat[0, 1], viewmat[0, 2], viewmat[0, 3]
    w10, w11, w12, t1 = viewmat[1, 0], viewmat[1, 1], viewmat[1, 2], viewmat[1, 3]
    w20, w21, w22, t2 = viewmat[2, 0], viewmat[2, 1], viewmat[2, 2], viewmat[2, 3]
    num_bases = (sh_degree + 1) * (sh_degree + 1)
    for i in prange(n):
        mx, my, mz = float(means[i, 0]), float(means[i, 1]), float(means[i, 2])
        # camera space
        px = w00 * mx + w01 * my + w02 * mz + t0
        py = w10 * mx + w11 * my + w12 * mz + t1
        pz = w20 * mx + w21 * my + w22 * mz + t2
        in_range = (pz > near) and (pz < far)
        z = pz if in_range else 1.0
        tx = z * _clamp_ratio(px / z, -lim_x_neg, lim_x_pos)[0]
        ty = z * _clamp_ratio(py / z, -lim_y_neg, lim_y_pos)[0]
        j00 = fx / z
        j02 = -fx * tx / (z * z)
        j11 = fy / z
        j12 = -fy * ty / (z * z)
        # T = J W  (2 x 3)
        a00 = j00 * w00 + j02 * w20
        a01 = j00 * w01 + j02 * w21
        a02 = j00 * w02 + j02 * w22
        a10 = j11 * w10 + j12 * w20
        a11 = j11 * w11 + j12 * w21
        a12 = j11 * w12 + j12 * w22
        # M = R diag(s)
        qw, qx, qy, qz = float(quats[i, 0]), float(quats[i, 1]), float(quats[i, 2]), float(quats[i, 3])
        qn = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        qden = max(qn, 1e-12)
        r00, r01, r02, r10, r11, r12, r20, r21, r22 = _rotmat(qw / qden, qx / qden, qy / qden, qz / qden)
        s0 = math.exp(float(log_scales[i, 0]))
        s1 = math.exp(float(log_scales[i, 1]))
        s2 = math.exp(float(log_scales[i, 2]))
        # U = T R diag(s)  (2 x 3); cov2d = U U^T
        u00 = (a00 * r00 + a01 * r10 + a02 * r20) * s0
        u01 = (a00 * r01 + a01 * r11 + a02 * r21) * s1
        u02 = (a00 * r02 + a01 * r12 + a02 * r22) * s2
        u10 = (a10 * r00 + a11 * r10 + a12 * r20) * s0
        u11 = (a10 * r01 + a11 * r11 + a12 * r21) * s1
        u12 = (a10 * r02 + a11 * r12 + a12 * r22) * s2
        ca = u00 * u00 + u01 * u01 + u02 * u02
        cb = u00 * u10 + u01 * u11 + u02 * u12
        cc = u10 * u10 + u11 * u11 + u12 * u12
        det_raw = ca * cc - cb * cb
        ca += eps2d
        cc += eps2d
        det = ca * cc - cb * cb
        comp = 1.0
        if antialiased:
            comp = math.sqrt(max(det_raw / max(det, 1e-30), 0.0))
        valid = in_range and det > 0.0
        detv = det if valid else 1.0
        conics[i, 0] = cc / detv
        conics[i, 1] = -cb / detv
        conics[i, 2] = ca / detv
        mid = 0.5 * (ca + cc)
        lambda_max = mid + math.sqrt(max(mid * mid - detv, 0.1))
        radius_f[i] = math.ceil(3.0 * math.sqrt(lambda_max))
        means2d[i, 0] = fx * px / z + cx
        means2d[i, 1] = fy * py / z + cy
        depths[i] = pz
        sig = 1.0 / (1.0 + math.exp(-float(logit_opacities[i])))
        opacities[i] = sig * comp

        # colour: SH in the world-space direction from the camera centre
        dx, dy, dz = mx - campos[0], my - campos[1], mz - campos[2]
        dden = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
        ux, uy, uz = dx / dden, dy / dden, dz / dden
        c0 = SH_C0 * float(sh0[i, 0, 0])
        c1 = SH_C0 * float(sh0[i, 0, 1])
        c2 = SH_C0 * float(sh0[i, 0, 2])
        for k in range(1, num_bases):
            bk = _sh_basis_k(k, ux, uy, uz)
            c0 += bk * float(shN[i, k - 1, 0])
            c1 += bk * float(shN[i, k - 1, 1])
            c2 += bk * float(shN[i, k - 1, 2])
        colors[i, 0] = max(c0 + 0.5, 0.0)
        colors[i, 1] = max(c1 + 0.5, 0.0)
        colors[i, 2] = max(c2 + 0.5, 0.0)

        # tile rectangle from the stored (dtype-rounded) centre and radius, as tile_rect does
        r = radius_f[i]
        ux = means2d[i, 0]
        uy = means2d[i, 1]
        x0 = min(max(_floor_div_tile(ux - r), 0), tiles_x)
        x1 = min(max(_floor_div_tile(ux + r), -1), tiles_x - 1)
        y0 = min(max(_floor_div_tile(uy - r), 0), tiles_y)
        y1 = min(max(_floor_div_tile(uy + r), -1), tiles_y - 1)
        if valid and x0 <= x1 and y0 <= y1:
            radii[i] = np.int32(r)
            # Keep only the tiles that the box where alpha >= 1/255 touches: a low-opacity
            # or elongated Gaussian's square of radius r covers many tiles it cannot change.
            # The images are those of the full square (the compositing skips alpha < 1/255).
            bx0, by0, bx1, by1 = _alpha_box(
                ux, uy, conics[i, 0], conics[i, 1], conics[i, 2], opacities[i], width, height
            )
            x0 = max(x0, _floor_div_tile(bx0))
            x1 = min(x1, _floor_div_tile(bx1))
            y0 = max(y0, _floor_div_tile(by0))
            y1 = min(y1, _floor_div_tile(by1))
            if bx0 > bx1 or by0 > by1 or x0 > x1 or y0 > y1:
                x1, y1 = x0 - 1, y0 - 1  # no tile: an empty rectangle owns no slots
        else:
            radii[i] = 0
        rect[i, 0] = x0
        rect[i, 1] = y0
        rect[i, 2] = x1
        rect[i, 3] = y1


# ---- 1-3. projection and colour, backward -----------------------------------------------------


@njit(parallel=True, **_JIT)
def project_backward(
    means, quats, log_scales, logit_opacities, sh0, shN, sh_degree,
    viewmat, campos, fx, fy, cx, cy, width, height, near, far, eps2d, antialiased,
    v_means2d, v_conics, v_depths, v_opacities, v_colors,
    g_means, g_quats, g_log_scales, g_logit_opacities, g_sh0, g_shN,
):  # fmt: skip
    """Gradients of the raw parameters, given those of project_forward's outputs.

    Recomputes the forward quantities, then applies the chain rule stage by stage:
    conic -> 2D covariance (and the anti-aliasing compensation) -> U = J W R S -> J, R, S
    -> camera-space point, quaternion, log-scales; SH colour -> coefficients and the view
    direction -> means. Masks mirror the reference's torch.where / clamp semantics.
    g_sh0 and g_shN must be zero-initialised (coefficients above sh_degree get no gradient).
    """
    n = means.shape[0]
    lim_x_pos = FOV_CLAMP * (width - cx) / fx
    lim_x_neg = FOV_CLAMP * cx / fx
    lim_y_pos = FOV_CLAMP * (height - cy) / fy
    lim_y_neg = FOV_CLAMP * cy / fy
    w00, w01, w02, t0 = viewmat[0, 0], viewmat[0, 1], viewmat[0, 2], viewmat[0, 3]
    w10, w11, w12, t1 = viewmat[1, 0], viewmat[1, 1], viewmat[1, 2], viewmat[1, 3]
    w20, w21, w22, t2 = viewmat[2, 0], viewmat[2, 1], viewmat[2, 2], viewmat[2, 3]
    num_bases = (sh_degree + 1) * (sh_degree + 1)
    for i in prange(n):
        mx, my, mz = float(means[i, 0]), float(means[i, 1]), float(means[i, 2])
        px = w00 * mx + w01 * my + w02 * mz + t0
        py = w10 * mx + w11 * my + w12 * mz + t1
        pz = w20 * mx + w21 * my + w22 * mz + t2
        in_range = (pz > near) and (pz < far)
        z = pz if in_range else 1.0
        cxr, free_x = _clamp_ratio(px / z, -lim_x_neg, lim_x_pos)
        cyr, free_y = _clamp_ratio(py / z, -lim_y_neg, lim_y_pos)
        tx = z * cxr
        ty = z * cyr
        zz2 = z * z
        j00 = fx / z
        j02 = -fx * tx / zz2
        j11 = fy / z
        j12 = -fy * ty / zz2
        a00 = j00 * w00 + j02 * w20
        a01 = j00 * w01 + j02 * w21
        a02 = j00 * w02 + j02 * w22
        a10 = j11 * w10 + j12 * w20
        a11 = j11 * w11 + j12 * w21
        a12 = j11 * w12 + j12 * w22
        qw, qx, qy, qz = float(quats[i, 0]), float(quats[i, 1]), float(quats[i, 2]), float(quats[i, 3])
        qn = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        qden = max(qn, 1e-12)
        nw, nx, ny, nz = qw / qden, qx / qden, qy / qden, qz / qden
        r00, r01, r02, r10, r11, r12, r20, r21, r22 = _rotmat(nw, nx, ny, nz)
        s0 = math.exp(float(log_scales[i, 0]))
        s1 = math.exp(float(log_scales[i, 1]))
        s2 = math.exp(float(log_scales[i, 2]))
        # V = T R (2 x 3), U = V diag(s)
        v00 = a00 * r00 + a01 * r10 + a02 * r20
        v01 = a00 * r01 + a01 * r11 + a02 * r21
        v02 = a00 * r02 + a01 * r12 + a02 * r22
        v10 = a10 * r00 + a11 * r10 + a12 * r20
        v11 = a10 * r01 + a11 * r11 + a12 * r21
        v12 = a10 * r02 + a11 * r12 + a12 * r22
        u00, u01, u02 = v00 * s0, v01 * s1, v02 * s2
        u10, u11, u12 = v10 * s0, v11 * s1, v12 * s2
        ca0 = u00 * u00 + u01 * u01 + u02 * u02
        cb = u00 * u10 + u01 * u11 + u02 * u12
        cc0 = u10 * u10 + u11 * u11 + u12 * u12
        det_raw = ca0 * cc0 - cb * cb
        ca = ca0 + eps2d
        cc = cc0 + eps2d
        det = ca * cc - cb * cb
        valid = in_range and det > 0.0

        # conic = (c, -b, a) / det   (det held at 1 where not valid)
        gA, gB, gC = float(v_conics[i, 0]), float(v_conics[i, 1]), float(v_conics[i, 2])
        if valid:
            inv = 1.0 / det
            g_det = (-gA * cc + gB * cb - gC * ca) * inv * inv
            g_ca = gC * inv + g_det * cc
            g_cc = gA * inv + g_det * ca
            g_cb = -gB * inv - 2.0 * cb * g_det
        else:
            g_ca = gC
            g_cc = gA
            g_cb = -gB
        # opacity = sigmoid(logit) * compensation
        sig = 1.0 / (1.0 + math.exp(-float(logit_opacities[i])))
        g_op = float(v_opacities[i])
        if antialiased:
            det_c = max(det, 1e-30)
            ratio = det_raw / det_c
            comp = math.sqrt(max(ratio, 0.0))
            g_sig = g_op * comp
            g_ratio = g_op * sig * 0.5 / comp if ratio > 0.0 else 0.0
            g_det_raw = g_ratio / det_c
            g_det2 = -g_ratio * det_raw / (det_c * det_c) if det >= 1e-30 else 0.0
            g_ca += g_det2 * cc + g_det_raw * cc0
            g_cc += g_det2 * ca + g_det_raw * ca0
            g_cb += -2.0 * cb * (g_det2 + g_det_raw)
        else:
            g_sig = g_op
        g_logit_opacities[i] = g_sig * sig * (1.0 - sig)

        # cov2d = U U^T, read as a = [0,0], b = [0,1], c = [1,1]:  dL/dU = (G + G^T) U
        gu00 = 2.0 * g_ca * u00 + g_cb * u10
        gu01 = 2.0 * g_ca * u01 + g_cb * u11
        gu02 = 2.0 * g_ca * u02 + g_cb * u12
        gu10 = g_cb * u00 + 2.0 * g_cc * u10
        gu11 = g_cb * u01 + 2.0 * g_cc * u11
        gu12 = g_cb * u02 + 2.0 * g_cc * u12
        # U = V diag(s): scales
        g_log_scales[i, 0] = (gu00 * v00 + gu10 * v10) * s0
        g_log_scales[i, 1] = (gu01 * v01 + gu11 * v11) * s1
        g_log_scales[i, 2] = (gu02 * v02 + gu12 * v12) * s2
        gv00, gv01, gv02 = gu00 * s0, gu01 * s1, gu02 * s2
        gv10, gv11, gv12 = gu10 * s0, gu11 * s1, gu12 * s2
        # V = A R:  dL/dA = dL/dV R^T,  dL/dR = A^T dL/dV
        ga00 = gv00 * r00 + gv01 * r01 + gv02 * r02
        ga01 = gv00 * r10 + gv01 * r11 + gv02 * r12
        ga02 = gv00 * r20 + gv01 * r21 + gv02 * r22
        ga10 = gv10 * r00 + gv11 * r01 + gv12 * r02
        ga11 = gv10 * r10 + gv11 * r11 + gv12 * r12
        ga12 = gv10 * r20 + gv11 * r21 + gv12 * r22
        gr00 = a00 * gv00 + a10 * gv10
        gr01 = a00 * gv01 + a10 * gv11
        gr02 = a00 * gv02 + a10 * gv12
        gr10 = a01 * gv00 + a11 * gv10
        gr11 = a01 * gv01 + a11 * gv11
        gr12 = a01 * gv02 + a11 * gv12
        gr20 = a02 * gv00 + a12 * gv10
        gr21 = a02 * gv01 + a12 * gv11
        gr22 = a02 * gv02 + a12 * gv12
        # rotation matrix -> unit quaternion -> raw quaternion
        gnw = 2.0 * (-nz * gr01 + ny * gr02 + nz * gr10 - nx * gr12 - ny * gr20 + nx * gr21)
        gnx = 2.0 * (ny * gr01 + nz * gr02 + ny * gr10 - 2.0 * nx * gr11 - nw * gr12
                     + nz * gr20 + nw * gr21 - 2.0 * nx * gr22)  # fmt: skip
        gny = 2.0 * (-2.0 * ny * gr00 + nx * gr01 + nw * gr02 + nx * gr10 + nz * gr12
                     - nw * gr20 + nz * gr21 - 2.0 * ny * gr22)  # fmt: skip
        gnz = 2.0 * (-2.0 * nz * gr00 - nw * gr01 + nx * gr02 + nw * gr10 - 2.0 * nz * gr11
                     + ny * gr12 + nx * gr20 + ny * gr21)  # fmt: skip
        if qn > 1e-12:
            dot = nw * gnw + nx * gnx + ny * gny + nz * gnz
            g_quats[i, 0] = (gnw - nw * dot) / qn
            g_quats[i, 1] = (gnx - nx * dot) / qn
            g_quats[i, 2] = (gny - ny * dot) / qn
            g_quats[i, 3] = (gnz - nz * dot) / qn
        else:
            g_quats[i, 0] = gnw / 1e-12
            g_quats[i, 1] = gnx / 1e-12
            g_quats[i, 2] = gny / 1e-12
            g_quats[i, 3] = gnz / 1e-12
        # A = J W: only J's entries 00, 02, 11, 12 vary
        gj00 = ga00 * w00 + ga01 * w01 + ga02 * w02
        gj02 = ga00 * w20 + ga01 * w21 + ga02 * w22
        gj11 = ga10 * w10 + ga11 * w11 + ga12 * w12
        gj12 = ga10 * w20 + ga11 * w21 + ga12 * w22
        zz3 = zz2 * z
        g_z = (-fx * gj00 - fy * gj11) / zz2 + 2.0 * (fx * tx * gj02 + fy * ty * gj12) / zz3
        g_tx = -fx / zz2 * gj02
        g_ty = -fy / zz2 * gj12
        g_px = 0.0
        g_py = 0.0
        if free_x:  # tx = z * (px / z)
            g_px += g_tx
        else:  # tx = z * limit
            g_z += g_tx * cxr
        if free_y:
            g_py += g_ty
        else:
            g_z += g_ty * cyr
        # means2d = (fx px / z + cx, fy py / z + cy)
        gmx2, gmy2 = float(v_means2d[i, 0]), float(v_means2d[i, 1])
        g_px += gmx2 * fx / z
        g_py += gmy2 * fy / z
        g_z += -(gmx2 * fx * px + gmy2 * fy * py) / zz2
        g_pz = g_z if in_range else 0.0
        g_pz += float(v_depths[i])
        # p = W m + t
        gmx = w00 * g_px + w10 * g_py + w20 * g_pz
        gmy = w01 * g_px + w11 * g_py + w21 * g_pz
        gmz = w02 * g_px + w12 * g_py + w22 * g_pz

        # colour
        dx, dy, dz = mx - campos[0], my - campos[1], mz - campos[2]
        dn = math.sqrt(dx * dx + dy * dy + dz * dz)
        dden = max(dn, 1e-12)
        ux, uy, uz = dx / dden, dy / dden, dz / dden
        # forward again: raw colour per channel, then the clamp's mask
        r0 = SH_C0 * float(sh0[i, 0, 0])
        r1 = SH_C0 * float(sh0[i, 0, 1])
        r2 = SH_C0 * float(sh0[i, 0, 2])
        for k in range(1, num_bases):
            bk = _sh_basis_k(k, ux, uy, uz)
            r0 += bk * float(shN[i, k - 1, 0])
            r1 += bk * float(shN[i, k - 1, 1])
            r2 += bk * float(shN[i, k - 1, 2])
        v0 = float(v_colors[i, 0]) if r0 + 0.5 >= 0.0 else 0.0
        v1 = float(v_colors[i, 1]) if r1 + 0.5 >= 0.0 else 0.0
        v2 = float(v_colors[i, 2]) if r2 + 0.5 >= 0.0 else 0.0
        g_sh0[i, 0, 0] = SH_C0 * v0
        g_sh0[i, 0, 1] = SH_C0 * v1
        g_sh0[i, 0, 2] = SH_C0 * v2
        gux = 0.0
        guy = 0.0
        guz = 0.0
        for k in range(1, num_bases):
            bk = _sh_basis_k(k, ux, uy, uz)
            g_shN[i, k - 1, 0] = bk * v0
            g_shN[i, k - 1, 1] = bk * v1
            g_shN[i, k - 1, 2] = bk * v2
            vk = float(shN[i, k - 1, 0]) * v0 + float(shN[i, k - 1, 1]) * v1 + float(shN[i, k - 1, 2]) * v2
            bx, by, bz = _sh_basis_grad_k(k, ux, uy, uz)
            gux += vk * bx
            guy += vk * by
            guz += vk * bz
        if sh_degree > 0:  # through the normalised view direction to the mean
            if dn > 1e-12:
                dot = ux * gux + uy * guy + uz * guz
                gmx += (gux - ux * dot) / dn
                gmy += (guy - uy * dot) / dn
                gmz += (guz - uz * dot) / dn
            else:
                gmx += gux / 1e-12
                gmy += guy / 1e-12
                gmz += guz / 1e-12
        g_means[i, 0] = gmx
        g_means[i, 1] = gmy
        g_means[i, 2] = gmz


# ---- 4. binning ------------------------------------------------------------------------------


@njit(**_JIT)
def sort_visible_by_depth(depth_keys, radii, key_bits):
    """Indices of the Gaussians with radii > 0, sorted by depth; ties keep index order.

    depth_keys [N] int64: the bit patterns of the (positive) depths, which order like the
    depths themselves. Stable LSD radix sort, 11 bits per pass; passes where every key has
    the same digit are skipped.
    """
    n = radii.shape[0]
    count = 0
    for i in range(n):
        if radii[i] > 0:
            count += 1
    ids = np.empty(count, np.int32)
    keys = np.empty(count, np.int64)
    j = 0
    for i in range(n):
        if radii[i] > 0:
            ids[j] = i
            keys[j] = depth_keys[i]
            j += 1
    ids_tmp = np.empty(count, np.int32)
    keys_tmp = np.empty(count, np.int64)
    hist = np.empty(2048, np.int64)
    for shift in range(0, key_bits, 11):
        hist[:] = 0
        for j in range(count):
            hist[(keys[j] >> shift) & 2047] += 1
        if count == 0 or hist[(keys[0] >> shift) & 2047] == count:
            continue  # every key has this digit: the pass would not move anything
        run = 0
        for d in range(2048):
            c = hist[d]
            hist[d] = run
            run += c
        for j in range(count):
            d = (keys[j] >> shift) & 2047
            pos = hist[d]
            hist[d] = pos + 1
            ids_tmp[pos] = ids[j]
            keys_tmp[pos] = keys[j]
        ids, ids_tmp = ids_tmp, ids
        keys, keys_tmp = keys_tmp, keys
    return ids


@njit(**_JIT)
def intersection_offsets(radii, rect):
    """[N + 1] int64: exclusive prefix sum of the tiles each Gaussian touches, in index order.

    Gaussian g owns the gradient slots offsets[g]:offsets[g+1], one per tile of its
    rectangle in row-major order.
    """
    n = radii.shape[0]
    off = np.empty(n + 1, np.int64)
    run = 0
    for i in range(n):
        off[i] = run
        if radii[i] > 0:
            run += (rect[i, 2] - rect[i, 0] + 1) * (rect[i, 3] - rect[i, 1] + 1)
    off[n] = run
    return off


@njit(parallel=True, **_JIT)
def bin_intersections(order, rect, n_tiles, tiles_x, num_chunks, isect_gid, tile_offsets):
    """Counting sort of (Gaussian, tile) pairs by tile, stable in `order` (front to back).

    order [V] int32: visible Gaussians sorted by depth. Fills isect_gid [M] int32 (Gaussian
    of each intersection, grouped by tile, front to back inside a tile) and tile_offsets
    [n_tiles + 1] int64. The input is cut into `num_chunks` pieces counted in parallel;
    the output does not depend on num_chunks.
    """
    v = order.shape[0]
    hist = np.zeros((num_chunks, n_tiles), np.int64)
    for c in prange(num_chunks):
        lo = c * v // num_chunks
        hi = (c + 1) * v // num_chunks
        for j in range(lo, hi):
            g = order[j]
            for ty in range(rect[g, 1], rect[g, 3] + 1):
                for tx in range(rect[g, 0], rect[g, 2] + 1):
                    hist[c, ty * tiles_x + tx] += 1
    run = 0
    for t in range(n_tiles):
        tile_offsets[t] = run
        for c in range(num_chunks):
            k = hist[c, t]
            hist[c, t] = run
            run += k
    tile_offsets[n_tiles] = run
    for c in prange(num_chunks):
        lo = c * v // num_chunks
        hi = (c + 1) * v // num_chunks
        for j in range(lo, hi):
            g = order[j]
            for ty in range(rect[g, 1], rect[g, 3] + 1):
                for tx in range(rect[g, 0], rect[g, 2] + 1):
                    t = ty * tiles_x + tx
                    pos = hist[c, t]
                    hist[c, t] = pos + 1
                    isect_gid[pos] = g


# ---- 5. compositing --------------------------------------------------------------------------
#
# Layout shared by the compositing kernels. A tile's state lives in small per-worker arrays
# indexed by the pixel's position p = row * 16 + column inside the tile; per-channel arrays
# are channel-major (k * 256 + p). The inner loops run over the 16 pixels of one tile row,
# branch-free (masks instead of `continue`) so that LLVM vectorises them; the exponential is
# an inlined polynomial for float32 for the same reason (math.exp would be a libm call).
# Indices are unsigned so that Numba emits no negative-index wraparound, and the row
# length `tw` (always 16) is passed in at run time so that LLVM keeps those loops as loops
# it can vectorise rather than unrolling them into scalar code.


@intrinsic
def _fetch_add_one(typingctx, counter, index):
    """Atomically `old = counter[index]; counter[index] += 1; return old` (int64 array)."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [idx])
        return builder.atomic_rmw("add", ptr, context.get_constant(types.int64, 1), "monotonic")

    return types.int64(counter, index), codegen


@intrinsic
def _ldexp_f32(typingctx, p, n):
    """p * 2**n for float32 p and an integral float32 n in [-126, 127] (exponent-field add)."""
    if p != types.float32 or n != types.float32:
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        ni = builder.fptosi(args[1], i32)
        bits = builder.shl(builder.add(ni, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.fmul(args[0], builder.bitcast(bits, ir.FloatType()))

    return types.float32(types.float32, types.float32), codegen


_F32 = np.float32
_EXP_LO, _EXP_HI = _F32(-87.0), _F32(88.0)
_LOG2E = _F32(1.4426950408889634)
_LN2_HI = _F32(0.693145751953125)  # ln 2 split in two (Cody-Waite): n * _LN2_HI is exact
_LN2_LO = _F32(1.4286067653301870e-06)
_HALF32, _ONE32 = _F32(0.5), _F32(1.0)
_E2, _E3, _E4, _E5, _E6, _E7 = (_F32(1.0 / math.factorial(k)) for k in range(2, 8))


@njit(inline="always", **_JIT)
def _exp_f32(x):
    """exp(x) in float32 without a library call (so loops containing it vectorise).

    exp(x) = 2^n e^r with n = round(x / ln 2), |r| <= ln(2)/2, e^r by its Taylor series to
    degree 7 (truncation error < 6e-9 relative): within ~2 ulp of the correctly rounded value.
    """
    x = min(max(x, _EXP_LO), _EXP_HI)
    n = np.floor(x * _LOG2E + _HALF32)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = _ONE32 + r * (_ONE32 + r * (_E2 + r * (_E3 + r * (_E4 + r * (_E5 + r * (_E6 + r * _E7))))))
    return _ldexp_f32(p, n)


def _fexp(x):  # pragma: no cover - replaced by the overload below inside jitted code
    return math.exp(x)


@overload(_fexp, inline="always", jit_options=dict(cache=True))
def _fexp_impl(x):
    if x == types.float32:
        return lambda x: _exp_f32(x)
    return lambda x: math.exp(x)


@njit(parallel=True, **_JIT)
def prepare_splats(means2d, conics, opacities, colors, depths, width, height, rec, bbox):
    """Pack each Gaussian's compositing data into one record and bound its footprint.

    rec [N, 6 + C] (data dtype): mx, my, A, B, C, opacity, then the C features composited:
    colors [N, C - 1] followed by depths [N] (the reference composites [rgb, depth]). bbox [N, 4] int32:
    inclusive pixel box (x0, y0, x1, y1) outside of which o * exp(power) < 1/255, with a
    generous margin: pixels inside are still tested exactly, so the box only saves work.
    """
    n = means2d.shape[0]
    nc = colors.shape[1]
    for i in prange(n):
        mx = means2d[i, 0]
        my = means2d[i, 1]
        a = conics[i, 0]
        b = conics[i, 1]
        c = conics[i, 2]
        o = opacities[i]
        rec[i, 0] = mx
        rec[i, 1] = my
        rec[i, 2] = a
        rec[i, 3] = b
        rec[i, 4] = c
        rec[i, 5] = o
        for k in range(nc):
            rec[i, 6 + k] = colors[i, k]
        rec[i, 6 + nc] = depths[i]
        x0, y0, x1, y1 = _alpha_box(mx, my, a, b, c, o, width, height)
        bbox[i, 0] = x0
        bbox[i, 1] = y0
        bbox[i, 2] = x1
        bbox[i, 3] = y1


@njit(**_JIT)
def _forward_tile(
    tile, tw, rec, bbox, isect_gid, tile_offsets, width, height, tiles_x, consts,
    trans, acc, done, last, wrow, fbuf, xl, yl, out_feat, out_t, out_last,
):  # fmt: skip
    """Composite one tile front to back (see composite_forward). Returns the rows processed."""
    nf = out_feat.shape[2]
    half = consts[0]
    alpha_max = consts[1]
    alpha_min = consts[2]
    t_min = consts[3]
    one = consts[4]
    zero = consts[5]
    ty = tile // tiles_x
    tx = tile - ty * tiles_x
    px0 = tx * TILE
    py0 = ty * TILE
    px1 = min(px0 + TILE, width)  # exclusive
    py1 = min(py0 + TILE, height)
    for j in range(TILE):
        xl[j] = px0 + j + 0.5  # pixel centres, exact in the data dtype
        yl[j] = py0 + j + 0.5
    trans[:] = one
    acc[:] = zero
    last[:] = -1
    num_outside = 0
    for p in range(NPIX):  # pixels past the image edge count as done from the start
        r = p // TILE
        outside = (py0 + r >= py1) or (px0 + p - r * TILE >= px1)
        done[p] = 1 if outside else 0
        num_outside += 1 if outside else 0
    rows = 0
    num_done = num_outside
    for i in range(tile_offsets[tile], tile_offsets[tile + 1]):
        g = isect_gid[i]
        bx0 = max(bbox[g, 0], px0)
        bx1 = min(bbox[g, 2], px1 - 1)
        by0 = max(bbox[g, 1], py0)
        by1 = min(bbox[g, 3], py1 - 1)
        if bx0 > bx1 or by0 > by1:
            continue
        mx = rec[g, 0]
        my = rec[g, 1]
        ca = rec[g, 2]
        cb = rec[g, 3]
        cc = rec[g, 4]
        op = rec[g, 5]
        i32 = np.int32(i)
        rows += by1 - by0 + 1
        for py in range(by0, by1 + 1):
            dy = yl[py - py0] - my
            base = np.uint64((py - py0) * TILE)
            for jj in range(tw):
                j = np.uint64(jj)
                p = base + j
                dx = xl[j] - mx
                power = -half * (ca * (dx * dx) + cc * (dy * dy)) - cb * dx * dy
                alpha = min(op * _fexp(power), alpha_max)
                t = trans[p]
                test_t = t * (one - alpha)
                ok = (alpha >= alpha_min) & (done[p] == 0)
                finished = ok & (test_t < t_min)  # would take T below 1e-4: stop before it
                contrib = ok & (test_t >= t_min)
                done[p] = done[p] | finished
                fbuf[j] = finished
                wrow[j] = alpha * t if contrib else zero
                trans[p] = test_t if contrib else t
                last[p] = i32 if contrib else last[p]
            for k in range(nf):
                f = rec[g, 6 + k]
                kb = np.uint64(k * NPIX) + base
                for jj in range(tw):
                    j = np.uint64(jj)
                    acc[kb + j] += f * wrow[j]
            for j in range(TILE):
                num_done += fbuf[j]
        if num_done == NPIX:
            break  # every pixel of the tile is saturated
    for py in range(py0, py1):
        row = (py - py0) * TILE - px0
        for px in range(px0, px1):
            p = row + px
            for k in range(nf):
                out_feat[py, px, k] = acc[k * NPIX + p]
            out_t[py, px] = trans[p]
            out_last[py, px] = last[p]
    return rows


@njit(parallel=True, **_JIT)
def composite_forward(
    rec, bbox, isect_gid, tile_offsets, tile_order, num_workers, width, height, tiles_x, tw,
    consts, out_feat, out_t, out_last, tile_work,
):  # fmt: skip
    """Front-to-back compositing, one 16x16 tile per task (see reference.composite_tiles).

    rec [N, 6 + C], bbox [N, 4] from prepare_splats; isect_gid [M], tile_offsets [T + 1]
    from the binning; tile_order: the tiles, most expensive first; num_workers workers take
    the next tile of that list as they finish one (an atomic counter: Numba's prange schedules
    statically, which stalls on uneven tiles or a busy core); tw = 16 (the tile width, passed at run time, see above); consts: [0.5, ALPHA_MAX,
    ALPHA_MIN, T_MIN, 1, 0] in the data dtype.
    Outputs: out_feat [H, W, C] = sum_i f_i a_i T_i; out_t [H, W] = T_final; out_last [H, W]
    int32 = index (into isect_gid) of the last intersection that contributed, -1 if none;
    tile_work [T] = tile rows processed (the backward's scheduling uses it as a cost).
    """
    nf = out_feat.shape[2]
    dt = consts.dtype
    n_tiles = tile_order.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(num_workers):
        trans = np.empty(NPIX, dt)
        acc = np.empty(NPIX * nf, dt)
        done = np.empty(NPIX, np.uint8)
        last = np.empty(NPIX, np.int32)
        wrow = np.empty(TILE, dt)
        fbuf = np.empty(TILE, np.uint8)
        xl = np.empty(TILE, dt)
        yl = np.empty(TILE, dt)
        while True:
            kt = _fetch_add_one(counter, 0)
            if kt >= n_tiles:
                break
            tile = tile_order[kt]
            tile_work[tile] = _forward_tile(
                tile, tw, rec, bbox, isect_gid, tile_offsets, width, height, tiles_x, consts,
                trans, acc, done, last, wrow, fbuf, xl, yl, out_feat, out_t, out_last,
            )  # fmt: skip


# Row buffer segments of the backward (each TILE long, one array so that LLVM sees
# constant distances between them): mask, 1/(1-alpha), T_i, alpha*T_i, G, o*G, dL/dalpha.
_RB_M, _RB_INV, _RB_T, _RB_W, _RB_G, _RB_RAW, _RB_VA = (k * TILE for k in range(7))
_RB_SIZE = 7 * TILE
# Per-lane gradient accumulators: opacity, mx, my, A, B, C, |mx|, |my|, then the features.
_NL = 8


@njit(**_JIT)
def _backward_tile(
    tile, tw, rec, bbox, isect_gid, rect, slot_offsets, tile_offsets, width, height, tiles_x,
    consts, out_t, out_last, v_feat, v_t, want_abs, slot_grad, slot_abs,
    trans, tfin, vtrans, behind, vpix, last, rowmax, xl, yl, rb, lanes,
):  # fmt: skip
    """Back-to-front gradient of one tile (see composite_backward)."""
    nf = v_feat.shape[2]
    half = consts[0]
    alpha_max = consts[1]
    alpha_min = consts[2]
    one = consts[4]
    zero = consts[5]
    ty = tile // tiles_x
    tx = tile - ty * tiles_x
    px0 = tx * TILE
    py0 = ty * TILE
    px1 = min(px0 + TILE, width)
    py1 = min(py0 + TILE, height)
    start = tile_offsets[tile]
    for j in range(TILE):
        xl[j] = px0 + j + 0.5
        yl[j] = py0 + j + 0.5
        rowmax[j] = -1
    trans[:] = one
    tfin[:] = one
    vtrans[:] = zero
    behind[:] = zero
    vpix[:] = zero
    last[:] = -1
    i_max = -1
    for py in range(py0, py1):
        r = py - py0
        for px in range(px0, px1):
            p = r * TILE + px - px0
            trans[p] = out_t[py, px]
            tfin[p] = out_t[py, px]
            vtrans[p] = v_t[py, px]
            lp = out_last[py, px]
            last[p] = lp
            rowmax[r] = max(rowmax[r], lp)
            for k in range(nf):
                vpix[k * NPIX + p] = v_feat[py, px, k]
        i_max = max(i_max, rowmax[r])
    for i in range(i_max, start - 1, -1):
        g = isect_gid[i]
        bx0 = max(bbox[g, 0], px0)
        bx1 = min(bbox[g, 2], px1 - 1)
        by0 = max(bbox[g, 1], py0)
        by1 = min(bbox[g, 3], py1 - 1)
        if bx0 > bx1 or by0 > by1:
            continue
        mx = rec[g, 0]
        my = rec[g, 1]
        ca = rec[g, 2]
        cb = rec[g, 3]
        cc = rec[g, 4]
        op = rec[g, 5]
        i32 = np.int32(i)
        lanes[:] = zero
        any_row = False
        for py in range(by0, by1 + 1):
            r = py - py0
            if rowmax[r] < i:
                continue  # every pixel of this row stopped before intersection i
            any_row = True
            dy = yl[r] - my
            base = np.uint64(r * TILE)
            # pass 1: alpha, the transmittance before i (T_i = T_{i+1} / (1 - alpha)), weight
            for jj in range(tw):
                j = np.uint64(jj)
                p = base + j
                dx = xl[j] - mx
                power = -half * (ca * (dx * dx) + cc * (dy * dy)) - cb * dx * dy
                gauss = _fexp(power)
                raw = op * gauss
                alpha = min(raw, alpha_max)
                m = (last[p] >= i32) & (alpha >= alpha_min)
                inv = one / (one - alpha)
                t_cur = trans[p]
                t_i = t_cur * inv
                rb[_RB_M + j] = one if m else zero
                rb[_RB_INV + j] = inv
                rb[_RB_T + j] = t_i
                rb[_RB_W + j] = alpha * t_i if m else zero
                rb[_RB_G + j] = gauss
                rb[_RB_RAW + j] = raw
                rb[_RB_VA + j] = zero
                trans[p] = t_i if m else t_cur
            # pass 2, per channel: dL/df and the f_i T_i - S/(1 - alpha) part of dL/dalpha
            for k in range(nf):
                f = rec[g, 6 + k]
                kb = np.uint64(k * NPIX) + base
                lb = np.uint64((_NL + k) * TILE)
                for jj in range(tw):
                    j = np.uint64(jj)
                    vk = vpix[kb + j]
                    s = behind[kb + j]
                    rb[_RB_VA + j] += rb[_RB_M + j] * (vk * (f * rb[_RB_T + j] - s * rb[_RB_INV + j]))
                    lanes[lb + j] += vk * rb[_RB_W + j]
                    behind[kb + j] = s + f * rb[_RB_W + j]
            # pass 3: the T_final term, then through alpha = o exp(power) to o, conic, centre
            for jj in range(tw):
                j = np.uint64(jj)
                p = base + j
                dx = xl[j] - mx
                raw = rb[_RB_RAW + j]
                v_alpha = rb[_RB_VA + j] - vtrans[p] * tfin[p] * rb[_RB_INV + j]
                ok = (rb[_RB_M + j] != zero) & (raw <= alpha_max)  # the clamp passes no gradient
                v_power = v_alpha * raw if ok else zero
                v_mx = v_power * (ca * dx + cb * dy)
                v_my = v_power * (cb * dx + cc * dy)
                lanes[j] += v_alpha * rb[_RB_G + j] if ok else zero
                lanes[TILE + j] += v_mx
                lanes[2 * TILE + j] += v_my
                lanes[3 * TILE + j] -= half * v_power * (dx * dx)
                lanes[4 * TILE + j] -= v_power * dx * dy
                lanes[5 * TILE + j] -= half * v_power * (dy * dy)
                lanes[6 * TILE + j] += abs(v_mx)
                lanes[7 * TILE + j] += abs(v_my)
        if not any_row:
            continue
        # Sum the lanes in a fixed order into the slot this (Gaussian, tile) pair owns. Lanes
        # outside the footprint box hold exact zeros, so only the box's columns are summed.
        span_x = rect[g, 2] - rect[g, 0] + 1
        s = slot_offsets[g] + (ty - rect[g, 1]) * span_x + (tx - rect[g, 0])
        # pairwise, fixed order: lanes[q*16] ends as the sum of quantity q's 16 lanes
        nq = _NL + nf
        h = TILE // 2
        while h >= 1:
            for q in range(nq):
                qb = np.uint64(q * TILE)
                for jj in range(h):
                    j = np.uint64(jj)
                    lanes[qb + j] += lanes[qb + j + np.uint64(h)]
            h //= 2
        slot_grad[s, 0] = lanes[TILE]
        slot_grad[s, 1] = lanes[2 * TILE]
        slot_grad[s, 2] = lanes[3 * TILE]
        slot_grad[s, 3] = lanes[4 * TILE]
        slot_grad[s, 4] = lanes[5 * TILE]
        slot_grad[s, 5] = lanes[0]
        for k in range(nf):
            slot_grad[s, 6 + k] = lanes[(_NL + k) * TILE]
        if want_abs:
            slot_abs[s, 0] = lanes[6 * TILE]
            slot_abs[s, 1] = lanes[7 * TILE]


@njit(parallel=True, **_JIT)
def composite_backward(
    rec, bbox, isect_gid, rect, slot_offsets, tile_offsets, tile_order, num_workers,
    width, height, tiles_x, tw, consts, out_t, out_last, v_feat, v_t, want_abs,
    slot_grad, slot_abs,
):  # fmt: skip
    """Back-to-front gradient of the compositing, one tile per task.

    Each pixel walks its contributors from the last one back to the first, recovering the
    transmittance before each by T_i = T_{i+1} / (1 - alpha_i) and keeping S = the features
    accumulated behind. For one Gaussian i and a pixel:
        dL/df_i     = v_f * alpha_i * T_i
        dL/dalpha_i = sum_k v_k (f_ik T_i - S_k / (1 - alpha_i)) - v_T T_final / (1 - alpha_i)
    then through alpha = min(0.99, o exp(power)) to the opacity, the conic and the centre.
    The sums over a tile's pixels go into the slot owned by the (Gaussian, tile) pair:
    slot_grad [M, 6 + C] (mx, my, A, B, C, opacity, features) and slot_abs [M, 2] (sums of
    |dL/dmeans2d| per pixel, when want_abs). Both must be zero-initialised. Slots of a
    Gaussian are contiguous (slot_offsets[g] + row-major position of the tile in rect[g]).
    """
    nf = v_feat.shape[2]
    dt = consts.dtype
    n_tiles = tile_order.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(num_workers):
        trans = np.empty(NPIX, dt)
        tfin = np.empty(NPIX, dt)
        vtrans = np.empty(NPIX, dt)
        behind = np.empty(NPIX * nf, dt)
        vpix = np.empty(NPIX * nf, dt)
        last = np.empty(NPIX, np.int32)
        rowmax = np.empty(TILE, np.int64)
        xl = np.empty(TILE, dt)
        yl = np.empty(TILE, dt)
        rb = np.empty(_RB_SIZE, dt)
        lanes = np.empty((_NL + nf) * TILE, dt)
        while True:
            kt = _fetch_add_one(counter, 0)
            if kt >= n_tiles:
                break
            tile = tile_order[kt]
            _backward_tile(
                tile, tw, rec, bbox, isect_gid, rect, slot_offsets, tile_offsets, width, height,
                tiles_x, consts, out_t, out_last, v_feat, v_t, want_abs, slot_grad, slot_abs,
                trans, tfin, vtrans, behind, vpix, last, rowmax, xl, yl, rb, lanes,
            )  # fmt: skip


@njit(parallel=True, **_JIT)
def finish_forward(out_feat, out_t, background, fconsts, image, alpha, depth):
    """Background, alpha and expected depth from the composited sums (reference.finish_output).

    out_feat [H, W, C] (colour channels, then depth), out_t [H, W] = T_final, background
    [C - 1] and fconsts = [1e-10, 1] in the data dtype. Writes image [H, W, C - 1] = sum c a T + T_final bg, alpha [H, W, 1] =
    1 - T_final and depth [H, W, 1] = (sum z a T) / max(alpha, 1e-10).
    """
    height, width, nf = out_feat.shape
    eps = fconsts[0]
    one = fconsts[1]
    for y in prange(height):
        for x in range(width):
            t = out_t[y, x]
            for c in range(nf - 1):
                image[y, x, c] = out_feat[y, x, c] + t * background[c]
            a = one - t
            alpha[y, x, 0] = a
            depth[y, x, 0] = out_feat[y, x, nf - 1] / max(a, eps)


@njit(parallel=True, **_JIT)
def finish_backward(out_feat, out_t, background, fconsts, v_image, v_alpha, v_depth, v_feat, v_t):
    """Gradient of finish_forward: v_feat [H, W, C] and v_t [H, W] from those of its outputs."""
    height, width, nf = out_feat.shape
    eps = fconsts[0]
    one = fconsts[1]
    for y in prange(height):
        for x in range(width):
            a = one - out_t[y, x]
            a_c = max(a, eps)
            vd = v_depth[y, x, 0]
            g = -v_alpha[y, x, 0]
            for c in range(nf - 1):
                v_feat[y, x, c] = v_image[y, x, c]
                g += v_image[y, x, c] * background[c]
            v_feat[y, x, nf - 1] = vd / a_c
            if a >= eps:  # clamp_min passes the gradient where alpha >= 1e-10
                g += vd * out_feat[y, x, nf - 1] / (a_c * a_c)
            v_t[y, x] = g


@njit(parallel=True, **_JIT)
def reduce_slots(slot_offsets, slot_grad, slot_abs, want_abs, v_means2d, v_conics, v_opacities, v_features, absgrad):
    """Per Gaussian, sum its slots in slot order (fixed, so the result is deterministic).

    Outputs [N, 2], [N, 3], [N], [N, C], and absgrad [N, 2] when want_abs. Sums in float64.
    """
    n = slot_offsets.shape[0] - 1
    nf = v_features.shape[1]
    for g in prange(n):
        s0 = slot_offsets[g]
        s1 = slot_offsets[g + 1]
        mx = 0.0
        my = 0.0
        a = 0.0
        b = 0.0
        c = 0.0
        o = 0.0
        for s in range(s0, s1):
            mx += slot_grad[s, 0]
            my += slot_grad[s, 1]
            a += slot_grad[s, 2]
            b += slot_grad[s, 3]
            c += slot_grad[s, 4]
            o += slot_grad[s, 5]
        v_means2d[g, 0] = mx
        v_means2d[g, 1] = my
        v_conics[g, 0] = a
        v_conics[g, 1] = b
        v_conics[g, 2] = c
        v_opacities[g] = o
        for k in range(nf):
            f = 0.0
            for s in range(s0, s1):
                f += slot_grad[s, 6 + k]
            v_features[g, k] = f
        if want_abs:
            ax = 0.0
            ay = 0.0
            for s in range(s0, s1):
                ax += slot_abs[s, 0]
                ay += slot_abs[s, 1]
            absgrad[g, 0] = ax
            absgrad[g, 1] = ay

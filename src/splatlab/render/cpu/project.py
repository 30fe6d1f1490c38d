"""Stage 1-3 of the CPU backend: EWA projection and SH colour, forward and backward.

    project_forward    per Gaussian: means2d, conics, depths, opacities, colours, radii and
                       the inclusive tile rectangle (x0, y0, x1, y1) it touches
    project_backward   per Gaussian: gradients of the raw parameters from those of the
                       projected quantities (the chain rule written by hand)
    ProjectGaussians   the torch.autograd.Function around both

Forward and backward share one helper, `_project_one` (camera point, Jacobian,
rotation, scales, 2D covariance), and `_sh_raw` for the colour, so the backward recomputes
the forward with the same code rather than a copy of it. Arithmetic is float64; results are
rounded to the data dtype when stored. See reference.project_gaussians and gaussian_colors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange

from ...constants import FOV_CLAMP, LAMBDA_FLOOR, RADIUS_SIGMAS, SH_C0
from ._common import _JIT, TILE, _alpha_box, _clamp_ratio, _floor_div_tile, _rotmat, _sh_basis_grads, _sh_bases
from ._threads import _np, numba_threads

# ---- the forward projection, shared by both kernels --------------------------------------------


@njit(**_JIT)
def _view_tuple(viewmat):
    """The 12 entries of the world->camera [3, 4] block, row major, as scalars."""
    return (
        viewmat[0, 0], viewmat[0, 1], viewmat[0, 2], viewmat[0, 3],
        viewmat[1, 0], viewmat[1, 1], viewmat[1, 2], viewmat[1, 3],
        viewmat[2, 0], viewmat[2, 1], viewmat[2, 2], viewmat[2, 3],
    )  # fmt: skip


@njit(**_JIT)
def _fov_limits(width, height, fx, fy, cx, cy):
    """Limits of x/z and y/z used for the Jacobian: (x_pos, x_neg, y_pos, y_neg)."""
    return (FOV_CLAMP * (width - cx) / fx, FOV_CLAMP * cx / fx, FOV_CLAMP * (height - cy) / fy, FOV_CLAMP * cy / fy)


@njit(**_JIT)
def _jacobian_rows(view, px, py, pz, near, far, fx, fy, lims):
    """Culling, the FOV clamp and A = J W (2 x 3) at camera-space point (px, py, pz).

    Returns in_range, z (1 where culled), (x/z clamped, inside?, y/z clamped, inside?, tx, ty),
    and A as 6 scalars (row major).
    """
    w00, w01, w02, _t0, w10, w11, w12, _t1, w20, w21, w22, _t2 = view
    in_range = (pz > near) and (pz < far)
    z = pz if in_range else 1.0
    cxr, free_x = _clamp_ratio(px / z, -lims[1], lims[0])
    cyr, free_y = _clamp_ratio(py / z, -lims[3], lims[2])
    tx = z * cxr
    ty = z * cyr
    zz2 = z * z
    j00 = fx / z
    j02 = -fx * tx / zz2
    j11 = fy / z
    j12 = -fy * ty / zz2
    a = (
        j00 * w00 + j02 * w20, j00 * w01 + j02 * w21, j00 * w02 + j02 * w22,
        j11 * w10 + j12 * w20, j11 * w11 + j12 * w21, j11 * w12 + j12 * w22,
    )  # fmt: skip
    return in_range, z, (cxr, free_x, cyr, free_y, tx, ty), a


@njit(**_JIT)
def _rotation_scale(quats, log_scales, i):
    """|q|, the unit quaternion, R (9 scalars, row major) and the scales of Gaussian i."""
    qw, qx, qy, qz = float(quats[i, 0]), float(quats[i, 1]), float(quats[i, 2]), float(quats[i, 3])
    qn = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
    qden = max(qn, 1e-12)
    nq = (qw / qden, qx / qden, qy / qden, qz / qden)
    rot = _rotmat(nq[0], nq[1], nq[2], nq[3])
    s = (math.exp(float(log_scales[i, 0])), math.exp(float(log_scales[i, 1])), math.exp(float(log_scales[i, 2])))
    return qn, nq, rot, s


@njit(**_JIT)
def _cov2d(a, rot, s):
    """V = A R, U = V diag(s) (2 x 3 each) and cov2d = U U^T as (a, b, c) before the filter."""
    a00, a01, a02, a10, a11, a12 = a
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = rot
    v = (
        a00 * r00 + a01 * r10 + a02 * r20, a00 * r01 + a01 * r11 + a02 * r21, a00 * r02 + a01 * r12 + a02 * r22,
        a10 * r00 + a11 * r10 + a12 * r20, a10 * r01 + a11 * r11 + a12 * r21, a10 * r02 + a11 * r12 + a12 * r22,
    )  # fmt: skip
    u = (v[0] * s[0], v[1] * s[1], v[2] * s[2], v[3] * s[0], v[4] * s[1], v[5] * s[2])
    ca0 = u[0] * u[0] + u[1] * u[1] + u[2] * u[2]
    cb = u[0] * u[3] + u[1] * u[4] + u[2] * u[5]
    cc0 = u[3] * u[3] + u[4] * u[4] + u[5] * u[5]
    return v, u, ca0, cb, cc0


@njit(**_JIT)
def _project_one(i, means, quats, log_scales, view, near, far, fx, fy, lims, eps2d):
    """The projection of Gaussian i up to its filtered 2D covariance: the ONE copy of the
    forward math, used by project_forward and recomputed by project_backward.

    Returns (mean, camera point, in_range, z, clamp, A, |q|, unit q, R, s, V, U,
    cov = (a0, b, c0, det_raw, a, c, det), valid), tuples as built by the helpers above.
    """
    m = (float(means[i, 0]), float(means[i, 1]), float(means[i, 2]))
    w00, w01, w02, t0, w10, w11, w12, t1, w20, w21, w22, t2 = view
    p = (
        w00 * m[0] + w01 * m[1] + w02 * m[2] + t0,
        w10 * m[0] + w11 * m[1] + w12 * m[2] + t1,
        w20 * m[0] + w21 * m[1] + w22 * m[2] + t2,
    )
    in_range, z, clamp, a = _jacobian_rows(view, p[0], p[1], p[2], near, far, fx, fy, lims)
    qn, nq, rot, s = _rotation_scale(quats, log_scales, i)
    v, u, ca0, cb, cc0 = _cov2d(a, rot, s)
    det_raw = ca0 * cc0 - cb * cb
    ca = ca0 + eps2d  # low-pass filter
    cc = cc0 + eps2d
    det = ca * cc - cb * cb
    valid = in_range and det > 0.0
    return m, p, in_range, z, clamp, a, qn, nq, rot, s, v, u, (ca0, cb, cc0, det_raw, ca, cc, det), valid


@njit(**_JIT)
def _view_dir(m, campos):
    """Unit direction from the camera centre to the mean, and the distance."""
    dx, dy, dz = m[0] - campos[0], m[1] - campos[1], m[2] - campos[2]
    dn = math.sqrt(dx * dx + dy * dy + dz * dz)
    dden = max(dn, 1e-12)
    return dx / dden, dy / dden, dz / dden, dn


@njit(**_JIT)
def _sh_raw(i, sh0, shN, num_bases, basis):
    """SH colour of Gaussian i from the basis values at its view direction (_sh_bases), before
    the +0.5 and the clamp at 0."""
    c0 = SH_C0 * float(sh0[i, 0, 0])
    c1 = SH_C0 * float(sh0[i, 0, 1])
    c2 = SH_C0 * float(sh0[i, 0, 2])
    for k in range(1, num_bases):
        bk = basis[k]
        c0 += bk * float(shN[i, k - 1, 0])
        c1 += bk * float(shN[i, k - 1, 1])
        c2 += bk * float(shN[i, k - 1, 2])
    return c0, c1, c2


@njit(**_JIT)
def _tile_rect(mx, my, r, ca, cb, cc, op, valid, width, height):
    """Tiles of the square [mean - r, mean + r] (as reference.tile_rect), cut to those the
    box where alpha >= 1/255 touches; returns (visible, x0, y0, x1, y1).

    A low-opacity or elongated Gaussian's square covers many tiles it cannot change; the images
    are those of the full square (the compositing skips alpha < 1/255). Arguments are the
    stored (dtype-rounded) values.
    """
    tiles_x = (width + TILE - 1) // TILE
    tiles_y = (height + TILE - 1) // TILE
    x0 = min(max(_floor_div_tile(mx - r), 0), tiles_x)
    x1 = min(max(_floor_div_tile(mx + r), -1), tiles_x - 1)
    y0 = min(max(_floor_div_tile(my - r), 0), tiles_y)
    y1 = min(max(_floor_div_tile(my + r), -1), tiles_y - 1)
    if not (valid and x0 <= x1 and y0 <= y1):
        return False, x0, y0, x1, y1
    bx0, by0, bx1, by1 = _alpha_box(mx, my, ca, cb, cc, op, width, height)
    x0 = max(x0, _floor_div_tile(bx0))
    x1 = min(x1, _floor_div_tile(bx1))
    y0 = max(y0, _floor_div_tile(by0))
    y1 = min(y1, _floor_div_tile(by1))
    if bx0 > bx1 or by0 > by1 or x0 > x1 or y0 > y1:
        x1, y1 = x0 - 1, y0 - 1  # no tile: an empty rectangle owns no slots
    return True, x0, y0, x1, y1


# ---- forward ---------------------------------------------------------------------------------


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
    """
    view = _view_tuple(viewmat)
    lims = _fov_limits(width, height, fx, fy, cx, cy)
    num_bases = (sh_degree + 1) * (sh_degree + 1)
    for i in prange(means.shape[0]):
        m, p, in_range, z, _c, _a, _qn, _nq, _r, _s, _v, _u, cov, valid = _project_one(
            i, means, quats, log_scales, view, near, far, fx, fy, lims, eps2d
        )
        _ca0, cb, _cc0, det_raw, ca, cc, det = cov
        detv = det if valid else 1.0
        conics[i, 0] = cc / detv
        conics[i, 1] = -cb / detv
        conics[i, 2] = ca / detv
        mid = 0.5 * (ca + cc)
        lambda_max = mid + math.sqrt(max(mid * mid - detv, LAMBDA_FLOOR))
        radius_f[i] = math.ceil(RADIUS_SIGMAS * math.sqrt(lambda_max))
        means2d[i, 0] = fx * p[0] / z + cx
        means2d[i, 1] = fy * p[1] / z + cy
        depths[i] = p[2]
        comp = math.sqrt(max(det_raw / max(det, 1e-30), 0.0)) if antialiased else 1.0
        opacities[i] = 1.0 / (1.0 + math.exp(-float(logit_opacities[i]))) * comp

        ux, uy, uz, _dn = _view_dir(m, campos)
        c0, c1, c2 = _sh_raw(i, sh0, shN, num_bases, _sh_bases(ux, uy, uz))
        colors[i, 0] = max(c0 + 0.5, 0.0)
        colors[i, 1] = max(c1 + 0.5, 0.0)
        colors[i, 2] = max(c2 + 0.5, 0.0)

        # from the stored (dtype-rounded) centre, radius, conic and opacity
        visible, x0, y0, x1, y1 = _tile_rect(
            means2d[i, 0], means2d[i, 1], radius_f[i], conics[i, 0], conics[i, 1], conics[i, 2], opacities[i],
            valid, width, height,
        )  # fmt: skip
        radii[i] = np.int32(radius_f[i]) if visible else 0
        rect[i, 0] = x0
        rect[i, 1] = y0
        rect[i, 2] = x1
        rect[i, 3] = y1


# ---- backward: one helper per link of the chain ------------------------------------------------


@njit(**_JIT)
def _conic_opacity_backward(g_conic, g_op, logit, antialiased, cov, valid):
    """conic = (c, -b, a) / det and opacity = sigmoid(logit) * compensation, backward.

    Returns the gradients of the filtered cov2d (a, b, c) and of the logit.
    """
    ca0, cb, cc0, det_raw, ca, cc, det = cov
    g_a, g_b, g_c = g_conic
    if valid:  # det held at 1 where not valid
        inv = 1.0 / det
        g_det = (-g_a * cc + g_b * cb - g_c * ca) * inv * inv
        g_ca = g_c * inv + g_det * cc
        g_cc = g_a * inv + g_det * ca
        g_cb = -g_b * inv - 2.0 * cb * g_det
    else:
        g_ca = g_c
        g_cc = g_a
        g_cb = -g_b
    sig = 1.0 / (1.0 + math.exp(-logit))
    g_sig = g_op
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
    return g_ca, g_cb, g_cc, g_sig * sig * (1.0 - sig)


@njit(**_JIT)
def _cov2d_backward(g_ca, g_cb, g_cc, a, rot, s, v, u):
    """cov2d = U U^T, U = V diag(s), V = A R, backward: (d log_scales, dL/dA, dL/dR)."""
    # read as a = [0,0], b = [0,1], c = [1,1]:  dL/dU = (G + G^T) U
    gu00 = 2.0 * g_ca * u[0] + g_cb * u[3]
    gu01 = 2.0 * g_ca * u[1] + g_cb * u[4]
    gu02 = 2.0 * g_ca * u[2] + g_cb * u[5]
    gu10 = g_cb * u[0] + 2.0 * g_cc * u[3]
    gu11 = g_cb * u[1] + 2.0 * g_cc * u[4]
    gu12 = g_cb * u[2] + 2.0 * g_cc * u[5]
    g_ls = ((gu00 * v[0] + gu10 * v[3]) * s[0], (gu01 * v[1] + gu11 * v[4]) * s[1], (gu02 * v[2] + gu12 * v[5]) * s[2])
    gv00, gv01, gv02 = gu00 * s[0], gu01 * s[1], gu02 * s[2]
    gv10, gv11, gv12 = gu10 * s[0], gu11 * s[1], gu12 * s[2]
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = rot
    a00, a01, a02, a10, a11, a12 = a
    # V = A R:  dL/dA = dL/dV R^T,  dL/dR = A^T dL/dV
    g_a = (
        gv00 * r00 + gv01 * r01 + gv02 * r02, gv00 * r10 + gv01 * r11 + gv02 * r12,
        gv00 * r20 + gv01 * r21 + gv02 * r22, gv10 * r00 + gv11 * r01 + gv12 * r02,
        gv10 * r10 + gv11 * r11 + gv12 * r12, gv10 * r20 + gv11 * r21 + gv12 * r22,
    )  # fmt: skip
    g_r = (
        a00 * gv00 + a10 * gv10, a00 * gv01 + a10 * gv11, a00 * gv02 + a10 * gv12,
        a01 * gv00 + a11 * gv10, a01 * gv01 + a11 * gv11, a01 * gv02 + a11 * gv12,
        a02 * gv00 + a12 * gv10, a02 * gv01 + a12 * gv11, a02 * gv02 + a12 * gv12,
    )  # fmt: skip
    return g_ls, g_a, g_r


@njit(**_JIT)
def _quat_backward(qn, nq, g_r):
    """Rotation matrix -> unit quaternion -> raw quaternion, backward."""
    nw, nx, ny, nz = nq
    gr00, gr01, gr02, gr10, gr11, gr12, gr20, gr21, gr22 = g_r
    gnw = 2.0 * (-nz * gr01 + ny * gr02 + nz * gr10 - nx * gr12 - ny * gr20 + nx * gr21)
    gnx = 2.0 * (ny * gr01 + nz * gr02 + ny * gr10 - 2.0 * nx * gr11 - nw * gr12
                 + nz * gr20 + nw * gr21 - 2.0 * nx * gr22)  # fmt: skip
    gny = 2.0 * (-2.0 * ny * gr00 + nx * gr01 + nw * gr02 + nx * gr10 + nz * gr12
                 - nw * gr20 + nz * gr21 - 2.0 * ny * gr22)  # fmt: skip
    gnz = 2.0 * (-2.0 * nz * gr00 - nw * gr01 + nx * gr02 + nw * gr10 - 2.0 * nz * gr11
                 + ny * gr12 + nx * gr20 + ny * gr21)  # fmt: skip
    if qn > 1e-12:
        dot = nw * gnw + nx * gnx + ny * gny + nz * gnz
        return (gnw - nw * dot) / qn, (gnx - nx * dot) / qn, (gny - ny * dot) / qn, (gnz - nz * dot) / qn
    return gnw / 1e-12, gnx / 1e-12, gny / 1e-12, gnz / 1e-12


@njit(**_JIT)
def _point_backward(view, fx, fy, p, in_range, z, clamp, g_a, g_m2d, g_depth):
    """A = J W, means2d = (fx px / z + cx, fy py / z + cy), depth = pz, p = W m + t, backward:
    the gradient of the mean through the camera-space point."""
    w00, w01, w02, _t0, w10, w11, w12, _t1, w20, w21, w22, _t2 = view
    cxr, free_x, cyr, free_y, tx, ty = clamp
    # only J's entries 00, 02, 11, 12 vary
    gj00 = g_a[0] * w00 + g_a[1] * w01 + g_a[2] * w02
    gj02 = g_a[0] * w20 + g_a[1] * w21 + g_a[2] * w22
    gj11 = g_a[3] * w10 + g_a[4] * w11 + g_a[5] * w12
    gj12 = g_a[3] * w20 + g_a[4] * w21 + g_a[5] * w22
    zz2 = z * z
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
    gmx2, gmy2 = g_m2d
    g_px += gmx2 * fx / z
    g_py += gmy2 * fy / z
    g_z += -(gmx2 * fx * p[0] + gmy2 * fy * p[1]) / zz2
    g_pz = g_z if in_range else 0.0
    g_pz += g_depth
    return (
        w00 * g_px + w10 * g_py + w20 * g_pz,
        w01 * g_px + w11 * g_py + w21 * g_pz,
        w02 * g_px + w12 * g_py + w22 * g_pz,
    )


@njit(**_JIT)
def _color_backward(i, sh0, shN, num_bases, m, campos, v_colors, g_sh0, g_shN):
    """colour = max(SH(dir) + 0.5, 0), backward: writes g_sh0[i], g_shN[i] and returns the
    gradient of the mean through the normalised view direction."""
    ux, uy, uz, dn = _view_dir(m, campos)
    basis = _sh_bases(ux, uy, uz)
    r0, r1, r2 = _sh_raw(i, sh0, shN, num_bases, basis)  # for the clamp's mask
    v0 = float(v_colors[i, 0]) if r0 + 0.5 >= 0.0 else 0.0
    v1 = float(v_colors[i, 1]) if r1 + 0.5 >= 0.0 else 0.0
    v2 = float(v_colors[i, 2]) if r2 + 0.5 >= 0.0 else 0.0
    g_sh0[i, 0, 0] = SH_C0 * v0
    g_sh0[i, 0, 1] = SH_C0 * v1
    g_sh0[i, 0, 2] = SH_C0 * v2
    for k in range(num_bases - 1, shN.shape[1]):  # coefficients above the degree in use
        for c in range(3):
            g_shN[i, k, c] = 0.0
    if num_bases == 1:
        return 0.0, 0.0, 0.0
    bgx, bgy, bgz = _sh_basis_grads(ux, uy, uz)
    gux = 0.0
    guy = 0.0
    guz = 0.0
    for k in range(1, num_bases):
        bk = basis[k]
        g_shN[i, k - 1, 0] = bk * v0
        g_shN[i, k - 1, 1] = bk * v1
        g_shN[i, k - 1, 2] = bk * v2
        vk = float(shN[i, k - 1, 0]) * v0 + float(shN[i, k - 1, 1]) * v1 + float(shN[i, k - 1, 2]) * v2
        gux += vk * bgx[k]
        guy += vk * bgy[k]
        guz += vk * bgz[k]
    if dn > 1e-12:
        dot = ux * gux + uy * guy + uz * guz
        return (gux - ux * dot) / dn, (guy - uy * dot) / dn, (guz - uz * dot) / dn
    return gux / 1e-12, guy / 1e-12, guz / 1e-12


@njit(**_JIT)
def _no_upstream_gradient(i, v_means2d, v_conics, v_depths, v_opacities, v_colors):
    """Whether every gradient arriving at Gaussian i's projected values is exactly zero."""
    return (v_means2d[i, 0] == 0.0 and v_means2d[i, 1] == 0.0 and v_conics[i, 0] == 0.0
            and v_conics[i, 1] == 0.0 and v_conics[i, 2] == 0.0 and v_depths[i] == 0.0
            and v_opacities[i] == 0.0 and v_colors[i, 0] == 0.0 and v_colors[i, 1] == 0.0
            and v_colors[i, 2] == 0.0)


@njit(parallel=True, **_JIT)
def project_backward(
    means, quats, log_scales, logit_opacities, sh0, shN, sh_degree,
    viewmat, campos, fx, fy, cx, cy, width, height, near, far, eps2d, antialiased,
    v_means2d, v_conics, v_depths, v_opacities, v_colors,
    g_means, g_quats, g_log_scales, g_logit_opacities, g_sh0, g_shN,
):  # fmt: skip
    """Gradients of the raw parameters, given those of project_forward's outputs.

    Recomputes the forward with `_project_one`, then the chain rule link by link:
    conic (and the anti-aliasing compensation) -> 2D covariance -> U = J W R S -> J, R, S
    -> camera-space point, quaternion, log-scales; SH colour -> coefficients and the view
    direction -> means. Masks mirror the reference's torch.where / clamp semantics.
    Every output element is written (zero for coefficients above sh_degree), so the outputs
    need no zero-filling: at 150k Gaussians and degree 3 that fill cost ~2 ms per step.
    """
    view = _view_tuple(viewmat)
    lims = _fov_limits(width, height, fx, fy, cx, cy)
    num_bases = (sh_degree + 1) * (sh_degree + 1)
    for i in prange(means.shape[0]):
        if _no_upstream_gradient(i, v_means2d, v_conics, v_depths, v_opacities, v_colors):
            # Culled, or in no tile: every link of the chain multiplies zero. Skipping the
            # recomputation is exact (and spares the 20-50% of a real capture out of view).
            g_logit_opacities[i] = 0.0
            for k in range(3):
                g_log_scales[i, k] = 0.0
                g_means[i, k] = 0.0
            for k in range(4):
                g_quats[i, k] = 0.0
            for c in range(3):
                g_sh0[i, 0, c] = 0.0
                for k in range(shN.shape[1]):
                    g_shN[i, k, c] = 0.0
            continue
        m, p, in_range, z, clamp, a, qn, nq, rot, s, v, u, cov, valid = _project_one(
            i, means, quats, log_scales, view, near, far, fx, fy, lims, eps2d
        )
        g_conic = (float(v_conics[i, 0]), float(v_conics[i, 1]), float(v_conics[i, 2]))
        g_ca, g_cb, g_cc, g_logit = _conic_opacity_backward(
            g_conic, float(v_opacities[i]), float(logit_opacities[i]), antialiased, cov, valid
        )
        g_logit_opacities[i] = g_logit
        g_ls, g_a, g_r = _cov2d_backward(g_ca, g_cb, g_cc, a, rot, s, v, u)
        for k in range(3):
            g_log_scales[i, k] = g_ls[k]
        g_q = _quat_backward(qn, nq, g_r)
        for k in range(4):
            g_quats[i, k] = g_q[k]
        g_m2d = (float(v_means2d[i, 0]), float(v_means2d[i, 1]))
        gm = _point_backward(view, fx, fy, p, in_range, z, clamp, g_a, g_m2d, float(v_depths[i]))
        gc = _color_backward(i, sh0, shN, num_bases, m, campos, v_colors, g_sh0, g_shN)
        for k in range(3):
            g_means[i, k] = gm[k] + gc[k]


# ---- the autograd Function -------------------------------------------------------------------


@dataclass
class CameraParams:
    """What the projection kernels need from a Camera, already in kernel-ready form."""

    viewmat: np.ndarray  # [4, 4] float64 (rounded to the data dtype first, as the reference does)
    campos: np.ndarray  # [3] float64 camera centre in world space (likewise rounded)
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    near: float
    far: float
    eps2d: float
    antialiased: bool
    sh_degree: int
    num_threads: int

    def args(self):
        return (
            self.sh_degree, self.viewmat, self.campos, self.fx, self.fy, self.cx, self.cy,
            self.width, self.height, self.near, self.far, self.eps2d, self.antialiased,
        )  # fmt: skip


class ProjectGaussians(torch.autograd.Function):
    """Raw parameters -> screen-space Gaussians; backward by project_backward.

    Inputs means [N, 3], quats [N, 4], log_scales [N, 3], logit_opacities [N], sh0 [N, 1, 3],
    shN [N, K-1, 3]; outputs means2d [N, 2], conics [N, 3], depths [N], opacities [N],
    colors [N, 3], and (not differentiable) radii [N] int32, rect [N, 4] int32.
    """

    @staticmethod
    def forward(ctx, means, quats, log_scales, logit_opacities, sh0, shN, cam: CameraParams):
        n = means.shape[0]
        dtype = means.dtype
        means2d = torch.empty(n, 2, dtype=dtype)  # [N, 2]
        conics = torch.empty(n, 3, dtype=dtype)  # [N, 3]
        depths = torch.empty(n, dtype=dtype)  # [N]
        opacities = torch.empty(n, dtype=dtype)  # [N]
        colors = torch.empty(n, 3, dtype=dtype)  # [N, 3]
        radius_f = torch.empty(n, dtype=dtype)  # [N] scratch
        radii = torch.empty(n, dtype=torch.int32)  # [N]
        rect = torch.empty(n, 4, dtype=torch.int32)  # [N, 4] tile rectangle x0, y0, x1, y1
        if n:
            with numba_threads(cam.num_threads):
                project_forward(
                    _np(means), _np(quats), _np(log_scales), _np(logit_opacities), _np(sh0), _np(shN),
                    *cam.args(),
                    means2d.numpy(), conics.numpy(), depths.numpy(), opacities.numpy(), colors.numpy(),
                    radius_f.numpy(), radii.numpy(), rect.numpy(),
                )  # fmt: skip
        ctx.save_for_backward(means, quats, log_scales, logit_opacities, sh0, shN)
        ctx.cam = cam
        ctx.mark_non_differentiable(radii, rect)
        return means2d, conics, depths, opacities, colors, radii, rect

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, v_opacities, v_colors, _v_radii, _v_rect):
        means, quats, log_scales, logit_opacities, sh0, shN = ctx.saved_tensors
        cam = ctx.cam
        g_means = torch.empty_like(means)
        g_quats = torch.empty_like(quats)
        g_log_scales = torch.empty_like(log_scales)
        g_logit = torch.empty_like(logit_opacities)
        g_sh0 = torch.empty_like(sh0)
        g_shN = torch.empty_like(shN)  # every element written by project_backward
        if means.shape[0]:
            with numba_threads(cam.num_threads):
                project_backward(
                    _np(means), _np(quats), _np(log_scales), _np(logit_opacities), _np(sh0), _np(shN),
                    *cam.args(),
                    _np(v_means2d), _np(v_conics), _np(v_depths), _np(v_opacities), _np(v_colors),
                    g_means.numpy(), g_quats.numpy(), g_log_scales.numpy(), g_logit.numpy(),
                    g_sh0.numpy(), g_shN.numpy(),
                )  # fmt: skip
        return g_means, g_quats, g_log_scales, g_logit, g_sh0, g_shN, None

"""Fused SSIM forward and backward for CPU float32 images (Numba).

The readable twin is losses._ssim_map_torch: the same Gaussian-weighted statistics with a
separable window and zero padding ('same' size), tested against this one forward and backward.
Here the five statistics (mu_x, mu_y, E[x^2], E[y^2], E[xy]) are blurred in one pass over
the images, and the forward keeps the three partial derivatives of SSIM that the backward
needs, so the backward is one more blur of three maps:

    S = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_xx + s_yy + C2)),
    s_xx = E[x^2] - mu_x^2, s_yy = E[y^2] - mu_y^2, s_xy = E[xy] - mu_x mu_y
    dL/dx = blur(g dS/dmu_x) + 2 x blur(g dS/dE[x^2]) + y blur(g dS/dE[xy])

(the zero-padded blur with a symmetric window is its own adjoint). Gradients flow to x only:
the target y is a constant in training. Rows are independent tasks, so results do not depend
on the number of threads.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from ._common import _JIT
from ._threads import _np, numba_threads


@njit(parallel=True, **_JIT)
def _blur_stack(src, w, tmp, dst):
    """Separable zero-padded blur of every plane of src [S, P, H, W] into dst (same shape).

    w [K] the 1D window (K odd), tmp a scratch like src: rows (vertical) first, then columns,
    as losses._blur does.
    """
    ns, npl, h, wd = src.shape
    k = w.shape[0]
    r = k // 2
    for task in prange(npl * h):
        p = task // h
        i = task - p * h
        for s in range(ns):
            acc = tmp[s, p, i]  # [W] row views: unit stride, so the j loops vectorise
            acc[:] = 0.0
            for q in range(max(0, r - i), min(k, h + r - i)):
                row = src[s, p, i + q - r]
                wq = w[q]
                for j in range(wd):
                    acc[j] += wq * row[j]
    for task in prange(npl * h):
        p = task // h
        i = task - p * h
        for s in range(ns):
            acc = dst[s, p, i]
            row = tmp[s, p, i]
            acc[:] = 0.0
            for q in range(k):
                wq = w[q]
                lo = max(0, r - q)  # output columns whose input column j + q - r is inside
                hi = min(wd, wd + r - q)
                out_seg = acc[lo:hi]
                in_seg = row[lo + q - r : hi + q - r]  # views indexed from 0: no negative-index
                for j in range(hi - lo):  # wraparound code, so LLVM vectorises the loop
                    out_seg[j] += wq * in_seg[j]


@njit(parallel=True, **_JIT)
def _ssim_pointwise(stats, c, smap, deriv):
    """SSIM map [P, H, W] and dS/d(mu_x, E[x^2], E[xy]) into deriv [3, P, H, W] from the
    blurred statistics [5, P, H, W]; c = [C1, C2, 1, 2] in the data dtype."""
    c1, c2, one, two = c[0], c[1], c[2], c[3]
    _, npl, h, wd = stats.shape
    for task in prange(npl * h):
        p = task // h
        i = task - p * h
        for j in range(wd):
            mx = stats[0, p, i, j]
            my = stats[1, p, i, j]
            sxx = stats[2, p, i, j] - mx * mx
            syy = stats[3, p, i, j] - my * my
            sxy = stats[4, p, i, j] - mx * my
            a1 = two * mx * my + c1
            a2 = two * sxy + c2
            b1 = mx * mx + my * my + c1
            b2 = sxx + syy + c2
            den = b1 * b2
            s = a1 * a2 / den
            smap[p, i, j] = s
            deriv[0, p, i, j] = (two * my * (a2 - a1)) / den - s * two * mx * (one / b1 - one / b2)
            deriv[1, p, i, j] = -s / b2
            deriv[2, p, i, j] = two * a1 / den


@njit(parallel=True, **_JIT)
def _scale_stack(deriv, g, out):
    """out[s] = g * deriv[s] for the three derivative maps."""
    ns, npl, h, wd = deriv.shape
    for task in prange(npl * h):
        p = task // h
        i = task - p * h
        for s in range(ns):
            for j in range(wd):
                out[s, p, i, j] = g[p, i, j] * deriv[s, p, i, j]


@njit(parallel=True, **_JIT)
def _combine_grad(blurred, x, y, two, out):
    """dL/dx = blur(g dS/dmu_x) + 2 x blur(g dS/dE[x^2]) + y blur(g dS/dE[xy])."""
    npl, h, wd = x.shape
    for task in prange(npl * h):
        p = task // h
        i = task - p * h
        for j in range(wd):
            out[p, i, j] = blurred[0, p, i, j] + two * x[p, i, j] * blurred[1, p, i, j] + y[p, i, j] * blurred[2, p, i, j]


class FusedSSIM(torch.autograd.Function):
    """SSIM map of float32 planes x, y [P, H, W] -> [P, H, W]; gradient to x only."""

    @staticmethod
    def forward(ctx, x, y, window: torch.Tensor, c1: float, c2: float):
        xn, yn = _np(x), _np(y)
        w = _np(window.to(torch.float32))
        stack = np.stack([xn, yn, xn * xn, yn * yn, xn * yn])  # [5, P, H, W]
        stats = np.empty_like(stack)
        deriv = np.empty((3,) + xn.shape, np.float32)  # [3, P, H, W]
        smap = torch.empty(x.shape, dtype=torch.float32)
        c = np.array([c1, c2, 1.0, 2.0], np.float32)
        with numba_threads(torch.get_num_threads()):
            _blur_stack(stack, w, np.empty_like(stack), stats)
            _ssim_pointwise(stats, c, smap.numpy(), deriv)
        ctx.save_for_backward(x, y)  # autograd then refuses a backward after an in-place change
        ctx.state = (w, deriv)
        return smap

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        xn, yn = _np(x), _np(y)
        w, deriv = ctx.state
        scaled = np.empty_like(deriv)
        blurred = np.empty_like(deriv)
        grad = torch.empty(xn.shape, dtype=torch.float32)
        with numba_threads(torch.get_num_threads()):
            _scale_stack(deriv, _np(g.to(torch.float32)), scaled)
            _blur_stack(scaled, w, np.empty_like(scaled), blurred)
            _combine_grad(blurred, xn, yn, np.float32(2.0), grad.numpy())
        return grad, None, None, None, None


def fused_ssim_map(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor, c1: float, c2: float) -> torch.Tensor:
    """SSIM map [B, C, H, W] of float32 CPU images x, y [B, C, H, W] (window: the 1D weights)."""
    b, c, h, w = x.shape
    planes = FusedSSIM.apply(x.contiguous().view(b * c, h, w), y.detach().contiguous().view(b * c, h, w),
                             window, c1, c2)  # fmt: skip
    return planes.view(b, c, h, w)

"""torch.autograd.Functions around the Numba kernels: projection and compositing.

Two Functions, like the 3DGS CUDA rasterizer's preprocess and render stages:

    ProjectGaussians   raw parameters -> means2d, conics, depths, opacities, colours (+ radii,
                       tile rectangles, not differentiable)
    CompositeTiles     means2d, conics, opacities, colours, depths + binning
                       -> image [H, W, 3], alpha [H, W, 1], expected depth [H, W, 1]
                       (compositing kernels generic in the number of feature channels)

`means2d` is an intermediate tensor between the two, so `retain_grad()` on it gives the
screen-space gradient densification reads; with `absgrad`, CompositeTiles.backward also
attaches the sum over pixels of |dL/dmeans2d| to that tensor as `.absgrad` [N, 2].

Tensors cross into Numba as zero-copy `.numpy()` views of contiguous CPU tensors.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from dataclasses import dataclass

import numba
import numpy as np
import torch

from ...constants import ALPHA_MAX, ALPHA_MIN, T_MIN
from ..settings import TILE_SIZE
from . import kernels

assert kernels.TILE == TILE_SIZE


def _np(t: torch.Tensor) -> np.ndarray:
    """Zero-copy NumPy view of a detached, contiguous CPU tensor."""
    return t.detach().contiguous().numpy()


_pool_lock = threading.Lock()
_pool_started = False


def start_thread_pool() -> None:
    """Start Numba's thread pool, telling an OpenMP runtime to sleep rather than spin.

    PyTorch runs its own OpenMP pool. By default OpenMP workers spin for a while after each
    parallel region; with two pools in one process, the spinning workers of one steal the
    cores the other needs, which hurts most on small or busy machines.
    OMP_WAIT_POLICY=PASSIVE is read once, when the runtime Numba loads starts, so it is set
    only for that moment (unless the user chose a policy) and the environment is restored.
    Numba's own choice of threading layer (tbb, omp, workqueue) is left alone.
    """
    global _pool_started
    if _pool_started:
        return
    with _pool_lock:
        if _pool_started:
            return
        try:
            from numba.np.ufunc import parallel

            if not getattr(parallel, "_is_initialized", True):
                if "OMP_WAIT_POLICY" in os.environ:
                    parallel._launch_threads()
                else:
                    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
                    try:
                        parallel._launch_threads()
                    finally:
                        os.environ.pop("OMP_WAIT_POLICY", None)
        except (ImportError, AttributeError):  # a Numba without these internals: its defaults
            pass
        _pool_started = True


@contextlib.contextmanager
def numba_threads(n: int):
    """Run Numba's parallel loops on `n` threads (clamped to NUMBA_NUM_THREADS), then restore."""
    start_thread_pool()
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(previous)


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
    """Raw parameters -> screen-space Gaussians; backward by project_backward."""

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
                kernels.project_forward(
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
        g_sh0 = torch.zeros_like(sh0)
        g_shN = torch.zeros_like(shN)
        if means.shape[0]:
            with numba_threads(cam.num_threads):
                kernels.project_backward(
                    _np(means), _np(quats), _np(log_scales), _np(logit_opacities), _np(sh0), _np(shN),
                    *cam.args(),
                    _np(v_means2d), _np(v_conics), _np(v_depths), _np(v_opacities), _np(v_colors),
                    g_means.numpy(), g_quats.numpy(), g_log_scales.numpy(), g_logit.numpy(),
                    g_sh0.numpy(), g_shN.numpy(),
                )  # fmt: skip
        return g_means, g_quats, g_log_scales, g_logit, g_sh0, g_shN, None


@dataclass
class TileBinning:
    """Tile-Gaussian intersections grouped by tile, front to back inside a tile."""

    isect_gid: np.ndarray  # [M] int32 Gaussian of each intersection
    tile_offsets: np.ndarray  # [T + 1] int64: tile t owns isect_gid[off[t]:off[t+1]]
    slot_offsets: np.ndarray  # [N + 1] int64: Gaussian g owns gradient slots off[g]:off[g+1]
    rect: np.ndarray  # [N, 4] int32 tile rectangle of each Gaussian (x0, y0, x1, y1)
    tiles_x: int
    tiles_y: int

    @property
    def num_intersections(self) -> int:
        return int(self.isect_gid.shape[0])


def bin_gaussians(radii: torch.Tensor, rect: torch.Tensor, depths: torch.Tensor, width: int, height: int,
                  num_threads: int) -> TileBinning:  # fmt: skip
    """Duplicate each visible Gaussian once per tile it touches; order by (tile, depth).

    Same order as reference.bin_gaussians: depth ties keep the Gaussians' input order.
    """
    tiles_x = (width + TILE_SIZE - 1) // TILE_SIZE
    tiles_y = (height + TILE_SIZE - 1) // TILE_SIZE
    n_tiles = tiles_x * tiles_y
    radii_np, rect_np = radii.numpy(), rect.numpy()
    depths_np = _np(depths)
    # Positive floats order like their bit patterns; visible Gaussians have depth > near > 0.
    if depths_np.dtype == np.float32:
        keys, key_bits = depths_np.view(np.int32).astype(np.int64), 31
    else:
        keys, key_bits = depths_np.view(np.int64), 63
    with numba_threads(num_threads) as n_threads:
        order = kernels.sort_visible_by_depth(keys, radii_np, key_bits)  # [V] int32
        slot_offsets = kernels.intersection_offsets(radii_np, rect_np)  # [N + 1]
        num_isect = int(slot_offsets[-1])
        isect_gid = np.empty(num_isect, np.int32)
        tile_offsets = np.empty(n_tiles + 1, np.int64)
        num_chunks = max(1, min(4 * n_threads, order.shape[0] // 2048))
        kernels.bin_intersections(order, rect_np, n_tiles, tiles_x, num_chunks, isect_gid, tile_offsets)
    return TileBinning(isect_gid, tile_offsets, slot_offsets, rect_np, tiles_x, tiles_y)


def _longest_first(cost: np.ndarray) -> np.ndarray:
    """Tile indices by decreasing cost (ties by index): the order workers take tiles in."""
    return np.argsort(-cost, kind="stable")


def _consts(dtype: np.dtype) -> np.ndarray:
    return np.array([0.5, ALPHA_MAX, ALPHA_MIN, T_MIN, 1.0, 0.0], dtype=dtype)


class CompositeTiles(torch.autograd.Function):
    """Front-to-back alpha compositing of binned splats, then background, alpha and depth.

    Inputs means2d [N, 2], conics [N, 3], opacities [N], colors [N, 3], depths [N];
    outputs image [H, W, 3], alpha [H, W, 1], depth [H, W, 1], as reference.finish_output
    makes them. The compositing kernels are generic in the number of feature channels C
    (here C = 4: rgb and depth).
    """

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, depths, binning: TileBinning, width: int, height: int,
                background, num_threads: int, absgrad: bool):  # fmt: skip
        n, nc = colors.shape
        nf = nc + 1
        dtype = colors.dtype
        np_dtype = np.dtype(str(dtype).replace("torch.", ""))
        out_feat = np.empty((height, width, nf), np_dtype)  # [H, W, C] sum f a T
        out_t = np.empty((height, width), np_dtype)  # [H, W] T_final
        out_last = np.empty((height, width), np.int32)  # [H, W]
        rec = np.empty((n, kernels.SLOT_FEATURES + nf), np_dtype)  # [N, 6 + C]
        bbox = np.empty((n, 4), np.int32)  # [N, 4]
        consts = _consts(np_dtype)
        fconsts = np.array([1e-10, 1.0], np_dtype)
        bg = np.asarray(background, dtype=np_dtype)  # [C - 1]
        n_tiles = binning.tiles_x * binning.tiles_y
        tile_work = np.zeros(n_tiles, np.int64)
        image = torch.empty(height, width, nc, dtype=dtype)
        alpha = torch.empty(height, width, 1, dtype=dtype)
        depth = torch.empty(height, width, 1, dtype=dtype)
        with numba_threads(num_threads) as n_threads:
            if n:
                kernels.prepare_splats(
                    _np(means2d), _np(conics), _np(opacities), _np(colors), _np(depths), width, height, rec, bbox
                )
            kernels.composite_forward(
                rec, bbox, binning.isect_gid, binning.tile_offsets, _longest_first(np.diff(binning.tile_offsets)),
                n_threads, width, height, binning.tiles_x, TILE_SIZE, consts, out_feat, out_t, out_last, tile_work,
            )  # fmt: skip
            kernels.finish_forward(out_feat, out_t, bg, fconsts, image.numpy(), alpha.numpy(), depth.numpy())
        ctx.state = (rec, bbox, binning, out_feat, out_t, out_last, tile_work, consts, fconsts, bg,
                     width, height, num_threads)  # fmt: skip
        ctx.absgrad = absgrad
        ctx.means2d_ref = weakref.ref(means2d)
        return image, alpha, depth

    @staticmethod
    def backward(ctx, v_image, v_alpha, v_depth):
        (rec, bbox, binning, out_feat, out_t, out_last, tile_work, consts, fconsts, bg,
         width, height, num_threads) = ctx.state  # fmt: skip
        n, nf = rec.shape[0], rec.shape[1] - kernels.SLOT_FEATURES
        dtype = v_image.dtype
        num_slots = binning.num_intersections
        v_feat = np.empty((height, width, nf), rec.dtype)  # [H, W, C]
        v_t = np.empty((height, width), rec.dtype)  # [H, W]
        slot_grad = np.zeros((num_slots, kernels.SLOT_FEATURES + nf), rec.dtype)  # [M, 6 + C]
        slot_abs = np.zeros((num_slots if ctx.absgrad else 0, 2), rec.dtype)  # [M, 2]
        v_means2d = torch.empty(n, 2, dtype=dtype)
        v_conics = torch.empty(n, 3, dtype=dtype)
        v_opacities = torch.empty(n, dtype=dtype)
        v_features = torch.empty(n, nf, dtype=dtype)
        absgrad = torch.zeros(n if ctx.absgrad else 0, 2, dtype=dtype)
        with numba_threads(num_threads) as n_threads:
            kernels.finish_backward(
                out_feat, out_t, bg, fconsts, _np(v_image), _np(v_alpha), _np(v_depth), v_feat, v_t
            )
            kernels.composite_backward(
                rec, bbox, binning.isect_gid, binning.rect, binning.slot_offsets, binning.tile_offsets,
                _longest_first(tile_work), n_threads, width, height, binning.tiles_x, TILE_SIZE, consts,
                out_t, out_last, v_feat, v_t, ctx.absgrad, slot_grad, slot_abs,
            )  # fmt: skip
            if n:
                kernels.reduce_slots(
                    binning.slot_offsets, slot_grad, slot_abs, ctx.absgrad,
                    v_means2d.numpy(), v_conics.numpy(), v_opacities.numpy(), v_features.numpy(),
                    absgrad.numpy(),
                )  # fmt: skip
        if ctx.absgrad:
            target = ctx.means2d_ref()
            if target is not None:
                # Accumulates across backward calls, like .grad does.
                previous = getattr(target, "absgrad", None)
                target.absgrad = absgrad if previous is None else previous + absgrad
        v_colors, v_depths = v_features[:, : nf - 1], v_features[:, nf - 1]
        return v_means2d, v_conics, v_opacities, v_colors, v_depths, None, None, None, None, None, None

"""torch.autograd.Functions around the Triton kernels, and the binning between them.

Two Functions, like the cpu backend's (render/cpu/project.py, composite.py):

    ProjectGaussians   raw parameters -> means2d, conics, depths, opacities, colours (+ radii
                       and tile rectangles, not differentiable)
    CompositeTiles     means2d, conics, opacities, features [N, C] + binning
                       -> composited features [H, W, C] and T_final [H, W]

Background, alpha and expected depth are then plain torch ops (render/triton/__init__.py).
`means2d` sits between the two, so `retain_grad()` on it gives the screen-space gradient;
with absgrad, CompositeTiles.backward attaches sum over pixels |dL/dmeans2d| as `.absgrad`.

All tensors stay on their device; the one host synchronisation of a render is reading the
number of tile-Gaussian pairs, which sizes the binning buffers.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
import triton

from ..settings import TILE_SIZE
from . import memory
from .project_kernels import project_backward_kernel, project_forward_kernel
from .raster_kernels import (
    SLOT_BASE,
    composite_backward_kernel,
    composite_forward_kernel,
    emit_intersections_kernel,
    reduce_slots_kernel,
)

PROJECT_BLOCK = 128  # Gaussians per program of the projection kernels
PAIR_BLOCK = 1024  # pairs per program of the binning kernel
REDUCE_BLOCK = 128  # Gaussians per program of the slot reduction
NUM_WARPS = 4
# Compositing: one program per tile, 8 warps = one thread per pixel; pairs taken CHUNK at a
# time. Chosen from the register counts of the sm_90 build (ptxas, see docs/gpu.md): with
# CHUNK = 8 the backward needs 173 registers a thread and does not spill; 16 spills.
CHUNK = 8
COMPOSITE_WARPS = 8


@dataclass
class ProjectionMeta:
    """What the projection kernels need besides tensors."""

    cam: torch.Tensor  # [26] camera values in the data dtype (project_kernels.camera_tensor)
    num_bases: int  # (sh_degree + 1)^2 coefficients used per channel
    antialiased: bool
    width: int
    height: int


class ProjectGaussians(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, log_scales, logit_opacities, sh0, shN, meta: ProjectionMeta):
        n = means.shape[0]
        dtype, device = means.dtype, means.device
        means2d = torch.empty(n, 2, dtype=dtype, device=device)  # [N, 2]
        conics = torch.empty(n, 3, dtype=dtype, device=device)  # [N, 3]
        depths = torch.empty(n, dtype=dtype, device=device)  # [N]
        opacities = torch.empty(n, dtype=dtype, device=device)  # [N]
        colors = torch.empty(n, 3, dtype=dtype, device=device)  # [N, 3]
        radii = torch.empty(n, dtype=torch.int32, device=device)  # [N]
        rect = torch.empty(n, 4, dtype=torch.int32, device=device)  # [N, 4] tiles x0, y0, x1, y1
        tiles_x = math.ceil(meta.width / TILE_SIZE)
        tiles_y = math.ceil(meta.height / TILE_SIZE)
        inputs = [t.detach().contiguous() for t in (means, quats, log_scales, logit_opacities, sh0, shN)]
        if n:
            project_forward_kernel[(triton.cdiv(n, PROJECT_BLOCK),)](
                *inputs, meta.cam, means2d, conics, depths, opacities, colors, radii, rect,
                n, shN.shape[1] * 3, meta.width, meta.height, tiles_x, tiles_y,
                NUM_BASES=meta.num_bases, ANTIALIASED=meta.antialiased, BLOCK=PROJECT_BLOCK,
                num_warps=NUM_WARPS,
            )  # fmt: skip
        ctx.save_for_backward(*inputs)
        ctx.meta = meta
        ctx.mark_non_differentiable(radii, rect)
        return means2d, conics, depths, opacities, colors, radii, rect

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, v_opacities, v_colors, _v_radii, _v_rect):
        inputs = ctx.saved_tensors
        means, shN = inputs[0], inputs[5]
        meta = ctx.meta
        n = means.shape[0]
        grads = [torch.empty_like(t) for t in inputs[:5]] + [torch.zeros_like(shN)]
        if n:
            outs = [_dense(v, like) for v, like in ((v_means2d, (n, 2)), (v_conics, (n, 3)), (v_depths, (n,)),
                                                     (v_opacities, (n,)), (v_colors, (n, 3)))]  # fmt: skip
            outs = [o.to(device=means.device, dtype=means.dtype) for o in outs]
            project_backward_kernel[(triton.cdiv(n, PROJECT_BLOCK),)](
                *inputs, meta.cam, *outs, *grads, n, shN.shape[1] * 3,
                NUM_BASES=meta.num_bases, ANTIALIASED=meta.antialiased, BLOCK=PROJECT_BLOCK,
                num_warps=NUM_WARPS,
            )  # fmt: skip
        return (*grads, None)


def _dense(v: torch.Tensor | None, shape) -> torch.Tensor:
    """An output gradient as a contiguous tensor (autograd passes None for unused outputs)."""
    if v is None:
        return torch.zeros(shape)
    return v.contiguous()


@dataclass
class TileBinning:
    """Tile-Gaussian pairs grouped by tile, front to back inside a tile."""

    gid: torch.Tensor  # [M] int32 Gaussian of each pair, in (tile, depth) order
    slot_of: torch.Tensor  # [M] int64 the pair's gradient slot (its index in emission order)
    tile_offsets: torch.Tensor  # [T + 1] int64: tile t owns gid[off[t]:off[t+1]]
    pair_offsets: torch.Tensor  # [N + 1] int64: the s-th Gaussian by depth owns slots off[s]:off[s+1]
    depth_order: torch.Tensor  # [N] int64 Gaussians sorted by depth (ties by index)
    tiles_x: int
    tiles_y: int

    @property
    def num_intersections(self) -> int:
        return int(self.gid.shape[0])


def bin_gaussians(rect: torch.Tensor, radii: torch.Tensor, depths: torch.Tensor, width: int,
                  height: int) -> TileBinning:  # fmt: skip
    """Duplicate each visible Gaussian once per tile of its rectangle; order by (tile, depth).

    Same order as reference.bin_gaussians (depth ties keep input order): pairs are emitted
    Gaussian by Gaussian in stable depth order, then stably sorted by tile on the device.
    """
    device = depths.device
    tiles_x, tiles_y = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    n = depths.shape[0]
    span_x = (rect[:, 2] - rect[:, 0] + 1).clamp_min(0)
    span_y = (rect[:, 3] - rect[:, 1] + 1).clamp_min(0)
    counts = torch.where(radii > 0, span_x * span_y, 0).to(torch.int64)  # [N] tiles touched
    depth_order = torch.argsort(depths.detach(), stable=True)  # [N]
    pair_offsets = torch.zeros(n + 1, dtype=torch.int64, device=device)
    torch.cumsum(counts[depth_order], 0, out=pair_offsets[1:])
    num_pairs = int(pair_offsets[-1])  # the render's one host synchronisation
    memory.check(num_pairs, n, width, height, depths.dtype, device)
    with memory.friendly_oom(num_pairs, n, width, height, depths.dtype, device):
        tile = torch.empty(num_pairs, dtype=torch.int32, device=device)  # [M]
        gid_emitted = torch.empty(num_pairs, dtype=torch.int32, device=device)  # [M]
        if num_pairs:
            emit_intersections_kernel[(triton.cdiv(num_pairs, PAIR_BLOCK),)](
                pair_offsets, depth_order, rect, tile, gid_emitted, num_pairs, n, tiles_x,
                SEARCH_STEPS=_search_steps(n), BLOCK=PAIR_BLOCK, num_warps=NUM_WARPS,
            )  # fmt: skip
        tile_sorted, slot_of = torch.sort(tile, stable=True)  # [M] by tile, depth order kept
        gid = gid_emitted[slot_of]
        tile_offsets = torch.searchsorted(
            tile_sorted, torch.arange(tiles_x * tiles_y + 1, dtype=torch.int32, device=device)
        )
    return TileBinning(gid, slot_of, tile_offsets, pair_offsets, depth_order, tiles_x, tiles_y)


def _search_steps(n: int) -> int:
    """Binary-search steps over n + 1 offsets, rounded up to a multiple of 8 so that a model
    growing during training recompiles the binning kernel a few times, not at every doubling."""
    return 8 * math.ceil((math.ceil(math.log2(n + 1)) + 1) / 8)


class CompositeTiles(torch.autograd.Function):
    """Front-to-back compositing of binned splats: features [H, W, C] and T_final [H, W]."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, binning: TileBinning, width: int, height: int,
                absgrad: bool):  # fmt: skip
        c = features.shape[1]
        dtype, device = features.dtype, features.device
        out_feat = torch.zeros(height, width, c, dtype=dtype, device=device)  # [H, W, C]
        out_t = torch.ones(height, width, dtype=dtype, device=device)  # [H, W]
        out_last = torch.full((height, width), -1, dtype=torch.int32, device=device)  # [H, W]
        inputs = [t.detach().contiguous() for t in (means2d, conics, opacities, features)]
        if binning.num_intersections:
            composite_forward_kernel[(binning.tiles_x * binning.tiles_y,)](
                *inputs, binning.gid, binning.tile_offsets, out_feat, out_t, out_last, width, height,
                binning.tiles_x, C=c, CHUNK=CHUNK, num_warps=COMPOSITE_WARPS,
            )  # fmt: skip
        ctx.save_for_backward(*inputs, out_feat, out_t, out_last)
        ctx.binning, ctx.width, ctx.height, ctx.absgrad = binning, width, height, absgrad
        ctx.means2d_ref = weakref.ref(means2d)
        ctx.mark_non_differentiable(out_last)
        return out_feat, out_t, out_last

    @staticmethod
    def backward(ctx, v_feat, v_t, _v_last):
        means2d, conics, opacities, features, out_feat, out_t, out_last = ctx.saved_tensors
        binning, width, height = ctx.binning, ctx.width, ctx.height
        n, c = features.shape
        nslot = SLOT_BASE + c + (2 if ctx.absgrad else 0)
        v_feat = _dense(v_feat, out_feat.shape).to(out_feat)
        v_t = _dense(v_t, out_t.shape).to(out_t)
        m = binning.num_intersections
        with memory.friendly_oom(m, n, width, height, features.dtype, features.device):
            slots = torch.zeros(m, nslot, dtype=features.dtype, device=features.device)  # [M, NSLOT]
            dense = torch.zeros(n, nslot, dtype=features.dtype, device=features.device)  # [N, NSLOT]
        if m:
            composite_backward_kernel[(binning.tiles_x * binning.tiles_y,)](
                means2d, conics, opacities, features, binning.gid, binning.slot_of, binning.tile_offsets,
                out_feat, out_t, out_last, v_feat, v_t, slots, width, height, binning.tiles_x,
                C=c, NSLOT=nslot, ABSGRAD=ctx.absgrad, CHUNK=CHUNK, num_warps=COMPOSITE_WARPS,
            )  # fmt: skip
            reduce_slots_kernel[(triton.cdiv(n, REDUCE_BLOCK),)](
                binning.pair_offsets, binning.depth_order, slots, dense, n,
                NSLOT=nslot, NSLOT_P2=triton.next_power_of_2(nslot), BLOCK=REDUCE_BLOCK, num_warps=NUM_WARPS,
            )  # fmt: skip
        if ctx.absgrad:
            target = ctx.means2d_ref()
            if target is not None:  # accumulates across backward calls, like .grad
                absgrad = dense[:, SLOT_BASE + c:].contiguous()  # [N, 2]
                previous = getattr(target, "absgrad", None)
                target.absgrad = absgrad if previous is None else previous + absgrad
        v_means2d = dense[:, 0:2]  # [N, 2]
        v_conics = dense[:, 2:5]  # [N, 3]
        v_opacities = dense[:, 5]  # [N]
        v_features = dense[:, SLOT_BASE:SLOT_BASE + c]  # [N, C]
        return v_means2d, v_conics, v_opacities, v_features, None, None, None, None

"""Triton kernels of tile binning and tile compositing, forward and backward.

    emit_intersections   one lane per (Gaussian, tile) pair: its tile and Gaussian, pairs
                         laid out Gaussian by Gaussian in depth order (a stable sort by tile
                         then gives the reference's (tile, depth) order)
    composite_forward    one program per 16x16 tile, its 256 pixels as one vector; the tile's
                         Gaussians are taken CHUNK at a time, front to back
    composite_backward   the same walk front to back: transmittance recomputed exactly as the
                         forward does, the colour behind each Gaussian as (final - accumulated);
                         each pair's gradient goes to a slot only that pair owns
    reduce_slots         per Gaussian, the sum of its slots in a fixed order

No float atomics anywhere: results are deterministic, run to run.

Compositing constants and masks are the reference's (render/reference.py, composite_tiles):
alpha = min(ALPHA_MAX, o exp(power)); alpha < ALPHA_MIN is skipped; a pixel stops before the
Gaussian that would take its transmittance below T_MIN. The gradient of one pair, at a pixel:
    dL/df_i     = v_f alpha_i T_i
    dL/dalpha_i = sum_k v_k (f_ik T_i - S_ik / (1 - alpha_i)) - v_T T_final / (1 - alpha_i)
with S_ik the features composited behind i, then through alpha = o exp(power) to the
opacity, the conic and the centre.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._const import const

from ...constants import ALPHA_MAX, ALPHA_MIN, T_MIN, TILE_SIZE

_TILE = const(TILE_SIZE)
_NPIX = const(TILE_SIZE * TILE_SIZE)
_ALPHA_MAX = const(ALPHA_MAX)
_ALPHA_MIN = const(ALPHA_MIN)
_T_MIN = const(T_MIN)

# Per-pair gradient slot: d/d[mx, my, A, B, C, opacity, f_0..f_{C-1}] (+ |d/dmx|, |d/dmy|).
SLOT_BASE = 6
_SLOT_BASE = const(SLOT_BASE)


# ---- binning ----------------------------------------------------------------------------------


@triton.jit
def emit_intersections_kernel(
    pair_offsets_ptr, order_ptr, rect_ptr, tile_ptr, gid_ptr, num_pairs, num_sorted, tiles_x,
    SEARCH_STEPS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Pair p belongs to the s-th Gaussian in depth order, the one with
    pair_offsets[s] <= p < pair_offsets[s + 1] (binary search); Gaussian order[s] owns that
    run, one pair per tile of its rectangle, row major. Writes tile [M] and gid [M] int32.
    pair_offsets [S + 1] int64 (exclusive prefix sum of tile counts in depth order)."""
    pid = tl.program_id(0)
    p = (pid * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
    m = p < num_pairs
    lo = tl.zeros([BLOCK], dtype=tl.int64)  # invariant: offsets[lo] <= p < offsets[hi]
    hi = tl.zeros([BLOCK], dtype=tl.int64) + num_sorted
    for _ in tl.static_range(SEARCH_STEPS):
        mid = (lo + hi) // 2
        active = hi - lo > 1
        go_right = tl.load(pair_offsets_ptr + mid, mask=m & active, other=0) <= p
        lo = tl.where(active & go_right, mid, lo)
        hi = tl.where(active & ~go_right, mid, hi)
    k = p - tl.load(pair_offsets_ptr + lo, mask=m, other=0)
    g = tl.load(order_ptr + lo, mask=m, other=0)
    x0 = tl.load(rect_ptr + 4 * g, mask=m, other=0)
    y0 = tl.load(rect_ptr + 4 * g + 1, mask=m, other=0)
    x1 = tl.load(rect_ptr + 4 * g + 2, mask=m, other=0)
    span_x = tl.maximum(x1 - x0 + 1, 1).to(tl.int64)
    tile = (y0 + k // span_x) * tiles_x + x0 + k % span_x
    tl.store(tile_ptr + p, tile.to(tl.int32), mask=m)
    tl.store(gid_ptr + p, g.to(tl.int32), mask=m)


# ---- compositing ------------------------------------------------------------------------------


@triton.jit
def _tile_pixels(tile, tiles_x, width, height, dtype: tl.constexpr):
    """Pixel centres (x, y) [256] of a tile and whether each lies inside the image."""
    ty = tile // tiles_x
    tx = tile - ty * tiles_x
    q = tl.arange(0, _NPIX)
    px = tx * _TILE + q % _TILE
    py = ty * _TILE + q // _TILE
    inside = (px < width) & (py < height)
    return px.to(dtype) + 0.5, py.to(dtype) + 0.5, py * width + px, inside


@triton.jit
def _splat_alpha(xs, ys, idx, end, gid_ptr, means2d_ptr, conics_ptr, opac_ptr):
    """For a CHUNK of pairs idx [B] and the tile's pixels: the pairs' Gaussians, dx, dy
    [B, 256], the conic and opacity o [B], o exp(power) and alpha = min(ALPHA_MAX, o exp(power)).

    Pairs run along axis 0 and pixels along axis 1, so that each thread owns whole pixel
    columns: per-pixel state is not replicated across threads and the scans over the
    chunk stay inside a thread."""
    valid = idx < end
    g = tl.load(gid_ptr + idx, mask=valid, other=0)
    mx = tl.load(means2d_ptr + 2 * g, mask=valid, other=0.0)
    my = tl.load(means2d_ptr + 2 * g + 1, mask=valid, other=0.0)
    ca = tl.load(conics_ptr + 3 * g, mask=valid, other=0.0)
    cb = tl.load(conics_ptr + 3 * g + 1, mask=valid, other=0.0)
    cc = tl.load(conics_ptr + 3 * g + 2, mask=valid, other=0.0)
    op = tl.load(opac_ptr + g, mask=valid, other=0.0)
    dx = xs[None, :] - mx[:, None]  # [B, 256]
    dy = ys[None, :] - my[:, None]
    power = -0.5 * (ca[:, None] * dx * dx + cc[:, None] * dy * dy) - cb[:, None] * dx * dy
    raw = op[:, None] * tl.exp(power)
    alpha = tl.minimum(raw, _ALPHA_MAX)
    return valid, g, dx, dy, ca, cb, cc, op, raw, alpha


@triton.jit
def composite_forward_kernel(
    means2d_ptr, conics_ptr, opac_ptr, feat_ptr, gid_ptr, tile_offsets_ptr,
    out_feat_ptr, out_t_ptr, out_last_ptr, width, height, tiles_x,
    C: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    """Front-to-back compositing of one tile (reference.composite_tiles).

    means2d [N, 2], conics [N, 3], opacities [N], features [N, C] (C = 3: rgb, or 4: rgb and
    depth), gid [M] int32 grouped by tile and front to back, tile_offsets [T + 1] int64.
    Outputs out_feat [H, W, C] = sum_i f_i alpha_i T_i, out_t [H, W] = T_final and out_last
    [H, W] int32 = index (into gid) of the last pair that contributed, -1 if none.
    """
    tile = tl.program_id(0)
    dtype = out_feat_ptr.dtype.element_ty
    xs, ys, pix, inside = _tile_pixels(tile, tiles_x, width, height, dtype)
    i0 = tl.load(tile_offsets_ptr + tile).to(tl.int32)
    end = tl.load(tile_offsets_ptr + tile + 1).to(tl.int32)
    trans = tl.full([_NPIX], 1.0, dtype)
    done = ~inside  # pixels past the image edge never block the early exit
    last = tl.full([_NPIX], -1, tl.int32)
    acc0 = tl.zeros([_NPIX], dtype)
    acc1 = tl.zeros([_NPIX], dtype)
    acc2 = tl.zeros([_NPIX], dtype)
    acc3 = tl.zeros([_NPIX], dtype)
    num_active = tl.sum((~done).to(tl.int32))
    while (i0 < end) & (num_active > 0):
        idx = i0 + tl.arange(0, CHUNK)
        valid, g, dx, dy, ca, cb, cc, op, raw, alpha = _splat_alpha(
            xs, ys, idx, end, gid_ptr, means2d_ptr, conics_ptr, opac_ptr
        )
        ok = (alpha >= _ALPHA_MIN) & valid[:, None] & ~done[None, :]
        one_minus = 1.0 - tl.where(ok, alpha, 0.0)
        t_after = trans[None, :] * tl.cumprod(one_minus, axis=0)  # [B, 256]
        # Stop before the Gaussian that would take T below T_MIN; T only falls, so the pairs
        # kept form a prefix of the chunk.
        kept = t_after >= _T_MIN
        contrib = ok & kept
        w = tl.where(contrib, alpha * (t_after / one_minus), 0.0)  # alpha_i T_i
        fptr = feat_ptr + C * g  # [B] features of the chunk's Gaussians, channel by channel
        acc0 += tl.sum(w * tl.load(fptr, mask=valid, other=0.0)[:, None], axis=0)
        acc1 += tl.sum(w * tl.load(fptr + 1, mask=valid, other=0.0)[:, None], axis=0)
        acc2 += tl.sum(w * tl.load(fptr + 2, mask=valid, other=0.0)[:, None], axis=0)
        if C > 3:
            acc3 += tl.sum(w * tl.load(fptr + 3, mask=valid, other=0.0)[:, None], axis=0)
        trans = tl.minimum(trans, tl.min(tl.where(kept, t_after, 1.0), axis=0))
        done = done | (tl.max((ok & ~kept).to(tl.int32), axis=0) > 0)
        last = tl.maximum(last, tl.max(tl.where(contrib, idx[:, None], -1), axis=0))
        i0 += CHUNK
        num_active = tl.sum((~done).to(tl.int32))
    tl.store(out_feat_ptr + C * pix, acc0, mask=inside)
    tl.store(out_feat_ptr + C * pix + 1, acc1, mask=inside)
    tl.store(out_feat_ptr + C * pix + 2, acc2, mask=inside)
    if C > 3:
        tl.store(out_feat_ptr + C * pix + 3, acc3, mask=inside)
    tl.store(out_t_ptr + pix, trans, mask=inside)
    tl.store(out_last_ptr + pix, last, mask=inside)


@triton.jit
def _channel(w, t_i, inv_om, f, v, rest):
    """One feature channel of a chunk: f [B] the pairs' values, v [256] dL/d(channel), rest
    [256] what remained to composite before the chunk. Returns its term of dL/dalpha [B, 256],
    dL/df per pair [B], and what remains after the chunk."""
    wf = w * f[:, None]
    behind = rest[None, :] - tl.cumsum(wf, axis=0)  # S_i: composited behind pair i
    v_alpha = v[None, :] * (f[:, None] * t_i - behind * inv_om)
    return v_alpha, tl.sum(v[None, :] * w, axis=1), rest - tl.sum(wf, axis=0)


@triton.jit
def _features_backward(w, t_i, inv_om, fptr, valid, v0, v1, v2, v3, r0, r1, r2, r3, C: tl.constexpr):
    """_channel for the C channels, one after the other (short live ranges: fewer registers)."""
    va, g0, r0 = _channel(w, t_i, inv_om, tl.load(fptr, mask=valid, other=0.0), v0, r0)
    vb, g1, r1 = _channel(w, t_i, inv_om, tl.load(fptr + 1, mask=valid, other=0.0), v1, r1)
    va += vb
    vb, g2, r2 = _channel(w, t_i, inv_om, tl.load(fptr + 2, mask=valid, other=0.0), v2, r2)
    va += vb
    g3 = g2
    if C > 3:
        vb, g3, r3 = _channel(w, t_i, inv_om, tl.load(fptr + 3, mask=valid, other=0.0), v3, r3)
        va += vb
    return va, g0, g1, g2, g3, r0, r1, r2, r3


@triton.jit
def composite_backward_kernel(
    means2d_ptr, conics_ptr, opac_ptr, feat_ptr, gid_ptr, slot_of_ptr, tile_offsets_ptr,
    out_feat_ptr, out_t_ptr, out_last_ptr, v_feat_ptr, v_t_ptr, slot_ptr, width, height, tiles_x,
    C: tl.constexpr, NSLOT: tl.constexpr, ABSGRAD: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    """Gradient of one tile's compositing, walking its pairs front to back again.

    The transmittance before each pair is recomputed as the forward computes it; the pairs a
    pixel composited are those up to out_last (no threshold is re-decided here); what lies
    behind pair i is the final sum minus the sum through i. Pair idx writes row slot_of[idx]
    of slot [M, NSLOT]: d/d[mx, my, A, B, C, opacity, f_0..f_{C-1}] summed over the tile's
    pixels, then, with ABSGRAD, the sums of |d/dmx| and |d/dmy|.
    """
    tile = tl.program_id(0)
    dtype = out_feat_ptr.dtype.element_ty
    xs, ys, pix, inside = _tile_pixels(tile, tiles_x, width, height, dtype)
    start = tl.load(tile_offsets_ptr + tile).to(tl.int32)
    last = tl.load(out_last_ptr + pix, mask=inside, other=-1)
    stop = tl.minimum(tl.load(tile_offsets_ptr + tile + 1).to(tl.int32), tl.max(last) + 1)
    v_tfin = tl.load(v_t_ptr + pix, mask=inside, other=0.0) * tl.load(out_t_ptr + pix, mask=inside, other=1.0)
    # per channel: dL/d(channel), and what remains to composite (the final sum, to begin with)
    v0 = tl.load(v_feat_ptr + C * pix, mask=inside, other=0.0)
    v1 = tl.load(v_feat_ptr + C * pix + 1, mask=inside, other=0.0)
    v2 = tl.load(v_feat_ptr + C * pix + 2, mask=inside, other=0.0)
    r0 = tl.load(out_feat_ptr + C * pix, mask=inside, other=0.0)
    r1 = tl.load(out_feat_ptr + C * pix + 1, mask=inside, other=0.0)
    r2 = tl.load(out_feat_ptr + C * pix + 2, mask=inside, other=0.0)
    v3 = v2 * 0.0
    r3 = v2 * 0.0
    if C > 3:
        v3 = tl.load(v_feat_ptr + C * pix + 3, mask=inside, other=0.0)
        r3 = tl.load(out_feat_ptr + C * pix + 3, mask=inside, other=0.0)
    trans = tl.full([_NPIX], 1.0, dtype)
    i0 = start
    while i0 < stop:  # (a while loop: Triton 3.6's interpreter cannot take these bounds in range)
        idx = i0 + tl.arange(0, CHUNK)
        valid, g, dx, dy, ca, cb, cc, op, raw, alpha = _splat_alpha(
            xs, ys, idx, stop, gid_ptr, means2d_ptr, conics_ptr, opac_ptr
        )
        m = (alpha >= _ALPHA_MIN) & valid[:, None] & (idx[:, None] <= last[None, :])
        alpha = tl.where(m, alpha, 0.0)
        t_after = trans[None, :] * tl.cumprod(1.0 - alpha, axis=0)  # [B, 256]
        trans = tl.min(t_after, axis=0)
        inv_om = 1.0 / (1.0 - alpha)
        t_i = t_after * inv_om  # transmittance in front of pair i
        v_alpha, gf0, gf1, gf2, gf3, r0, r1, r2, r3 = _features_backward(
            alpha * t_i, t_i, inv_om, feat_ptr + C * g, valid, v0, v1, v2, v3, r0, r1, r2, r3, C
        )
        # through T_final, then alpha = min(ALPHA_MAX, o exp(power)) (no gradient above the clamp)
        v_power = tl.where(m & (raw <= _ALPHA_MAX), (v_alpha - v_tfin[None, :] * inv_om) * raw, 0.0)
        row = slot_ptr + NSLOT * tl.load(slot_of_ptr + idx, mask=valid, other=0)
        _store_pair_grads(row, valid, v_power, dx, dy, ca, cb, cc, op, ABSGRAD, _SLOT_BASE + C)
        tl.store(row + 6, gf0, mask=valid)
        tl.store(row + 7, gf1, mask=valid)
        tl.store(row + 8, gf2, mask=valid)
        if C > 3:
            tl.store(row + 9, gf3, mask=valid)
        i0 += CHUNK


@triton.jit
def _store_pair_grads(row, valid, v_power, dx, dy, ca, cb, cc, op, ABSGRAD: tl.constexpr, ABS_COL: tl.constexpr):
    """From dL/dpower [B, 256] (power = -(A dx^2 + C dy^2)/2 - B dx dy, alpha = o exp(power))
    to the pairs' sums over the tile of d/d[mx, my, A, B, C, opacity] (and |d/dmx|, |d/dmy|)."""
    v_mx = v_power * (ca[:, None] * dx + cb[:, None] * dy)  # [B, 256] per pixel
    v_my = v_power * (cb[:, None] * dx + cc[:, None] * dy)
    tl.store(row + 0, tl.sum(v_mx, axis=1), mask=valid)
    tl.store(row + 1, tl.sum(v_my, axis=1), mask=valid)
    if ABSGRAD:
        tl.store(row + ABS_COL, tl.sum(tl.abs(v_mx), axis=1), mask=valid)
        tl.store(row + ABS_COL + 1, tl.sum(tl.abs(v_my), axis=1), mask=valid)
    tl.store(row + 2, tl.sum(-0.5 * v_power * dx * dx, axis=1), mask=valid)
    tl.store(row + 3, tl.sum(-v_power * dx * dy, axis=1), mask=valid)
    tl.store(row + 4, tl.sum(-0.5 * v_power * dy * dy, axis=1), mask=valid)
    # d alpha / d o = exp(power) = raw / o; o > 0 wherever v_power is not zero
    tl.store(row + 5, tl.sum(v_power, axis=1) / tl.where(op > 0.0, op, 1.0), mask=valid)


@triton.jit
def reduce_slots_kernel(
    pair_offsets_ptr, order_ptr, slot_ptr, out_ptr, num_sorted,
    NSLOT: tl.constexpr, NSLOT_P2: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """out[order[s]] = sum of the slots pair_offsets[s]:pair_offsets[s + 1], in slot order.

    slot [M, NSLOT], out [N, NSLOT]; every row of out is written (zeros for Gaussians that
    own no pair)."""
    pid = tl.program_id(0)
    s = pid * BLOCK + tl.arange(0, BLOCK)
    m = s < num_sorted
    lo = tl.load(pair_offsets_ptr + s, mask=m, other=0)
    count = tl.load(pair_offsets_ptr + s + 1, mask=m, other=0) - lo
    g = tl.load(order_ptr + s, mask=m, other=0)
    col = tl.arange(0, NSLOT_P2)
    cm = col < NSLOT
    acc = tl.zeros([BLOCK, NSLOT_P2], out_ptr.dtype.element_ty)
    k = 0
    most = tl.max(count)
    while k < most:  # (not range: Triton 3.6's interpreter cannot take this bound)
        rm = m & (k < count)
        ptrs = slot_ptr + (lo + k)[:, None] * NSLOT + col[None, :]
        acc += tl.load(ptrs, mask=rm[:, None] & cm[None, :], other=0.0)
        k += 1
    tl.store(out_ptr + g[:, None].to(tl.int64) * NSLOT + col[None, :], acc, mask=m[:, None] & cm[None, :])

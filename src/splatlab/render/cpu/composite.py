"""Stage 5 of the CPU backend: alpha compositing per 16x16 tile, forward and backward.

    prepare_splats       per Gaussian record [mx, my, A, B, C, o, f_0..f_{C-1}] and the pixel
                         box outside of which alpha < 1/255 (a conservative bound)
    composite_forward    per tile, front to back: accumulated features, T_final, and the
                         index of the last intersection that contributed to each pixel
    finish_forward       background, alpha = 1 - T_final, expected depth (and its backward)
    composite_backward   per tile, back to front: gradient of every intersection, written
                         into a slot that intersection owns (no two threads share a slot)
    reduce_slots         per Gaussian, the sum of its slots in a fixed order (deterministic)
    CompositeTiles       the torch.autograd.Function around them

Constants and numerics follow reference.composite_tiles and finish_output exactly; the
kernels compute in the dtype of their inputs (constants are passed as arrays of that dtype,
because a Python float literal would promote float32 arithmetic to float64).
`_forward_tile` and `_backward_tile` are longer than the ~80-line guide: they are the inner
loops, kept in one piece so that LLVM sees (and vectorises) the whole row loop.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from numba import njit, prange

from ...constants import ALPHA_MAX, ALPHA_MIN, T_MIN
from ._common import _JIT, NPIX, TILE, _alpha_box, _fetch_add_one, _fexp, _prefetch_row
from ._threads import _np, numba_threads
from .binning import TileBinning

# The per-tile loops may fuse a multiply and an add into one FMA (one rounding instead of two):
# deterministic, and within the reference tolerances (tests/test_cpu_stages.py, 1e-10 in float64).
_JIT_FMA = dict(_JIT, fastmath={"contract"})

assert TILE == 16, "the kernels' row loops and lane folds are written for 16-pixel tile rows"

# Slot layout of the per-intersection gradients: d/d[mx, my, A, B, C, opacity, f_0..f_{C-1}].
SLOT_FEATURES = 6

#
# Layout shared by the compositing kernels. A tile's state lives in small per-worker arrays
# indexed by the pixel's position p = row * 16 + column inside the tile; per-channel arrays
# are channel-major (k * 256 + p). The inner loops run over the 16 pixels of one tile row,
# branch-free (masks instead of `continue`) so that LLVM vectorises them; the exponential is
# an inlined polynomial for float32 for the same reason (math.exp would be a libm call).
# Indices are unsigned so that Numba emits no negative-index wraparound, and the row
# length `tw` (always 16) is passed in at run time so that LLVM keeps those loops as loops
# it can vectorise rather than unrolling them into scalar code.



@njit(parallel=True, **_JIT)
def prepare_splats(means2d, conics, opacities, colors, depths, width, height, rec, bbox):
    """Pack each Gaussian's compositing data into one record and bound its footprint.

    rec [N, 6 + C] (data dtype): mx, my, A, B, C, opacity, then the C features composited:
    colors [N, 3], followed by depths [N] when C = 4 (the reference composites [rgb, depth]
    when depth is rendered, [rgb] otherwise). bbox [N, 4] int32:
    inclusive pixel box (x0, y0, x1, y1) outside of which o * exp(power) < 1/255, with a
    generous margin: pixels inside are still tested exactly, so the box only saves work.
    """
    n = means2d.shape[0]
    nc = colors.shape[1]
    with_depth = rec.shape[1] > 6 + nc
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
        if with_depth:
            rec[i, 6 + nc] = depths[i]
        x0, y0, x1, y1 = _alpha_box(mx, my, a, b, c, o, width, height)
        bbox[i, 0] = x0
        bbox[i, 1] = y0
        bbox[i, 2] = x1
        bbox[i, 3] = y1


@njit(inline="always", **_JIT)
def _row_span(bx0, bx1, tw):
    """(off, nw): the columns off..off+nw-1 of a tile row that a footprint box spanning tile
    columns bx0..bx1 can touch: the 8-column half it lies in, or all 16.

    The row loops run jj = 0..nw-1 and address pixel columns as off + jj, but their scratch
    (row buffers, gradient lanes) from index 0: loops whose every array starts at a run-time
    offset (range(j0, j1)) were not vectorised by LLVM and made the backward 3-4x slower.
    """
    half_w = tw // 2
    j0 = 0 if bx0 < half_w else half_w
    j1 = tw if bx1 >= half_w else half_w
    return np.uint64(j0), j1 - j0


@njit(**_JIT_FMA)
def _forward_tile(
    tile, tw, rec, bbox, isect_gid, tile_offsets, width, height, tiles_x, consts,
    trans, acc, done, last, wrow, fbuf, xl, yl, row_done, out_feat, out_t, out_last,
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
    row_done[:] = 0
    num_outside = 0
    for p in range(NPIX):  # pixels past the image edge count as done from the start
        r = p // TILE
        outside = (py0 + r >= py1) or (px0 + p - r * TILE >= px1)
        done[p] = 1 if outside else 0
        num_outside += 1 if outside else 0
        row_done[r] += 1 if outside else 0
    rows = 0
    num_done = num_outside
    i_end = tile_offsets[tile + 1]
    for i in range(tile_offsets[tile], i_end):
        g = isect_gid[i]
        if i + 1 < i_end:  # the next intersection's record: scattered in memory, fetch it early
            _prefetch_row(rec, isect_gid[i + 1])
            _prefetch_row(bbox, isect_gid[i + 1])
        bx0 = max(bbox[g, 0], px0)
        bx1 = min(bbox[g, 2], px1 - 1)
        by0 = max(bbox[g, 1], py0)
        by1 = min(bbox[g, 3], py1 - 1)
        if bx0 > bx1 or by0 > by1:
            continue
        # the columns to compute: the 8-column half of the tile the footprint box lies in, or
        # both (outside the box alpha < 1/255, so the skipped columns would change nothing).
        off, nw = _row_span(bx0 - px0, bx1 - px0, tw)
        mx = rec[g, 0]
        my = rec[g, 1]
        ca = rec[g, 2]
        cb = rec[g, 3]
        cc = rec[g, 4]
        op = rec[g, 5]
        i32 = np.int32(i)
        for py in range(by0, by1 + 1):
            r = py - py0
            if row_done[r] == TILE:
                continue  # every pixel of this row is finished: nothing would change
            rows += 1
            dy = yl[r] - my
            base = np.uint64(r * TILE) + off
            any_finished = False
            for jj in range(nw):
                j = np.uint64(jj)
                p = base + j
                dx = xl[off + j] - mx
                power = -half * (ca * (dx * dx) + cc * (dy * dy)) - cb * dx * dy
                alpha = min(op * _fexp(power), alpha_max)
                t = trans[p]
                test_t = t * (one - alpha)
                ok = (alpha >= alpha_min) & (done[p] == 0)
                finished = ok & (test_t < t_min)  # would take T below 1e-4: stop before it
                contrib = ok & (test_t >= t_min)
                done[p] = done[p] | finished
                fbuf[j] = finished
                any_finished |= finished
                wrow[j] = alpha * t if contrib else zero
                trans[p] = test_t if contrib else t
                last[p] = i32 if contrib else last[p]
            for k in range(nf):
                f = rec[g, 6 + k]
                kb = np.uint64(k * NPIX) + base
                for jj in range(nw):
                    j = np.uint64(jj)
                    acc[kb + j] += f * wrow[j]
            if any_finished:  # rare: a pixel finishes once
                n_fin = 0
                for j in range(nw):
                    n_fin += fbuf[j]
                row_done[r] += n_fin
                num_done += n_fin
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


@njit(parallel=True, **_JIT_FMA)
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
        row_done = np.empty(TILE, np.int64)
        while True:
            kt = _fetch_add_one(counter, 0)
            if kt >= n_tiles:
                break
            tile = tile_order[kt]
            tile_work[tile] = _forward_tile(
                tile, tw, rec, bbox, isect_gid, tile_offsets, width, height, tiles_x, consts,
                trans, acc, done, last, wrow, fbuf, xl, yl, row_done, out_feat, out_t, out_last,
            )  # fmt: skip


# Row buffer segments of the backward (each TILE long, one array so that LLVM sees
# constant distances between them): mask, 1/(1-alpha), T_i, alpha*T_i, G, o*G, dL/dalpha.
_RB_M, _RB_INV, _RB_T, _RB_W, _RB_G, _RB_RAW, _RB_VA = (k * TILE for k in range(7))
_RB_SIZE = 7 * TILE
# Per-lane gradient accumulators: opacity, mx, my, A, B, C, |mx|, |my|, then the features.
_NL = 8


@njit(inline="always", **_JIT_FMA)
def _fold_lanes(lanes, qb):
    """lanes[qb] = the sum of lanes[qb : qb + 16], in a fixed pairwise order (8, 4, 2, 1 apart)."""
    for jj in range(8):
        j = np.uint64(jj)
        lanes[qb + j] += lanes[qb + j + np.uint64(8)]
    for jj in range(4):
        j = np.uint64(jj)
        lanes[qb + j] += lanes[qb + j + np.uint64(4)]
    for jj in range(2):
        j = np.uint64(jj)
        lanes[qb + j] += lanes[qb + j + np.uint64(2)]
    lanes[qb] += lanes[qb + np.uint64(1)]


@njit(inline="always", **_JIT_FMA)
def _pass3(nw, base, off, xl, mx, dy, ca, cb, cc, half, alpha_max, zero, vtrans, tfin, rb, lanes, with_abs):
    """The backward's pass 3 over one row: dL/dalpha's T_final term, then through
    alpha = o exp(power) to the lanes of o, mx, my, A, B, C (and |mx|, |my| when with_abs)."""
    for jj in range(nw):
        j = np.uint64(jj)
        p = base + j
        dx = xl[off + j] - mx
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
        if with_abs:
            lanes[6 * TILE + j] += abs(v_mx)
            lanes[7 * TILE + j] += abs(v_my)


@njit(**_JIT_FMA)
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
        if i > start:  # as in the forward: the next (here: previous) intersection's data
            _prefetch_row(rec, isect_gid[i - 1])
            _prefetch_row(bbox, isect_gid[i - 1])
            _prefetch_row(rect, isect_gid[i - 1])
            _prefetch_row(slot_offsets, isect_gid[i - 1])
        # the slot this pair's gradient goes to (written at the end): fetch it early too
        slot = slot_offsets[g] + (ty - rect[g, 1]) * (rect[g, 2] - rect[g, 0] + 1) + (tx - rect[g, 0])
        _prefetch_row(slot_grad, slot)
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
        # the columns: as in the forward. Lanes 0..nw-1 hold columns off..off+nw-1; the
        # lanes past nw stay zero, so the fold below gives the same sums as full rows.
        off, nw = _row_span(bx0 - px0, bx1 - px0, tw)
        i32 = np.int32(i)
        lanes[:] = zero
        any_row = False
        for py in range(by0, by1 + 1):
            r = py - py0
            if rowmax[r] < i:
                continue  # every pixel of this row stopped before intersection i
            any_row = True
            dy = yl[r] - my
            base = np.uint64(r * TILE) + off
            # pass 1: alpha, the transmittance before i (T_i = T_{i+1} / (1 - alpha)), weight
            hit = False  # an OR over the row: a float sum would be a serial chain LLVM may not reorder
            for jj in range(nw):
                j = np.uint64(jj)
                p = base + j
                dx = xl[off + j] - mx
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
                hit |= m
            if not hit:
                continue  # no pixel of this row takes intersection i: passes 2 and 3 would add zeros
            # pass 2, per channel: dL/df and the f_i T_i - S/(1 - alpha) part of dL/dalpha
            for k in range(nf):
                f = rec[g, 6 + k]
                kb = np.uint64(k * NPIX) + base
                lb = np.uint64((_NL + k) * TILE)
                for jj in range(nw):
                    j = np.uint64(jj)
                    vk = vpix[kb + j]
                    s = behind[kb + j]
                    rb[_RB_VA + j] += rb[_RB_M + j] * (vk * (f * rb[_RB_T + j] - s * rb[_RB_INV + j]))
                    lanes[lb + j] += vk * rb[_RB_W + j]
                    behind[kb + j] = s + f * rb[_RB_W + j]
            # pass 3: the T_final term, then through alpha = o exp(power) to o, conic, centre.
            # Two copies of one inlined loop: with a constant `with_abs` LLVM drops the |.| sums
            # that only AbsGS densification reads (the default strategy does not).
            if want_abs:
                _pass3(nw, base, off, xl, mx, dy, ca, cb, cc, half, alpha_max, zero, vtrans, tfin, rb, lanes, True)
            else:
                _pass3(nw, base, off, xl, mx, dy, ca, cb, cc, half, alpha_max, zero, vtrans, tfin, rb, lanes, False)
        if not any_row:
            continue
        # Sum the lanes in a fixed order into the slot this (Gaussian, tile) pair owns. Lanes
        # outside the footprint box hold exact zeros, so only the box's columns are summed.
        # pairwise, fixed order: lanes[q*16] ends as the sum of quantity q's 16 lanes. Constant
        # widths (8, 4, 2, 1), not a halving loop: with the OR above, ~10% less backward time
        # (docs/benchmarks.md, session 10), same bits.
        for q in range(_NL + nf):
            if want_abs or q < 6 or q >= _NL:  # lanes 6, 7 (the |.| sums) are zero without want_abs
                _fold_lanes(lanes, np.uint64(q * TILE))
        slot_grad[slot, 0] = lanes[TILE]
        slot_grad[slot, 1] = lanes[2 * TILE]
        slot_grad[slot, 2] = lanes[3 * TILE]
        slot_grad[slot, 3] = lanes[4 * TILE]
        slot_grad[slot, 4] = lanes[5 * TILE]
        slot_grad[slot, 5] = lanes[0]
        for k in range(nf):
            slot_grad[slot, 6 + k] = lanes[(_NL + k) * TILE]
        if want_abs:
            slot_abs[slot, 0] = lanes[6 * TILE]
            slot_abs[slot, 1] = lanes[7 * TILE]


@njit(parallel=True, **_JIT_FMA)
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

    out_feat [H, W, C] (the 3 colour channels, then depth when C = 4), out_t [H, W] = T_final,
    background [3] and fconsts = [1e-10, 1] in the data dtype. Writes image [H, W, 3] =
    sum c a T + T_final bg, alpha [H, W, 1] = 1 - T_final and, when C = 4, depth [H, W, 1] =
    (sum z a T) / max(alpha, 1e-10).
    """
    height, width, nf = out_feat.shape
    nc = image.shape[2]
    eps = fconsts[0]
    one = fconsts[1]
    for y in prange(height):
        for x in range(width):
            t = out_t[y, x]
            for c in range(nc):
                image[y, x, c] = out_feat[y, x, c] + t * background[c]
            a = one - t
            alpha[y, x, 0] = a
            if nf > nc:
                depth[y, x, 0] = out_feat[y, x, nc] / max(a, eps)


@njit(parallel=True, **_JIT)
def finish_backward(out_feat, out_t, background, fconsts, v_image, v_alpha, v_depth, v_feat, v_t):
    """Gradient of finish_forward: v_feat [H, W, C] and v_t [H, W] from those of its outputs
    (v_depth is read only when C = 4)."""
    height, width, nf = out_feat.shape
    nc = v_image.shape[2]
    eps = fconsts[0]
    one = fconsts[1]
    for y in prange(height):
        for x in range(width):
            g = -v_alpha[y, x, 0]
            for c in range(nc):
                v_feat[y, x, c] = v_image[y, x, c]
                g += v_image[y, x, c] * background[c]
            if nf > nc:
                a = one - out_t[y, x]
                a_c = max(a, eps)
                vd = v_depth[y, x, 0]
                v_feat[y, x, nc] = vd / a_c
                if a >= eps:  # clamp_min passes the gradient where alpha >= 1e-10
                    g += vd * out_feat[y, x, nc] / (a_c * a_c)
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


# ---- the autograd Function -------------------------------------------------------------------


def _longest_first(cost: np.ndarray) -> np.ndarray:
    """Tile indices by decreasing cost (ties by index): the order workers take tiles in."""
    return np.argsort(-cost, kind="stable")


def _consts(dtype: np.dtype) -> np.ndarray:
    return np.array([0.5, ALPHA_MAX, ALPHA_MIN, T_MIN, 1.0, 0.0], dtype=dtype)


class CompositeTiles(torch.autograd.Function):
    """Front-to-back alpha compositing of binned splats, then background, alpha and depth.

    Inputs means2d [N, 2], conics [N, 3], opacities [N], colors [N, 3], depths [N];
    outputs image [H, W, 3], alpha [H, W, 1], depth [H, W, 1], as reference.finish_output
    makes them. The compositing kernels are generic in the number of feature channels C:
    C = 4 (rgb and depth) with render_depth, else C = 3 and depth is an empty [0, 0, 1]
    tensor (training does not composite a channel it does not use: a quarter less work).
    """

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, depths, binning: TileBinning, width: int, height: int,
                background, num_threads: int, absgrad: bool, render_depth: bool = True):  # fmt: skip
        n, nc = colors.shape
        nf = nc + 1 if render_depth else nc
        dtype = colors.dtype
        np_dtype = np.dtype(str(dtype).replace("torch.", ""))
        out_feat = np.empty((height, width, nf), np_dtype)  # [H, W, C] sum f a T
        out_t = np.empty((height, width), np_dtype)  # [H, W] T_final
        out_last = np.empty((height, width), np.int32)  # [H, W]
        rec = np.empty((n, SLOT_FEATURES + nf), np_dtype)  # [N, 6 + C]
        bbox = np.empty((n, 4), np.int32)  # [N, 4]
        consts = _consts(np_dtype)
        fconsts = np.array([1e-10, 1.0], np_dtype)
        bg = np.asarray(background, dtype=np_dtype)  # [3]
        n_tiles = binning.tiles_x * binning.tiles_y
        tile_work = np.zeros(n_tiles, np.int64)
        image = torch.empty(height, width, nc, dtype=dtype)
        alpha = torch.empty(height, width, 1, dtype=dtype)
        depth = torch.empty((height, width, 1) if render_depth else (0, 0, 1), dtype=dtype)
        with numba_threads(num_threads) as n_threads:
            if n:
                prepare_splats(
                    _np(means2d), _np(conics), _np(opacities), _np(colors), _np(depths), width, height, rec, bbox
                )
            composite_forward(
                rec, bbox, binning.isect_gid, binning.tile_offsets, _longest_first(np.diff(binning.tile_offsets)),
                n_threads, width, height, binning.tiles_x, TILE, consts, out_feat, out_t, out_last, tile_work,
            )  # fmt: skip
            finish_forward(out_feat, out_t, bg, fconsts, image.numpy(), alpha.numpy(), depth.numpy())
        ctx.state = (rec, bbox, binning, out_feat, out_t, out_last, tile_work, consts, fconsts, bg,
                     width, height, num_threads)  # fmt: skip
        ctx.absgrad = absgrad
        ctx.nc = nc
        ctx.means2d_ref = weakref.ref(means2d)
        return image, alpha, depth

    @staticmethod
    def backward(ctx, v_image, v_alpha, v_depth):
        (rec, bbox, binning, out_feat, out_t, out_last, tile_work, consts, fconsts, bg,
         width, height, num_threads) = ctx.state  # fmt: skip
        n, nf = rec.shape[0], rec.shape[1] - SLOT_FEATURES
        dtype = v_image.dtype
        nc = ctx.nc
        if v_depth is None or nf == nc:
            v_depth = torch.zeros((height, width, 1) if nf > nc else (0, 0, 1), dtype=dtype)
        num_slots = binning.num_intersections
        v_feat = np.empty((height, width, nf), rec.dtype)  # [H, W, C]
        v_t = np.empty((height, width), rec.dtype)  # [H, W]
        slot_grad = np.zeros((num_slots, SLOT_FEATURES + nf), rec.dtype)  # [M, 6 + C]
        slot_abs = np.zeros((num_slots if ctx.absgrad else 0, 2), rec.dtype)  # [M, 2]
        v_means2d = torch.empty(n, 2, dtype=dtype)
        v_conics = torch.empty(n, 3, dtype=dtype)
        v_opacities = torch.empty(n, dtype=dtype)
        v_features = torch.empty(n, nf, dtype=dtype)
        absgrad = torch.zeros(n if ctx.absgrad else 0, 2, dtype=dtype)
        with numba_threads(num_threads) as n_threads:
            finish_backward(
                out_feat, out_t, bg, fconsts, _np(v_image), _np(v_alpha), _np(v_depth), v_feat, v_t
            )
            composite_backward(
                rec, bbox, binning.isect_gid, binning.rect, binning.slot_offsets, binning.tile_offsets,
                _longest_first(tile_work), n_threads, width, height, binning.tiles_x, TILE, consts,
                out_t, out_last, v_feat, v_t, ctx.absgrad, slot_grad, slot_abs,
            )  # fmt: skip
            if n:
                reduce_slots(
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
        v_colors = v_features[:, :nc]
        v_depths = v_features[:, nc] if nf > nc else None
        return v_means2d, v_conics, v_opacities, v_colors, v_depths, None, None, None, None, None, None, None

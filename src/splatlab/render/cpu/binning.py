"""Stage 4 of the CPU backend: tile binning, ordered by (tile, depth).

    sort_visible_by_depth  stable LSD radix sort of the visible Gaussians by depth
    intersection_offsets   where each Gaussian's gradient slots start (one per tile it touches)
    bin_intersections      stable counting sort of (Gaussian, tile) pairs by tile: the result
                           is ordered by (tile, depth), ties in depth by Gaussian index
    bin_gaussians          the Python entry: a TileBinning (not differentiable)

Same order as reference.bin_gaussians; the tiles per Gaussian are project.py's rectangles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange

from ..settings import TILE_SIZE
from ._common import _JIT
from ._threads import _np, numba_threads

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

    radii [N] int32, rect [N, 4] int32 and depths [N] from ProjectGaussians.
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
        order = sort_visible_by_depth(keys, radii_np, key_bits)  # [V] int32
        slot_offsets = intersection_offsets(radii_np, rect_np)  # [N + 1]
        num_isect = int(slot_offsets[-1])
        isect_gid = np.empty(num_isect, np.int32)
        tile_offsets = np.empty(n_tiles + 1, np.int64)
        num_chunks = max(1, min(4 * n_threads, order.shape[0] // 2048))
        bin_intersections(order, rect_np, n_tiles, tiles_x, num_chunks, isect_gid, tile_offsets)
    return TileBinning(isect_gid, tile_offsets, slot_offsets, rect_np, tiles_x, tiles_y)

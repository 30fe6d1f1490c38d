"""Codebooks for SOG: a 256-entry scalar codebook and a k-means palette of SH vectors.

    scalar_codebook(values)     256 sorted centroids of a 1D weighted k-means + each value's index
    vector_palette(x, k)        k-means palette of rows (SH bands), two-level when k is large

The two-level palette (k1 = sqrt(k) coarse clusters, then each split in proportion to its size)
costs N * (k1 + k/k1) distance evaluations per iteration instead of N * k: 65536 entries for
200k Gaussians take seconds on a CPU instead of minutes, for a slightly less optimal palette.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["scalar_codebook", "vector_palette"]


def scalar_codebook(values: np.ndarray, k: int = 256, iters: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """([k] sorted float32 centroids, [values.shape] uint8 labels) minimising squared error.

    Lloyd's algorithm on a 4096-bin histogram, initialised at quantiles; bins are weighted by
    sqrt(count), as splat-transform's quantize1d, so that sparse tails still get codes.
    """
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size == 0:
        return np.zeros(k, np.float32), np.zeros(np.shape(values), np.uint8)
    lo, hi = float(flat.min()), float(flat.max())
    if hi - lo < 1e-20:
        return np.full(k, lo, np.float32), np.zeros(np.shape(values), np.uint8)
    counts, edges = np.histogram(flat, bins=4096, range=(lo, hi))
    sums, _ = np.histogram(flat, bins=4096, range=(lo, hi), weights=flat)
    keep = counts > 0
    centers, weights = sums[keep] / counts[keep], np.sqrt(counts[keep])
    c = np.quantile(flat, (np.arange(k) + 0.5) / k)
    for _ in range(iters):
        bounds = (c[1:] + c[:-1]) / 2
        lab = np.searchsorted(bounds, centers)
        w = np.bincount(lab, weights, minlength=k)
        s = np.bincount(lab, weights * centers, minlength=k)
        c = np.where(w > 0, s / np.where(w > 0, w, 1.0), c)
        c = np.sort(c)
    c = c.astype(np.float32)
    bounds = (c[1:].astype(np.float64) + c[:-1]) / 2
    labels = np.searchsorted(bounds, flat).astype(np.uint8).reshape(np.shape(values))
    return c, labels


def _nearest(x: torch.Tensor, c: torch.Tensor, chunk: int = 32768) -> torch.Tensor:
    """[N] index of the nearest row of c [K, D] for each row of x [N, D]."""
    c2 = (c * c).sum(1)  # [K]
    out = torch.empty(x.shape[0], dtype=torch.long)
    for s in range(0, x.shape[0], chunk):
        xs = x[s:s + chunk]
        out[s:s + chunk] = torch.addmm(c2, xs, c.T, alpha=-2.0).argmin(1)  # |c|^2 - 2 x.c
    return out


def _kmeans(x: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat Lloyd's k-means: ([k, D] centroids, [N] labels); an empty cluster keeps its centroid."""
    n = x.shape[0]
    if k >= n:
        return x.clone(), torch.arange(n)
    c = x[torch.randperm(n, generator=gen)[:k]].clone()
    labels = _nearest(x, c)
    for _ in range(iters):
        sums = torch.zeros_like(c).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        c = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)
        labels = _nearest(x, c)
    return c, labels


def _refine_groups(x: torch.Tensor, coarse: torch.Tensor, k: int, iters: int, gen: torch.Generator,
                   group: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Second level: split every coarse cluster into a share of `k` proportional to its size.

    Clusters are processed `group` at a time as padded batches (torch.baddbmm), so the cost is a
    few large tensor operations per iteration instead of thousands of small ones.
    """
    n, d = x.shape
    order = torch.argsort(coarse, stable=True)
    xs, cs = x[order], coarse[order]
    sizes = torch.bincount(cs)
    ids = sizes.nonzero().flatten().tolist()
    starts = torch.cumsum(sizes, 0) - sizes
    share = {j: max(1, min(int(sizes[j]), int(k * int(sizes[j]) / n))) for j in ids}
    palette, labels, offset = [], torch.empty(n, dtype=torch.long), 0
    for g0 in range(0, len(ids), group):
        batch = ids[g0:g0 + group]
        m_max, k_max = max(int(sizes[j]) for j in batch), max(share[j] for j in batch)
        pts = torch.zeros(len(batch), m_max, d)
        valid = torch.zeros(len(batch), m_max, dtype=torch.bool)
        cen = torch.full((len(batch), k_max, d), 1e6)  # padding centroids: far from every point
        for b, j in enumerate(batch):
            a, m = int(starts[j]), int(sizes[j])
            pts[b, :m], valid[b, :m] = xs[a:a + m], True
            cen[b, : share[j]] = xs[a:a + m][torch.randperm(m, generator=gen)[: share[j]]]
        for it in range(iters + 1):
            c2 = (cen * cen).sum(-1)  # [B, Kmax]
            lab = torch.baddbmm(c2[:, None, :], pts, cen.transpose(1, 2), alpha=-2.0).argmin(-1)  # [B, Mmax]
            if it == iters:
                break
            flat = (lab + torch.arange(len(batch))[:, None] * k_max)[valid]  # [M_total]
            sums = torch.zeros(len(batch) * k_max, d).index_add_(0, flat, pts[valid])
            counts = torch.bincount(flat, minlength=len(batch) * k_max).to(x.dtype)[:, None]
            cen = torch.where(counts > 0, sums / counts.clamp_min(1), cen.reshape(-1, d)).reshape(cen.shape)
        for b, j in enumerate(batch):
            a, m = int(starts[j]), int(sizes[j])
            palette.append(cen[b, : share[j]])
            labels[order[a:a + m]] = lab[b, :m] + offset
            offset += share[j]
    return torch.cat(palette), labels


def vector_palette(x: np.ndarray, k: int, iters: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """([K', D] float32 palette with K' <= k, [N] int64 labels) for rows x [N, D]."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    n = xt.shape[0]
    gen = torch.Generator().manual_seed(seed)
    if k >= n or k <= 1024:
        c, lab = _kmeans(xt, min(k, n), iters, gen)
        return c.numpy(), lab.numpy()
    _, coarse = _kmeans(xt, int(math.sqrt(k)), iters, gen)
    palette, labels = _refine_groups(xt, coarse, k, iters, gen)
    return palette.numpy(), labels.numpy()

"""SuperSplat / PlayCanvas compressed .ply (suffix `.compressed.ply`).

Spec followed: the writer and reader of PlayCanvas splat-transform v3.7.0 (commit 0f60b17, npm
`@playcanvas/splat-transform@3.7.0`): src/lib/writers/write-compressed-ply.ts,
src/lib/writers/compressed-chunk.ts and src/lib/readers/read-ply.ts. Binary little-endian PLY:

    element chunk ceil(N/256)    18 float: min_x min_y min_z max_x max_y max_z,
                                 min_scale_x.. max_scale_z (log scales, clamped to [-20, 20]),
                                 min_r min_g min_b max_r max_g max_b (0.5 + SH_C0 * f_dc)
    element vertex N             4 uint: packed_position  11/10/11 bits of x/y/z in the chunk box
                                         packed_rotation  2-bit index of the largest |component|
                                                          of (w,x,y,z), then the other three as
                                                          10-bit unorm of q*sqrt(2)/2 + 0.5
                                         packed_scale     11/10/11 bits of log scale in the chunk range
                                         packed_color     8/8/8 bits of colour in the chunk range,
                                                          8 bits of opacity (sigmoid)
    element sh N (SH degree > 0) uchar f_rest_0..: channel-major as Inria, byte = trunc((v/8+0.5)*256)

Gaussian i belongs to chunk i // 256; chunks hold Gaussians in Morton order (as splat-transform
writes them) so that each chunk's box is small. Coordinates are the Inria .ply's (no axis change).
Opacity bytes 0 and 255 (logits -inf/+inf) are read half a step inside and counted in a warning.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from ..constants import SH_C0
from ..gaussians import Gaussians
from ._quantize import ModelArrays, clamp_logit, morton_order, sigmoid, warn_clamped
from .atomic import atomic_write

__all__ = ["CompressedPlyFormatError", "read_compressed_ply", "write_compressed_ply"]

CHUNK = 256
_CHUNK_PROPS = ("min_x", "min_y", "min_z", "max_x", "max_y", "max_z",
                "min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z",
                "min_r", "min_g", "min_b", "max_r", "max_g", "max_b")
_VERTEX_PROPS = ("packed_position", "packed_rotation", "packed_scale", "packed_color")
_ROT_NORM = np.sqrt(2.0) * 0.5


class CompressedPlyFormatError(ValueError):
    """A file that is not a readable compressed .ply; the message names the file and the problem."""


def _unorm(x: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    return np.clip(np.floor(x * top + 0.5), 0, top).astype(np.uint32)


def _unpack(v: np.ndarray, shift: int, bits: int) -> np.ndarray:
    return ((v >> np.uint32(shift)) & np.uint32((1 << bits) - 1)).astype(np.float64) / ((1 << bits) - 1)


def _chunk_range(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-chunk min and max of `values` [C*256, D] -> ([C, D], [C, D])."""
    v = values.reshape(-1, CHUNK, values.shape[1])
    return v.min(axis=1), v.max(axis=1)


def _normalise(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(v - min) / (max - min) per chunk, 0 where the range is (nearly) empty, as splat-transform."""
    c = values.shape[0] // CHUNK
    v, lo, hi = values.reshape(c, CHUNK, -1), lo[:, None], hi[:, None]
    span = hi - lo
    t = np.where(span < 1e-5, 0.0, (v - lo) / np.where(span < 1e-5, 1.0, span))
    return np.clip(t, 0.0, 1.0).reshape(values.shape)


def _pack_111011(t: np.ndarray) -> np.ndarray:
    return (_unorm(t[:, 0], 11) << np.uint32(21)) | (_unorm(t[:, 1], 10) << np.uint32(11)) | _unorm(t[:, 2], 11)


def _pack_rotation(unit: np.ndarray) -> np.ndarray:
    """[N, 4] unit (w,x,y,z) -> [N] uint32 smallest-three."""
    n = unit.shape[0]
    largest = np.abs(unit).argmax(axis=1)  # [N]
    q = unit * np.where(unit[np.arange(n), largest] < 0, -1.0, 1.0)[:, None]
    out = largest.astype(np.uint32)
    others = np.array([[j for j in range(4) if j != k] for k in range(4)])[largest]  # [N, 3]
    for j in range(3):
        out = (out << np.uint32(10)) | _unorm(q[np.arange(n), others[:, j]] * _ROT_NORM + 0.5, 10)
    return out


def _pad(a: np.ndarray, total: int) -> np.ndarray:
    """Repeat the last row up to `total` rows (the writer fills a partial chunk with its last Gaussian)."""
    if len(a) == total:
        return a
    return np.concatenate([a, np.repeat(a[-1:], total - len(a), axis=0)])


def write_compressed_ply(path: str | os.PathLike, gaussians: Gaussians) -> Path:
    """Write `gaussians` as a SuperSplat compressed .ply (Morton-ordered chunks; atomically)."""
    m = ModelArrays.from_gaussians(gaussians)
    n, k1 = m.means.shape[0], m.shN.shape[1]
    order = morton_order(m.means)
    c = -(-n // CHUNK)
    total = c * CHUNK
    means = _pad(m.means[order], total)  # [C*256, 3]
    scales = _pad(m.log_scales[order], total)  # [C*256, 3]
    rgb = _pad(m.sh0[order] * SH_C0 + 0.5, total)  # [C*256, 3]
    pmin, pmax = _chunk_range(means)
    smin, smax = (np.clip(r, -20.0, 20.0) for r in _chunk_range(scales))
    cmin, cmax = _chunk_range(rgb)
    chunks = np.concatenate([pmin, pmax, smin, smax, cmin, cmax], axis=1).astype("<f4")  # [C, 18]

    alpha = sigmoid(m.logits[order])  # [N]
    color_t = _normalise(rgb, cmin, cmax)[:n]  # [N, 3]
    packed = np.empty((n, 4), dtype="<u4")
    packed[:, 0] = _pack_111011(_normalise(means, pmin, pmax)[:n])
    packed[:, 1] = _pack_rotation(m.unit_quats()[order])
    packed[:, 2] = _pack_111011(_normalise(scales, smin, smax)[:n])
    packed[:, 3] = ((_unorm(color_t[:, 0], 8) << np.uint32(24)) | (_unorm(color_t[:, 1], 8) << np.uint32(16))
                    | (_unorm(color_t[:, 2], 8) << np.uint32(8)) | _unorm(alpha, 8))

    elements = [
        PlyElement.describe(chunks.view([(p, "<f4") for p in _CHUNK_PROPS]).reshape(c), "chunk"),
        PlyElement.describe(packed.view([(p, "<u4") for p in _VERTEX_PROPS]).reshape(n), "vertex"),
    ]
    if k1:
        rest = m.shN[order].transpose(0, 2, 1).reshape(n, 3 * k1)  # [N, 3(K-1)] channel-major
        sh = np.clip(np.trunc((rest / 8.0 + 0.5) * 256.0), 0, 255).astype(np.uint8)
        elements.append(PlyElement.describe(sh.view([(f"f_rest_{i}", "u1") for i in range(3 * k1)]).reshape(n), "sh"))
    target = Path(os.fspath(path))
    with atomic_write(target, "wb") as f:
        PlyData(elements, text=False, byte_order="<", comments=["Generated by splatlab"]).write(f)
    return target


def _columns(where: str, element, names: tuple[str, ...], dtype: str) -> np.ndarray:
    present = {p.name for p in element.properties}
    missing = [p for p in names if p not in present]
    if missing:
        raise CompressedPlyFormatError(f"{where}: '{element.name}' element lacks {', '.join(missing)}")
    return np.stack([np.asarray(element.data[p], dtype=dtype) for p in names], axis=1)


def _load(path: Path) -> PlyData:
    where = str(path)
    try:
        ply = PlyData.read(str(path))
    except Exception as e:  # plyfile raises several types for malformed or truncated files
        raise CompressedPlyFormatError(f"{where}: not a readable compressed .ply: {e}") from e
    names = [el.name for el in ply.elements]
    if "chunk" not in names or "vertex" not in names:
        raise CompressedPlyFormatError(
            f"{where}: expected 'chunk' and 'vertex' elements of a compressed .ply, found {names}")
    n, c = ply["vertex"].count, ply["chunk"].count
    if c != -(-n // CHUNK):
        raise CompressedPlyFormatError(
            f"{where}: inconsistent chunk count: {n} vertices need ceil({n}/{CHUNK}) = {-(-n // CHUNK)} "
            f"chunks, the header declares {c}")
    if "sh" in names and ply["sh"].count != n:
        raise CompressedPlyFormatError(f"{where}: 'sh' element has {ply['sh'].count} rows, expected {n}")
    return ply


def _decode_rotation(pr: np.ndarray) -> np.ndarray:
    """[N] uint32 -> [N, 4] (w, x, y, z)."""
    n = pr.shape[0]
    abc = np.stack([(_unpack(pr, s, 10) - 0.5) / _ROT_NORM for s in (20, 10, 0)], axis=1)  # [N, 3]
    largest = (pr >> np.uint32(30)).astype(np.int64)
    others = np.array([[j for j in range(4) if j != k] for k in range(4)])[largest]  # [N, 3]
    q = np.zeros((n, 4))
    rows = np.arange(n)[:, None]
    q[rows, others] = abc
    q[np.arange(n), largest] = np.sqrt(np.maximum(0.0, 1.0 - (abc**2).sum(axis=1)))
    return q


def read_compressed_ply(path: str | os.PathLike) -> Gaussians:
    """Read a SuperSplat compressed .ply into float32 Gaussians (CompressedPlyFormatError if malformed)."""
    path = Path(os.fspath(path))
    ply = _load(path)
    where = str(path)
    v = _columns(where, ply["vertex"], _VERTEX_PROPS, "<u4")  # [N, 4]
    chunk_names = [p.name for p in ply["chunk"].properties]
    ch = _columns(where, ply["chunk"], _CHUNK_PROPS[:12], "<f8")  # [C, 12]
    n = v.shape[0]
    ci = np.arange(n) // CHUNK
    lerp = lambda lo, hi, t: lo[ci] * (1 - t) + hi[ci] * t  # noqa: E731
    bits = ((21, 11), (11, 10), (0, 11))
    means = np.stack([lerp(ch[:, a], ch[:, 3 + a], _unpack(v[:, 0], *bits[a])) for a in range(3)], axis=1)
    log_scales = np.stack([lerp(ch[:, 6 + a], ch[:, 9 + a], _unpack(v[:, 2], *bits[a])) for a in range(3)], axis=1)
    t = np.stack([_unpack(v[:, 3], s, 8) for s in (24, 16, 8)], axis=1)  # [N, 3]
    if all(p in chunk_names for p in _CHUNK_PROPS[12:]):  # older files store colour unscaled
        cc = _columns(where, ply["chunk"], _CHUNK_PROPS[12:], "<f8")
        t = np.stack([lerp(cc[:, a], cc[:, 3 + a], t[:, a]) for a in range(3)], axis=1)
    logits, moved = clamp_logit(_unpack(v[:, 3], 0, 8), 1.0 / 255.0)
    shN = np.zeros((n, 0, 3))
    if "sh" in [el.name for el in ply.elements]:
        count = sum(1 for p in ply["sh"].properties if p.name.startswith("f_rest_"))
        if count not in (9, 24, 45):
            raise CompressedPlyFormatError(f"{where}: {count} f_rest_* columns in 'sh'; expected 9, 24 or 45")
        b = _columns(where, ply["sh"], tuple(f"f_rest_{i}" for i in range(count)), "<f8")  # [N, 3(K-1)]
        nrm = np.where(b == 0, 0.0, np.where(b == 255, 1.0, (b + 0.5) / 256.0))
        shN = ((nrm - 0.5) * 8.0).reshape(n, 3, count // 3).transpose(0, 2, 1)
    m = ModelArrays(means, _decode_rotation(v[:, 1]), log_scales, logits, (t - 0.5) / SH_C0, shN)
    bad = ~np.isfinite(ch)
    if bad.any():
        raise CompressedPlyFormatError(f"{where}: {int(bad.sum())} non-finite chunk bounds")
    warn_clamped(path, {"opacity bytes 0 or 255 (logit -inf/+inf)": moved})
    return m.to_gaussians()

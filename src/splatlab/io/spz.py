"""Niantic SPZ: gzip (versions 2, 3) or per-attribute zstd (version 4) packed Gaussians.

Spec followed: github.com/nianticlabs/spz at commit 21715c3b7a609ea6fb7c69b8ae42181a12b59f22
(2026-07-10): README.md "File Format" and src/cc/load-spz.cc (packGaussians, unpack,
serializePackedGaussians, the NGSP v4 container). Checked against PlayCanvas splat-transform
v3.7.0 (src/lib/readers/read-spz.ts, writers/write-spz.ts), which reads v2-v4 and writes v4.

Written: version 3 (default) or 2, a gzip stream holding a 16-byte header
(magic 0x5053474e "NGSP", version, numPoints: uint32; shDegree, fractionalBits, flags, reserved:
uint8) and then, for all Gaussians, one block per attribute:

    positions  N x 3 x int24   round(p * 2^fractionalBits), little-endian (12 bits, fewer if needed)
    alphas     N x uint8       round(sigmoid(logit) * 255)
    colors     N x 3 x uint8   round(sh0 * 0.15 * 255 + 127.5)      (not SH_C0: SPZ's colour scale)
    scales     N x 3 x uint8   round((log_scale + 10) * 16)
    rotations  v3: N x uint32  smallest three of the unit (x, y, z, w): 2-bit index of the largest,
                               then 3 x (sign bit + 9-bit |q_i| / sqrt(1/2) * 511)
               v2: N x 3 x uint8  (x, y, z) * 127.5 + 127.5 with w made positive
    sh         N x (K-1) x 3 x uint8  coefficient-major, channel inner; round(v*128)+128 snapped to
                               buckets of 8 (degree 1, 5 bits) or 16 (degrees 2-3, 4 bits)

Read: versions 2, 3 (gzip) and 4 (32-byte "NGSP" header, extension records skipped, a TOC of
(compressed, uncompressed) uint64 sizes, one zstd stream per attribute, in the same order).

Coordinates. The README says SPZ stores RUB (OpenGL) when the caller names its own system, but
its default (`from`/`to` UNSPECIFIED) converts nothing, and both Niantic's ply_to_spz tool and
splat-transform write the .ply's coordinates unchanged. splatlab does the same by default
(`coordinates="rdf"`: bytes hold the Inria .ply's RDF axes), so that files round-trip through
those tools; `coordinates="rub"` converts (y and z negated, with the quaternion and SH signs of
spz's coordinateConverter) for files from applications that store RUB.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from ..gaussians import Gaussians
from ._quantize import ModelArrays, clamp_logit, sigmoid, warn_clamped
from .atomic import atomic_write

__all__ = ["SpzFormatError", "read_spz", "write_spz"]

MAGIC = 0x5053474E  # "NGSP"
COLOR_SCALE = 0.15
Coordinates = Literal["rdf", "rub"]
_SH_COUNT = {0: 0, 1: 9, 2: 24, 3: 45}  # SH values per Gaussian (all channels)
# RDF <-> RUB (x kept, y and z negated): the sign of each higher SH basis function (spz's flipSh).
_RUB_SH_SIGNS = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], dtype=np.float64)


class SpzFormatError(ValueError):
    """A file that is not a readable SPZ; the message names the file and the problem."""


def _to_rub(m: ModelArrays) -> ModelArrays:
    """RDF <-> RUB (its own inverse): negate y and z; a rotation's x stays, y and z flip."""
    k1 = m.shN.shape[1]
    flip = np.array([1.0, -1.0, -1.0])
    return ModelArrays(m.means * flip, m.quats * np.array([1.0, 1.0, -1.0, -1.0]), m.log_scales,
                       m.logits, m.sh0, m.shN * _RUB_SH_SIGNS[:k1, None])


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _fractional_bits(means: np.ndarray, where: str) -> int:
    """12 bits (spz's choice, ~0.25 mm at metre scale) unless the positions need more integer bits."""
    top = float(np.abs(means).max()) if means.size else 0.0
    for bits in range(12, -1, -1):
        if round(top * (1 << bits)) < (1 << 23):
            return bits
    raise ValueError(f"{where}: positions up to {top:g} do not fit SPZ's 24-bit fixed point (|p| < 2^23)")


def _pack_smallest_three(unit_wxyz: np.ndarray) -> np.ndarray:
    """[N, 4] unit (w,x,y,z) -> [N] uint32 as packQuaternionSmallestThree (components in x,y,z,w order)."""
    q = unit_wxyz[:, [1, 2, 3, 0]]  # [N, 4] x y z w
    n = q.shape[0]
    largest = np.abs(q).argmax(axis=1)
    negate = q[np.arange(n), largest] < 0
    comp = largest.astype(np.uint32)
    for i in range(4):
        keep = largest != i
        neg = ((q[:, i] < 0) ^ negate).astype(np.uint32)
        mag = np.floor(511.0 * np.abs(q[:, i]) / np.sqrt(0.5) + 0.5).astype(np.uint32)
        comp = np.where(keep, (comp << np.uint32(10)) | (neg << np.uint32(9)) | np.minimum(mag, 511), comp)
    return comp.astype("<u4")


def _quantize_sh(shN: np.ndarray) -> np.ndarray:
    """[N, K-1, 3] -> [N, (K-1)*3] uint8: 5 bits for degree 1, 4 bits above (spz's defaults)."""
    q = np.round(shN * 128.0).astype(np.int64) + 128
    bucket = np.where(np.arange(shN.shape[1]) < 3, 8, 16)[None, :, None]
    q = (q + bucket // 2) // bucket * bucket
    return np.clip(q, 0, 255).astype(np.uint8).reshape(shN.shape[0], -1)


def spz_payload(gaussians: Gaussians, version: int = 3, coordinates: Coordinates = "rdf", where: str = "") -> bytes:
    """The uncompressed v2/v3 body (16-byte header + attribute blocks)."""
    if version not in (2, 3):
        raise ValueError(f"SPZ version {version} cannot be written; choose 2 or 3")
    m = ModelArrays.from_gaussians(gaussians)
    m = _to_rub(m) if coordinates == "rub" else m
    n, degree = m.means.shape[0], gaussians.sh_degree
    bits = _fractional_bits(m.means, where or "SPZ")
    pos = np.round(m.means * (1 << bits)).astype("<i4").view(np.uint8).reshape(n, 3, 4)[:, :, :3]
    unit = m.unit_quats()
    if version == 3:
        rot = _pack_smallest_three(unit).view(np.uint8)
    else:
        xyz = unit[:, 1:] * np.where(unit[:, :1] < 0, -127.5, 127.5) + 127.5
        rot = _u8(xyz)
    header = struct.pack("<IIIBBBB", MAGIC, version, n, degree, bits, 0, 0)
    blocks = [pos, _u8(sigmoid(m.logits) * 255.0), _u8(m.sh0 * (COLOR_SCALE * 255.0) + 127.5),
              _u8((m.log_scales + 10.0) * 16.0), rot, _quantize_sh(m.shN)]
    return header + b"".join(np.ascontiguousarray(b).tobytes() for b in blocks)


def write_spz(path: str | os.PathLike, gaussians: Gaussians, version: int = 3,
              coordinates: Coordinates = "rdf") -> Path:
    """Write `gaussians` as a gzip SPZ (version 3 by default; atomically). Returns the path."""
    target = Path(os.fspath(path))
    payload = spz_payload(gaussians, version, coordinates, str(target))
    with atomic_write(target, "wb") as f:
        f.write(gzip.compress(payload, compresslevel=6, mtime=0))  # zlib's default; 9 is 15x slower, 3% smaller
    return target


# ---- reading ----------------------------------------------------------------------------------


def _gunzip(raw: bytes, where: str) -> bytes:
    try:
        return gzip.decompress(raw)
    except EOFError as e:
        raise SpzFormatError(f"{where}: truncated gzip stream (the file ends before the compressed data does)") from e
    except (OSError, zlib.error) as e:
        raise SpzFormatError(f"{where}: corrupt gzip stream: {e}") from e


def _block_sizes(n: int, degree: int, version: int) -> list[int]:
    """Bytes of positions, alphas, colors, scales, rotations, sh."""
    return [9 * n, n, 3 * n, 3 * n, (4 if version >= 3 else 3) * n, _SH_COUNT[degree] * n]


def _check_header(where: str, version: int, degree: int, allowed: tuple[int, ...]) -> None:
    if version not in allowed:
        raise SpzFormatError(
            f"{where}: unsupported SPZ version {version}; splatlab reads versions 2 and 3 (gzip) and 4 (zstd)")
    if degree not in _SH_COUNT:
        raise SpzFormatError(f"{where}: SH degree {degree}; splatlab reads SPZ of SH degree 0 to 3")


def _split_legacy(body: bytes, where: str) -> tuple[int, int, int, list[bytes]]:
    if len(body) < 16:
        raise SpzFormatError(f"{where}: {len(body)} bytes after gunzip, less than the 16-byte SPZ header")
    magic, version, n, degree, bits, _flags, _ = struct.unpack_from("<IIIBBBB", body)
    if magic != MAGIC:
        raise SpzFormatError(f"{where}: bad magic 0x{magic:08x} in the gzip stream, expected 0x{MAGIC:08x} ('NGSP')")
    _check_header(where, version, degree, (2, 3))
    sizes = _block_sizes(n, degree, version)
    if len(body) < 16 + sum(sizes):
        raise SpzFormatError(f"{where}: body holds {len(body) - 16} bytes, {sum(sizes)} expected for "
                             f"{n} Gaussians of SH degree {degree}: truncated")
    offsets = np.cumsum([16] + sizes)
    return version, n, bits, [body[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def _split_v4(raw: bytes, where: str) -> tuple[int, int, int, list[bytes]]:
    if len(raw) < 32:
        raise SpzFormatError(f"{where}: {len(raw)} bytes, less than the 32-byte SPZ v4 header")
    _magic, version, n, degree, bits, _flags, streams, toc = struct.unpack_from("<IIIBBBBI", raw)
    _check_header(where, version, degree, (4,))
    try:
        import zstandard  # SPZ v4 streams are zstd; Python's standard library has no zstd before 3.14
    except ImportError as e:
        raise SpzFormatError(f"{where}: SPZ version 4 needs the 'zstandard' package (pip install zstandard)") from e
    sizes = _block_sizes(n, degree, 4)
    if streams not in ((5, 6) if degree == 0 else (6,)) or toc < 32 or toc + 16 * streams > len(raw):
        raise SpzFormatError(f"{where}: SPZ v4 table of contents ({streams} streams at byte {toc}) does not fit "
                             f"the file of {len(raw)} bytes: truncated or corrupt")
    blocks, offset = [], toc + 16 * streams
    for i in range(streams):
        packed, unpacked = struct.unpack_from("<QQ", raw, toc + 16 * i)
        if unpacked != sizes[i] or offset + packed > len(raw):
            raise SpzFormatError(f"{where}: SPZ v4 stream {i} declares {unpacked} bytes ({sizes[i]} expected) "
                                 f"stored in {packed} at byte {offset} of {len(raw)}: truncated or corrupt")
        try:
            data = zstandard.ZstdDecompressor().decompress(raw[offset:offset + packed], max_output_size=unpacked)
        except zstandard.ZstdError as e:
            raise SpzFormatError(f"{where}: SPZ v4 stream {i} is not valid zstd: {e}") from e
        if len(data) != unpacked:
            raise SpzFormatError(f"{where}: SPZ v4 stream {i} holds {len(data)} bytes, {unpacked} declared")
        blocks.append(data)
        offset += packed
    return 4, n, bits, blocks + [b""] * (6 - streams)


def _unpack_smallest_three(packed: np.ndarray) -> np.ndarray:
    """[N] uint32 -> [N, 4] unit (w, x, y, z)."""
    n = packed.shape[0]
    largest = (packed >> np.uint32(30)).astype(np.int64)
    q = np.zeros((n, 4))  # x y z w
    rest = packed.copy()
    total = np.zeros(n)
    for j in range(3, -1, -1):
        keep = largest != j
        mag = (rest & np.uint32(511)).astype(np.float64)
        v = np.sqrt(0.5) * mag / 511.0 * np.where((rest >> np.uint32(9)) & np.uint32(1), -1.0, 1.0)
        q[:, j] = np.where(keep, v, 0.0)
        total += np.where(keep, v * v, 0.0)
        rest = np.where(keep, rest >> np.uint32(10), rest)
    q[np.arange(n), largest] = np.sqrt(np.maximum(0.0, 1.0 - total))
    return q[:, [3, 0, 1, 2]]


def read_spz(path: str | os.PathLike, coordinates: Coordinates = "rdf") -> Gaussians:
    """Read an SPZ file (versions 2, 3, 4) into float32 Gaussians (SpzFormatError if malformed).

    Alpha bytes 0 and 255 (logit -inf/+inf) are read half a step inside and counted in one warning.
    """
    path = Path(os.fspath(path))
    where, raw = str(path), path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        version, n, bits, blocks = _split_legacy(_gunzip(raw, where), where)
    elif raw[:4] == struct.pack("<I", MAGIC):
        version, n, bits, blocks = _split_v4(raw, where)
    else:
        raise SpzFormatError(f"{where}: bad magic {raw[:4]!r}: neither a gzip stream (SPZ v2/v3, 1f 8b) "
                             "nor 'NGSP' (SPZ v4)")
    pos24 = np.frombuffer(blocks[0], np.uint8).reshape(n, 3, 3).astype(np.int32)
    fixed = pos24[..., 0] | (pos24[..., 1] << 8) | (pos24[..., 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)  # sign-extend 24 bits
    alphas = np.frombuffer(blocks[1], np.uint8).astype(np.float64) / 255.0
    colors = np.frombuffer(blocks[2], np.uint8).reshape(n, 3).astype(np.float64)
    scales = np.frombuffer(blocks[3], np.uint8).reshape(n, 3).astype(np.float64)
    if version >= 3:
        quats = _unpack_smallest_three(np.frombuffer(blocks[4], "<u4"))
    else:
        xyz = np.frombuffer(blocks[4], np.uint8).reshape(n, 3) / 127.5 - 1.0
        quats = np.concatenate([np.sqrt(np.maximum(0.0, 1.0 - (xyz**2).sum(1, keepdims=True))), xyz], axis=1)
    sh = np.frombuffer(blocks[5], np.uint8).astype(np.float64)
    logits, moved = clamp_logit(alphas, 1.0 / 255.0)
    m = ModelArrays(fixed / float(1 << bits), quats, scales / 16.0 - 10.0, logits,
                    (colors / 255.0 - 0.5) / COLOR_SCALE, ((sh - 128.0) / 128.0).reshape(n, -1, 3))
    warn_clamped(path, {"alpha bytes 0 or 255 (logit -inf/+inf)": moved})
    return (_to_rub(m) if coordinates == "rub" else m).to_gaussians()

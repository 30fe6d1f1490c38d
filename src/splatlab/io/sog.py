"""PlayCanvas SOG ("spatially ordered Gaussians", version 2): meta.json + lossless WebP images.

Spec followed: PlayCanvas splat-transform v3.7.0 (commit 0f60b17, npm
`@playcanvas/splat-transform@3.7.0`) src/lib/writers/write-sog.ts and src/lib/readers/read-sog.ts,
and the PlayCanvas manual page user-manual/gaussian-splatting/formats/sog. Two containers:
a bundled `.sog` (a zip of meta.json and the images) or an unbundled `meta.json` with the
images beside it. Every image is W x H RGBA, W = ceil(sqrt(N)/4)*4, H = ceil(N/W/4)*4, one texel
per Gaussian in row-major order (Gaussians are stored in Morton order, so neighbours in the
image are neighbours in space, which is what makes the images compress):

    means_l/means_u.webp  low/high byte of 16-bit x y z, each sign(v)*log(|v|+1) mapped from
                          meta means.mins..maxs (per axis)
    quats.webp            smallest three of the unit (w,x,y,z), made positive-largest: RGB =
                          255*(q_i*sqrt(2)*0.5+0.5), A = 252 + index of the largest
    scales.webp           RGB = indices into meta scales.codebook (256 log scales)
    sh0.webp              RGB = indices into meta sh0.codebook (256 DC coefficients),
                          A = sigmoid(opacity)*255
    shN_labels.webp       (SH degree > 0) RG = 16-bit index into a palette of meta shN.count
                          SH vectors; shN_centroids.webp: 64 palette entries per row, each entry
                          (K-1) texels whose RGB index meta shN.codebook (256 values), R/G/B channel

WebP goes through Pillow (already a dependency for images, and built with libwebp): lossless,
with `exact=True` so that colour under zero alpha (sh0 of transparent Gaussians) is kept.
Coordinates are the Inria .ply's (splat-transform bakes its PLY transform before writing).
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..gaussians import Gaussians
from ._quantize import ModelArrays, clamp_logit, morton_order, sigmoid, warn_clamped
from .atomic import atomic_write
from .palette import scalar_codebook, vector_palette

__all__ = ["SogFormatError", "read_sog", "write_sog"]

_SH_COEFFS = {0: 0, 1: 3, 2: 8, 3: 15}
_QUAT_OTHERS = np.array([[j for j in range(4) if j != k] for k in range(4)])  # [4, 3]


class SogFormatError(ValueError):
    """A SOG that cannot be read; the message names the file and the problem."""


def _webp(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba, dtype=np.uint8), "RGBA").save(
        buf, format="WEBP", lossless=True, exact=True, quality=50, method=4)  # effort: 100 is 30x slower, <0.1% smaller
    return buf.getvalue()


def _log_transform(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.log(np.abs(v) + 1.0)


def default_palette_size(n: int) -> int:
    """SH palette entries: splat-transform's rule, min(64, 2^floor(log2(N/1024))) * 1024, capped
    at the power of two <= N/8. An entry costs about 40 bytes (45 barely compressible codebook
    indices), so the cap keeps the palette near 5 bytes per Gaussian; splat-transform's rule alone
    gives 65536 entries (26 B/Gaussian) to a 100k model. From 512k Gaussians on both agree."""
    if n <= 0:
        return 0
    rule = min(64.0, 2.0 ** math.floor(math.log2(n / 1024))) * 1024
    cap = 2.0 ** math.floor(math.log2(max(n / 8, 1)))
    return int(min(rule, cap, n))


def _texels(values: np.ndarray, width: int, height: int, fill: int = 0) -> np.ndarray:
    """[N, 4] uint8 -> [H, W, 4] image, unused texels `fill`."""
    out = np.full((width * height, 4), fill, dtype=np.uint8)
    out[: values.shape[0]] = values
    return out.reshape(height, width, 4)


def _encode_quats(unit: np.ndarray) -> np.ndarray:
    """[N, 4] unit (w,x,y,z) -> [N, 4] uint8."""
    n = unit.shape[0]
    largest = np.abs(unit).argmax(axis=1)
    q = unit * (np.where(unit[np.arange(n), largest] < 0, -1.0, 1.0) * np.sqrt(2.0))[:, None]
    others = q[np.arange(n)[:, None], _QUAT_OTHERS[largest]]  # [N, 3]
    rgb = np.clip(np.trunc(255.0 * (others * 0.5 + 0.5)), 0, 255)
    return np.concatenate([rgb, (252 + largest)[:, None]], axis=1).astype(np.uint8)


def _sog_images(m: ModelArrays, degree: int, palette_size: int | None) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta.json content, {file name: [H, W, 4] uint8}) for Gaussians already in file order."""
    n = m.means.shape[0]
    width = max(4, math.ceil(math.sqrt(n) / 4) * 4)
    height = max(4, math.ceil(n / width / 4) * 4)
    lt = _log_transform(m.means)  # [N, 3]
    mins, maxs = lt.min(axis=0), lt.max(axis=0)
    span = np.where(maxs > mins, maxs - mins, 1.0)
    q16 = np.clip(np.trunc(65535.0 * (lt - mins) / span), 0, 65535).astype(np.uint32)  # [N, 3]
    alpha255 = np.full((n, 1), 255, np.uint8)
    images = {
        "means_l.webp": np.concatenate([(q16 & 0xFF).astype(np.uint8), alpha255], axis=1),
        "means_u.webp": np.concatenate([(q16 >> 8).astype(np.uint8), alpha255], axis=1),
        "quats.webp": _encode_quats(m.unit_quats()),
    }
    s_code, s_lab = scalar_codebook(m.log_scales)
    images["scales.webp"] = np.concatenate([s_lab, alpha255], axis=1)
    c_code, c_lab = scalar_codebook(m.sh0)
    opacity = np.clip(np.trunc(sigmoid(m.logits) * 255.0), 0, 255).astype(np.uint8)[:, None]
    images["sh0.webp"] = np.concatenate([c_lab, opacity], axis=1)
    meta = {
        "version": 2, "asset": {"generator": "splatlab"}, "count": n,
        "means": {"mins": mins.tolist(), "maxs": maxs.tolist(), "files": ["means_l.webp", "means_u.webp"]},
        "scales": {"codebook": s_code.tolist(), "files": ["scales.webp"]},
        "quats": {"files": ["quats.webp"]},
        "sh0": {"codebook": c_code.tolist(), "files": ["sh0.webp"]},
    }
    images = {name: _texels(v, width, height) for name, v in images.items()}
    if degree > 0:
        meta["shN"], sh_images = _sh_images(m.shN, degree, palette_size, width, height)
        images.update(sh_images)
    return meta, images


def _sh_images(shN: np.ndarray, degree: int, palette_size: int | None, width: int, height: int):
    n, coeffs = shN.shape[0], _SH_COEFFS[degree]
    rows = shN.transpose(0, 2, 1).reshape(n, 3 * coeffs)  # [N, 3(K-1)] channel-major, as f_rest
    k = default_palette_size(n) if palette_size is None else min(int(palette_size), n, 65536)
    palette, labels = vector_palette(rows, k)  # [P, 3(K-1)], [N]
    p = palette.shape[0]
    code, idx = scalar_codebook(palette)  # [256], [P, 3(K-1)] uint8
    cent = np.zeros((math.ceil(p / 64) * 64, coeffs, 4), np.uint8)
    cent[:p, :, :3] = idx.reshape(p, 3, coeffs).transpose(0, 2, 1)
    cent[:, :, 3] = 255
    lab = np.zeros((n, 4), np.uint8)
    lab[:, 0], lab[:, 1], lab[:, 3] = labels & 0xFF, labels >> 8, 255
    meta = {"count": p, "bands": degree, "codebook": code.tolist(),
            "files": ["shN_centroids.webp", "shN_labels.webp"]}
    images = {"shN_centroids.webp": cent.reshape(-1, 64 * coeffs, 4), "shN_labels.webp": _texels(lab, width, height)}
    return meta, images


def write_sog(path: str | os.PathLike, gaussians: Gaussians, palette_size: int | None = None) -> Path:
    """Write a SOG: a bundled `.sog` zip, or, for a path ending in meta.json, meta.json + images beside it.

    palette_size: SH palette entries (None: default_palette_size, up to 65536). Atomic per file;
    for the unbundled form meta.json is written last, so a reader never sees missing images.
    """
    target = Path(os.fspath(path))
    if len(gaussians) == 0:
        raise ValueError(f"{target}: SOG cannot hold an empty model")
    m = ModelArrays.from_gaussians(gaussians)
    order = morton_order(m.means)
    m = ModelArrays(m.means[order], m.quats[order], m.log_scales[order], m.logits[order], m.sh0[order], m.shN[order])
    meta, images = _sog_images(m, gaussians.sh_degree, palette_size)
    blobs = {name: _webp(img) for name, img in images.items()}
    meta_bytes = json.dumps(meta).encode("utf-8")
    if target.name.lower().endswith("meta.json"):
        for name, blob in blobs.items():
            with atomic_write(target.parent / name, "wb") as f:
                f.write(blob)
        with atomic_write(target, "wb") as f:
            f.write(meta_bytes)
        return target
    with atomic_write(target, "wb") as f:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:  # WebP is compressed already
            z.writestr("meta.json", meta_bytes)
            for name, blob in blobs.items():
                z.writestr(name, blob)
    return target


# ---- reading ----------------------------------------------------------------------------------


class _Files:
    """The files of a SOG, from its zip or from the folder of its meta.json."""

    def __init__(self, path: Path):
        self.path, self.zip = path, None
        if not path.name.lower().endswith("meta.json"):
            try:
                self.zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as e:
                raise SogFormatError(f"{path}: not a SOG bundle (a zip of meta.json and WebP images): {e}") from e

    def read(self, name: str, what: str) -> bytes:
        try:
            if self.zip is not None:
                return self.zip.read(name)
            return (self.path.parent / name).read_bytes()
        except (KeyError, FileNotFoundError, IsADirectoryError) as e:
            inside = f"inside {self.path}" if self.zip is not None else f"in {self.path.parent}"
            raise SogFormatError(f"{self.path}: {what} points to '{name}', which is missing {inside}") from e
        except (zipfile.BadZipFile, OSError) as e:
            raise SogFormatError(f"{self.path}: cannot read '{name}': {e}") from e

    def image(self, name: str, count: int) -> np.ndarray:
        """[H*W, 4] uint8 texels of a WebP file, checked to hold `count` of them."""
        blob = self.read(name, "meta.json")
        try:
            with Image.open(io.BytesIO(blob)) as im:
                rgba = np.asarray(im.convert("RGBA"))
        except Exception as e:  # Pillow raises several types for undecodable images
            raise SogFormatError(f"{self.path}: '{name}' is not a readable WebP image: {e}") from e
        flat = rgba.reshape(-1, 4)
        if flat.shape[0] < count:
            raise SogFormatError(f"{self.path}: '{name}' has {flat.shape[0]} texels, fewer than {count}")
        return flat


def _meta(files: _Files) -> dict:
    name = files.path.name if files.zip is None else "meta.json"
    raw = files.read(name, "the SOG") if files.zip is not None else files.path.read_bytes()
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SogFormatError(f"{files.path}: meta.json is not valid JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("version") != 2:
        found = meta.get("version") if isinstance(meta, dict) else type(meta).__name__
        raise SogFormatError(f"{files.path}: SOG meta.json version {found!r}; splatlab reads version 2")
    for key in ("count", "means", "scales", "quats", "sh0"):
        if key not in meta:
            raise SogFormatError(f"{files.path}: meta.json has no '{key}' entry")
    return meta


def _decode_quats(t: np.ndarray) -> np.ndarray:
    """[N, 4] uint8 -> [N, 4] (w, x, y, z); a tag outside 252..255 reads as the identity."""
    n = t.shape[0]
    tag = t[:, 3].astype(np.int64) - 252
    ok = (tag >= 0) & (tag <= 3)
    tag = np.where(ok, tag, 0)
    abc = (t[:, :3].astype(np.float64) / 255.0 * 2.0 - 1.0) / np.sqrt(2.0)  # [N, 3]
    q = np.zeros((n, 4))
    q[np.arange(n)[:, None], _QUAT_OTHERS[tag]] = abc
    q[np.arange(n), tag] = np.sqrt(np.maximum(0.0, 1.0 - (abc**2).sum(1)))
    return np.where(ok[:, None], q, np.array([1.0, 0.0, 0.0, 0.0]))


def _decode_shN(files: _Files, meta: dict, n: int) -> np.ndarray:
    sh = meta.get("shN")
    if not sh or _SH_COEFFS.get(sh.get("bands", 0), 0) == 0:
        return np.zeros((n, 0, 3))
    coeffs = _SH_COEFFS[sh["bands"]]
    code = np.asarray(sh["codebook"], np.float64)
    cent = files.image(sh["files"][0], 0)
    lab = files.image(sh["files"][1], n)[:n]
    labels = lab[:, 0].astype(np.int64) | (lab[:, 1].astype(np.int64) << 8)
    entries = cent.reshape(-1, coeffs, 4)[:, :, :3]  # [P, K-1, 3] codebook indices
    count = min(int(sh["count"]), entries.shape[0])
    valid = labels < count
    shN = code[entries[np.where(valid, labels, 0)]]  # [N, K-1, 3]
    return np.where(valid[:, None, None], shN, 0.0)


def read_sog(path: str | os.PathLike) -> Gaussians:
    """Read a SOG (.sog bundle or meta.json + images) into float32 Gaussians (file order)."""
    path = Path(os.fspath(path))
    files = _Files(path)
    meta = _meta(files)
    try:
        return _decode(path, files, meta)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        if isinstance(e, SogFormatError):
            raise
        raise SogFormatError(f"{path}: meta.json does not describe a readable SOG ({type(e).__name__}: {e})") from e


def _decode(path: Path, files: _Files, meta: dict) -> Gaussians:
    n = int(meta["count"])
    means_l = files.image(meta["means"]["files"][0], n)[:n, :3].astype(np.float64)
    means_u = files.image(meta["means"]["files"][1], n)[:n, :3].astype(np.float64)
    mins, maxs = np.asarray(meta["means"]["mins"], np.float64), np.asarray(meta["means"]["maxs"], np.float64)
    span = np.where(maxs - mins != 0, maxs - mins, 1.0)
    lt = mins + span * (means_l + 256.0 * means_u) / 65535.0
    means = np.sign(lt) * (np.exp(np.abs(lt)) - 1.0)
    quats = _decode_quats(files.image(meta["quats"]["files"][0], n)[:n])
    s_code = np.asarray(meta["scales"]["codebook"], np.float64)
    log_scales = s_code[files.image(meta["scales"]["files"][0], n)[:n, :3]]
    sh0_img = files.image(meta["sh0"]["files"][0], n)[:n]
    sh0 = np.asarray(meta["sh0"]["codebook"], np.float64)[sh0_img[:, :3]]
    logits, moved = clamp_logit(sh0_img[:, 3].astype(np.float64) / 255.0, 1.0 / 255.0)
    m = ModelArrays(means, quats, log_scales, logits, sh0, _decode_shN(files, meta, n))
    warn_clamped(path, {"opacity bytes 0 or 255 (logit -inf/+inf)": moved})
    return m.to_gaussians()

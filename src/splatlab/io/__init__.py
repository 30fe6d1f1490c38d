"""Model files every viewer reads: Inria .ply, web-viewer .splat, glTF KHR_gaussian_splatting.

    write_ply / read_ply        Inria 3DGS layout, raw parameters, float32 bit-exact round trip
    write_splat / read_splat    32-byte records of the common web viewers (DC colour only, quantised)
    write_gltf / read_gltf      glTF 2.0 + KHR_gaussian_splatting (.glb, or .gltf + .bin)
    write_usd / read_usd        OpenUSD ParticleField3DGaussianSplat (.usd/.usda/.usdc/.usdz; usd-core)
    write_spz / read_spz        Niantic SPZ (gzip v2/v3 written; v2-v4 read)
    write_sog / read_sog        PlayCanvas SOG v2 (.sog zip, or meta.json + WebP images)
    write_compressed_ply / read_compressed_ply   SuperSplat compressed .ply (.compressed.ply)
    FORMATS                     the registry of formats: export_model / read_model dispatch on it
    atomic_write                context manager yielding an open FILE OBJECT whose content replaces
                                the target on a clean exit (temp file in the same directory, fsync,
                                os.replace); atomic_write_path yields a temporary PATH instead.

Every writer goes through atomic_write, so an interrupted export never leaves a half-written model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..gaussians import Gaussians
from .atomic import atomic_write, atomic_write_path
from .images import save_png, to_uint8
from .compressed_ply import CompressedPlyFormatError, read_compressed_ply, write_compressed_ply
from .gltf import GltfFormatError, read_gltf, write_gltf
from .ply import PlyFormatError, read_ply, write_ply
from .sog import SogFormatError, read_sog, write_sog
from .splat import SplatData, SplatFormatError, read_splat, write_splat
from .spz import SpzFormatError, read_spz, write_spz
from .usd import UsdFormatError, read_usd, write_usd  # pxr itself is imported only when used

__all__ = [
    "EXPORT_FORMATS",
    "FORMATS",
    "ModelFormat",
    "read_model",
    "CompressedPlyFormatError",
    "GltfFormatError",
    "PlyFormatError",
    "SplatData",
    "SogFormatError",
    "SplatFormatError",
    "SpzFormatError",
    "UsdFormatError",
    "atomic_write",
    "atomic_write_path",
    "export_model",
    "format_from_suffix",
    "read_compressed_ply",
    "read_gltf",
    "read_ply",
    "read_sog",
    "read_splat",
    "read_spz",
    "read_usd",
    "save_png",
    "to_uint8",
    "write_compressed_ply",
    "write_gltf",
    "write_ply",
    "write_sog",
    "write_splat",
    "write_spz",
    "write_usd",
]


@dataclass(frozen=True)
class ModelFormat:
    """One file format a model can be written to and (where `read` is set) read from."""

    name: str  # what --format takes
    suffixes: tuple[str, ...]  # file name endings that mean this format (lower case, with the dot)
    write: Callable[[Path, Gaussians], Path]  # (path, gaussians) -> the main file written
    read: Optional[Callable[[Path], Gaussians]]  # path -> float32 Gaussians on the CPU
    description: str


def _read_splat(path: Path) -> Gaussians:
    return read_splat(path).to_gaussians()


# The registry: every command that takes or writes a MODEL goes through it. A format module
# adds itself with one line here. A name ending in two suffixes goes to the longer one
# (x.compressed.ply is "compressed.ply", not "ply"); the order is the one --help lists.
FORMATS: dict[str, ModelFormat] = {
    f.name: f
    for f in (
        ModelFormat("ply", (".ply",), write_ply, read_ply, "Inria 3DGS .ply (float32, what every viewer reads)"),
        ModelFormat("splat", (".splat",), write_splat, _read_splat, "32 bytes per Gaussian, DC colour only"),
        ModelFormat("gltf", (".gltf",), lambda p, g: write_gltf(p, g, binary=False), read_gltf,
                    "glTF 2.0 + KHR_gaussian_splatting, .gltf + .bin"),
        ModelFormat("glb", (".glb",), lambda p, g: write_gltf(p, g, binary=True), read_gltf,
                    "glTF 2.0 + KHR_gaussian_splatting, one binary file"),
        *(ModelFormat(name, (f".{name}",), lambda p, g, name=name: write_usd(p, g, format=name), read_usd,
                      f"OpenUSD UsdVol.ParticleField3DGaussianSplat, {kind} (needs splatlab[usd])")
          for name, kind in (("usd", "binary crate"), ("usda", "text"), ("usdc", "binary crate"),
                             ("usdz", "zip package"))),
        ModelFormat("spz", (".spz",), write_spz, read_spz, "Niantic SPZ v3 (gzip; v2-v4 read)"),
        ModelFormat("sog", (".sog", "meta.json"), write_sog, read_sog,
                    "PlayCanvas SOG: .sog bundle, or meta.json + WebP images beside it"),
        ModelFormat("compressed.ply", (".compressed.ply",), write_compressed_ply, read_compressed_ply,
                    "SuperSplat compressed .ply: 256-Gaussian chunks, 16 bytes + 8-bit SH each"),
    )
}
EXPORT_FORMATS = tuple(FORMATS)


def format_from_suffix(path: str | os.PathLike) -> str:
    """The registered format whose suffix ends the file name (the longest that does: .compressed.ply
    before .ply); ValueError for anything else."""
    name = Path(os.fspath(path)).name.lower()
    matches = [(len(s), fmt.name) for fmt in FORMATS.values() for s in fmt.suffixes if name.endswith(s)]
    if matches:
        return max(matches)[1]
    known = ", ".join(s for f in FORMATS.values() for s in f.suffixes)
    raise ValueError(
        f"cannot tell the format of {os.fspath(path)!r} from its suffix {Path(name).suffix!r}: "
        f"expected a file ending in one of {known}"
    )


def export_model(path: str | os.PathLike, gaussians: Gaussians, format: str | None = None) -> Path:
    """Write `gaussians` to `path` as `format` (a FORMATS key; None: from the suffix).

    The path is used as given, whatever its suffix. Returns the path of the main file written.
    """
    fmt = format_from_suffix(path) if format is None else str(format).lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    return FORMATS[fmt].write(Path(os.fspath(path)), gaussians)


def read_model(path: str | os.PathLike) -> Gaussians:
    """Read a model file of any registered format (from its suffix) into float32 CPU Gaussians."""
    path = Path(os.fspath(path))
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    fmt = FORMATS[format_from_suffix(path)]
    if fmt.read is None:
        raise ValueError(f"{path}: splatlab can write {fmt.name} files but not read them")
    return fmt.read(path)

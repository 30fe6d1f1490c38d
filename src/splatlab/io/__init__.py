"""Model files every viewer reads: Inria .ply, web-viewer .splat, glTF KHR_gaussian_splatting.

    write_ply / read_ply        Inria 3DGS layout, raw parameters, float32 bit-exact round trip
    write_splat / read_splat    32-byte records of the common web viewers (DC colour only, quantised)
    write_gltf / read_gltf      glTF 2.0 + KHR_gaussian_splatting (.glb, or .gltf + .bin)
    export_model                one entry point, format from the suffix
    atomic_write                context manager yielding an open FILE OBJECT whose content replaces
                                the target on a clean exit (temp file in the same directory, fsync,
                                os.replace); atomic_write_path yields a temporary PATH instead.

Every writer goes through atomic_write, so an interrupted export never leaves a half-written model.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..gaussians import Gaussians
from .atomic import atomic_write, atomic_write_path
from .images import save_png, to_uint8
from .gltf import GltfFormatError, read_gltf, write_gltf
from .ply import PlyFormatError, read_ply, write_ply
from .splat import SplatData, SplatFormatError, read_splat, write_splat

__all__ = [
    "EXPORT_FORMATS",
    "GltfFormatError",
    "PlyFormatError",
    "SplatData",
    "SplatFormatError",
    "atomic_write",
    "atomic_write_path",
    "export_model",
    "format_from_suffix",
    "read_gltf",
    "read_ply",
    "read_splat",
    "save_png",
    "to_uint8",
    "write_gltf",
    "write_ply",
    "write_splat",
]

EXPORT_FORMATS = ("ply", "splat", "gltf", "glb")
_SUFFIXES = {".ply": "ply", ".splat": "splat", ".gltf": "gltf", ".glb": "glb"}


def format_from_suffix(path: str | os.PathLike) -> str:
    """'ply' | 'splat' | 'gltf' | 'glb' from the file name; ValueError for anything else."""
    suffix = Path(os.fspath(path)).suffix.lower()
    try:
        return _SUFFIXES[suffix]
    except KeyError:
        raise ValueError(
            f"cannot tell the export format of {os.fspath(path)!r} from its suffix {suffix!r}: "
            f"use one of {', '.join(_SUFFIXES)} or pass format= one of {EXPORT_FORMATS}"
        ) from None


def export_model(path: str | os.PathLike, gaussians: Gaussians, format: str | None = None) -> Path:
    """Write `gaussians` to `path` as `format` (ply | splat | gltf | glb; None: from the suffix).

    The path is used as given, whatever its suffix. 'gltf' writes `path` plus `<stem>.bin` beside it;
    'glb' writes one binary file. Returns the path of the main file written.
    """
    fmt = format_from_suffix(path) if format is None else str(format).lower().lstrip(".")
    if fmt == "ply":
        return write_ply(path, gaussians)
    if fmt == "splat":
        return write_splat(path, gaussians)
    if fmt in ("gltf", "glb"):
        return write_gltf(path, gaussians, binary=(fmt == "glb"))
    raise ValueError(f"unknown export format {format!r}; expected one of {EXPORT_FORMATS}")

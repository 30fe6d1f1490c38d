"""The Inria 3DGS .ply layout: what the official implementation writes and every viewer reads.

One `vertex` element, binary little-endian, float32 properties in this order:

    x y z                        position                               <- means
    nx ny nz                     normals, always written as zeros (unused)
    f_dc_0 f_dc_1 f_dc_2         DC SH coefficient, R G B               <- sh0[:, 0, :]
    f_rest_0 .. f_rest_{3(K-1)-1} higher SH coefficients, CHANNEL-MAJOR: <- shN
                                 all K-1 red coefficients, then green, then blue
                                 (f_rest_{c*(K-1) + k-1} = shN[:, k-1, c])
    opacity                      logit of the opacity                   <- logit_opacities
    scale_0 scale_1 scale_2      log of the per-axis scale              <- log_scales
    rot_0 .. rot_3               quaternion w, x, y, z, unnormalised    <- quats

K = (degree+1)^2, so the f_rest count is 0, 9, 24 or 45 for SH degree 0..3 (62 properties at degree 3).
Parameters are stored raw (no activation), so a float32 model round-trips bit for bit.

Reading is lenient where that is safe (property order, extra properties, missing normals, double
precision, ASCII or big-endian PLY) and strict where it is not: anything else raises
`PlyFormatError` naming the file and the problem.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement, PlyElementParseError, PlyHeaderParseError, PlyListProperty

from ..gaussians import Gaussians
from ..sh import num_sh_bases
from .atomic import atomic_write

__all__ = ["PlyFormatError", "write_ply", "read_ply", "ply_property_names"]


class PlyFormatError(ValueError):
    """A .ply file that is not a readable 3DGS model; the message names the file and the problem."""


_F_REST_COUNT_TO_DEGREE = {0: 0, 9: 1, 24: 2, 45: 3}
_F_REST_RE = re.compile(r"^f_rest_(\d+)$")
# PLY type names (as they appear in a header) for numpy dtype codes, for error messages.
_PLY_TYPE_NAMES = {
    "i1": "char (int8)", "u1": "uchar (uint8)", "i2": "short (int16)", "u2": "ushort (uint16)",
    "i4": "int (int32)", "u4": "uint (uint32)", "f4": "float (float32)", "f8": "double (float64)",
}


def ply_property_names(sh_degree: int) -> list[str]:
    """The vertex property names, in the official order, for a model of this SH degree."""
    n_rest = 3 * (num_sh_bases(sh_degree) - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


# ---- writing ----------------------------------------------------------------------------------


def _to_numpy_f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float32).numpy()


def write_ply(path: str | os.PathLike, gaussians: Gaussians) -> Path:
    """Write `gaussians` as an Inria 3DGS .ply (atomically). Returns the path written.

    Parameters are converted to float32 (exact for float32 models). Raises ValueError, naming the
    parameter, for malformed shapes or NaN/Inf values (such a file could not be read back).
    """
    gaussians.validate(check_finite=True)
    n = len(gaussians)
    k = gaussians.shN.shape[1] + 1
    means = _to_numpy_f32(gaussians.means)  # [N, 3]
    sh0 = _to_numpy_f32(gaussians.sh0).reshape(n, 3)  # [N, 3]
    rest = _to_numpy_f32(gaussians.shN).transpose(0, 2, 1).reshape(n, 3 * (k - 1))  # [N, 3(K-1)] channel-major
    opac = _to_numpy_f32(gaussians.logit_opacities).reshape(n, 1)  # [N, 1]
    scales = _to_numpy_f32(gaussians.log_scales)  # [N, 3]
    quats = _to_numpy_f32(gaussians.quats)  # [N, 4] w, x, y, z
    normals = np.zeros((n, 3), dtype=np.float32)
    table = np.ascontiguousarray(
        np.concatenate([means, normals, sh0, rest, opac, scales, quats], axis=1), dtype="<f4"
    )  # [N, P]
    names = ply_property_names(gaussians.sh_degree)
    assert table.shape[1] == len(names)
    records = table.view(np.dtype([(name, "<f4") for name in names])).reshape(n)  # [N] structured
    element = PlyElement.describe(records, "vertex")
    target = Path(os.fspath(path))
    with atomic_write(target, "wb") as f:
        PlyData([element], text=False, byte_order="<").write(f)
    return target


# ---- reading ----------------------------------------------------------------------------------


def _bytes_after_header(path: Path) -> int | None:
    """Size of the body of a PLY file (everything after the `end_header` line), or None."""
    try:
        with open(path, "rb") as f:
            head = b""
            while b"end_header" not in head:
                chunk = f.read(1 << 16)
                if not chunk:
                    return None
                head += chunk
            end = head.index(b"end_header") + len(b"end_header")
            while end < len(head) and head[end : end + 1] in (b"\r", b" "):
                end += 1
            end += 1  # the newline
        return max(os.path.getsize(path) - end, 0)
    except OSError:
        return None


def _describe_ply_type(dtype_code: str) -> str:
    code = np.dtype(dtype_code).str[1:]  # strip byte order
    return _PLY_TYPE_NAMES.get(code, code)


def read_ply(path: str | os.PathLike, device: torch.device | str | None = None) -> Gaussians:
    """Read an Inria 3DGS .ply into float32 `Gaussians` (SH degree from the f_rest count).

    Raises FileNotFoundError when the file does not exist and `PlyFormatError` (a ValueError) when
    it is not a readable 3DGS model: not a PLY / unreadable header, no `vertex` element, missing
    properties, non-float properties, an f_rest count other than 0/9/24/45, NaN/Inf values, or a
    truncated body. Unknown extra properties are ignored; property order does not matter;
    double-precision properties are converted to float32; ASCII and big-endian files are accepted.
    A SuperSplat compressed .ply (chunk + packed vertex elements) under a plain .ply name is read
    as one (io.compressed_ply).
    """
    path = Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    where = str(path)
    ply = _read_plydata(path)
    element_names = [el.name for el in ply.elements]
    if "vertex" not in element_names:
        raise PlyFormatError(
            f"{where}: no 'vertex' element (elements found: {element_names or 'none'}); "
            "a 3DGS .ply stores one Gaussian per vertex"
        )
    vertex = ply["vertex"]
    props = {p.name: p for p in vertex.properties}
    n = vertex.count
    degree = _sh_degree_of(where, props)
    needed = [name for name in ply_property_names(degree) if name not in ("nx", "ny", "nz")]
    missing = [name for name in needed if name not in props]
    if missing:
        if "chunk" in element_names and "packed_position" in props:  # SuperSplat compressed, named .ply
            from .compressed_ply import read_compressed_ply

            del vertex, ply
            g = read_compressed_ply(path)
            return g.to(device=device) if device is not None else g
        raise PlyFormatError(f"{where}: missing vertex properties: {', '.join(missing)}")
    _check_types(where, props, needed)
    table = _float_table(where, vertex.data, needed, n)  # [N, P]
    del vertex, ply  # release the memory map
    g = _gaussians_from_table(table, needed, degree)
    return g.to(device=device) if device is not None else g


def _read_plydata(path: Path) -> PlyData:
    """The parsed (memory-mapped) file; PlyFormatError saying what is wrong with it otherwise."""
    where = str(path)
    try:
        return PlyData.read(str(path), mmap="r")
    except PlyElementParseError as e:
        element = e.element
        if e.message == "early end-of-file" and element is not None:
            found = e.row if e.row is not None else "fewer"
            what = "vertices" if element.name == "vertex" else f"'{element.name}' rows"
            detail = f"expected {element.count} {what} (from the header), the body holds only {found}"
            body = _bytes_after_header(path)
            if body is not None and not ply_is_text(path):
                try:
                    itemsize = np.dtype([(p.name, p.dtype("<")) for p in element.properties]).itemsize
                    detail += f" ({body} bytes after the header, {element.count * itemsize} expected)"
                except (TypeError, ValueError):
                    pass
            raise PlyFormatError(f"{where}: truncated PLY file: {detail}") from e
        raise PlyFormatError(f"{where}: corrupt PLY body: {e}") from e
    except (PlyHeaderParseError, UnicodeDecodeError, ValueError, TypeError, IndexError, KeyError) as e:
        raise PlyFormatError(f"{where}: not a PLY file or unreadable PLY header: {e}") from e


def _sh_degree_of(where: str, props: dict) -> int:
    """The SH degree the f_rest_* properties encode; PlyFormatError for an incomplete block."""
    rest_idx = sorted(int(m.group(1)) for name in props if (m := _F_REST_RE.match(name)))
    n_rest = len(rest_idx)
    if n_rest not in _F_REST_COUNT_TO_DEGREE:
        raise PlyFormatError(
            f"{where}: {n_rest} f_rest_* properties; a 3DGS model has 0, 9, 24 or 45 "
            "(SH degree 0, 1, 2 or 3)"
        )
    if rest_idx != list(range(n_rest)):
        missing_rest = sorted(set(range(n_rest)) - set(rest_idx))
        raise PlyFormatError(
            f"{where}: f_rest_* properties are not numbered 0..{n_rest - 1} "
            f"(missing: {', '.join(f'f_rest_{i}' for i in missing_rest)})"
        )
    return _F_REST_COUNT_TO_DEGREE[n_rest]


def _check_types(where: str, props: dict, needed: list[str]) -> None:
    """float32 as written by 3DGS, or float64 (converted); anything else is refused."""
    bad_types = []
    for name in needed:
        prop = props[name]
        if isinstance(prop, PlyListProperty):
            bad_types.append(f"{name} is a list property")
            continue
        kind = np.dtype(prop.val_dtype).kind
        if kind != "f":
            bad_types.append(f"{name} is {_describe_ply_type(prop.val_dtype)}")
    if bad_types:
        raise PlyFormatError(
            f"{where}: wrong property types: {'; '.join(bad_types)}; expected float (float32), "
            "or double (float64, converted to float32)"
        )


def _float_table(where: str, data: np.ndarray, needed: list[str], n: int) -> np.ndarray:
    """[N, P] native float32 copy of the needed properties; PlyFormatError naming non-finite ones."""
    table = np.empty((n, len(needed)), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for j, name in enumerate(needed):
            table[:, j] = data[name]  # casts float64 and non-native byte order
    if "opacity" in needed:  # +-inf logits are opacities 1 and 0: valid for tools that write 8-bit
        j = needed.index("opacity")  # opacity (splat-transform's compressed .ply, converted), not for us
        infinite = np.isinf(table[:, j])
        if infinite.any():
            from ._quantize import warn_clamped

            edge = float(np.log((1.0 - 0.5 / 255.0) / (0.5 / 255.0)))  # half an 8-bit step inside (0, 1)
            table[:, j] = np.clip(table[:, j], -edge, edge)
            warn_clamped(Path(where), {"opacity logits of +-inf (opacity 0 or 1)": int(infinite.sum())})
    bad = ~np.isfinite(table)
    if bad.any():
        counts = bad.sum(axis=0)
        parts = [f"{name} ({int(c)} of {n})" for name, c in zip(needed, counts) if c]
        raise PlyFormatError(
            f"{where}: non-finite values (NaN or Inf, or out of float32 range) in: {', '.join(parts)}"
        )
    return table


def _gaussians_from_table(table: np.ndarray, needed: list[str], degree: int) -> Gaussians:
    """Raw parameters from the [N, P] table (f_rest is channel-major in the file)."""
    n = table.shape[0]
    col = {name: j for j, name in enumerate(needed)}
    k = num_sh_bases(degree)

    def cols(names: list[str]) -> torch.Tensor:
        idx = [col[name] for name in names]
        return torch.from_numpy(np.ascontiguousarray(table[:, idx]))

    means = cols(["x", "y", "z"])  # [N, 3]
    sh0 = cols(["f_dc_0", "f_dc_1", "f_dc_2"]).reshape(n, 1, 3)  # [N, 1, 3]
    rest = cols([f"f_rest_{i}" for i in range(3 * (k - 1))]).reshape(n, 3, k - 1)  # [N, 3, K-1] channel-major
    shN = rest.transpose(1, 2).contiguous()  # [N, K-1, 3]
    logit_opacities = cols(["opacity"]).reshape(n)  # [N]
    log_scales = cols(["scale_0", "scale_1", "scale_2"])  # [N, 3]
    quats = cols(["rot_0", "rot_1", "rot_2", "rot_3"])  # [N, 4] w, x, y, z
    return Gaussians(means, quats, log_scales, logit_opacities, sh0, shN)


def ply_is_text(path: str | os.PathLike) -> bool:
    """Whether a PLY file declares the ASCII format (False for binary or unreadable headers)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    return b"format ascii" in head

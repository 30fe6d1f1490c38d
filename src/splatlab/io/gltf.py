"""glTF 2.0 with the `KHR_gaussian_splatting` extension (.glb or .gltf + .bin).

Followed: the Khronos text `extensions/2.0/Khronos/KHR_gaussian_splatting/README.md` in
KhronosGroup/glTF, status "Release Candidate" (copyright 2026), the latest revision found. Earlier
drafts differed in ways that matter here: the 2024 drafts used `_ROTATION`/`_SCALE` + `COLOR_0`, and
the 2025 "Review Draft" stored SCALE in log space; the Release Candidate stores SCALE linear.

What is written (one mesh, one primitive, one node, one scene):

    primitive.mode = 0 (POINTS), no material
    primitive.extensions.KHR_gaussian_splatting = {kernel: "ellipse", colorSpace: <color_space>,
                                                   projection: "perspective", sortingMethod: "cameraDistance"}
    attributes (every accessor FLOAT, tightly packed, one bufferView each, 4-byte aligned):
      POSITION                                   VEC3    means (with the min/max glTF requires)
      KHR_gaussian_splatting:ROTATION            VEC4    unit quaternion in glTF order (x, y, z, w)
      KHR_gaussian_splatting:SCALE               VEC3    LINEAR scale, exp(log_scales)
      KHR_gaussian_splatting:OPACITY             SCALAR  opacity in [0, 1], sigmoid(logit_opacities)
      KHR_gaussian_splatting:SH_DEGREE_0_COEF_0  VEC3    sh0 (raw RGB coefficient)
      KHR_gaussian_splatting:SH_DEGREE_l_COEF_n  VEC3    shN[:, l*l + n - 1] for l = 1..degree, n = 0..2l
                                                         (n runs over m = -l..l, the 3DGS/sh.py basis order)
      COLOR_0 (optional fallback)                VEC4    UNSIGNED_BYTE normalized: linear RGB of the DC
                                                         colour (sRGB-decoded for srgb_rec709_display), A = opacity
    extensionsUsed = ["KHR_gaussian_splatting"]; extensionsRequired is left out: the spec keeps it for
    extensions that build on this one, and without it non-splat viewers can fall back to a point cloud.

Files: a path ending in `.glb` gets a single binary glTF (JSON chunk + BIN chunk). Any other path gets
a `.gltf` JSON file plus a `<stem>.bin` buffer beside it (external, not a data URI: a base64 data URI
is a third larger and slow to parse for millions of splats). The .bin is written first, both atomically.

Coordinates are written as they are in the model: glTF's frame is +Y up, right-handed, metres, and no
axis conversion is applied (the spec notes that converting would also require rotating the SH).
An empty model has no valid accessor (glTF requires count >= 1): it is written as an asset with an
empty scene, and `read_gltf` reads that back as zero Gaussians.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import torch

from ..gaussians import Gaussians
from ..sh import SH_C0, num_sh_bases, sh_degree_from_bases
from .atomic import atomic_write

__all__ = [
    "EXTENSION",
    "GltfFormatError",
    "attribute_names",
    "build_gltf",
    "write_gltf",
    "read_gltf",
]

EXTENSION = "KHR_gaussian_splatting"
ATTR_ROTATION = f"{EXTENSION}:ROTATION"
ATTR_SCALE = f"{EXTENSION}:SCALE"
ATTR_OPACITY = f"{EXTENSION}:OPACITY"
COLOR_SPACES = ("srgb_rec709_display", "lin_rec709_display")

FLOAT = 5126
UNSIGNED_BYTE = 5121
ARRAY_BUFFER = 34962
POINTS = 0

GLB_MAGIC = 0x46546C67  # "glTF"
GLB_VERSION = 2
CHUNK_JSON = 0x4E4F534A  # "JSON"
CHUNK_BIN = 0x004E4942  # "BIN\0"

_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
_COMPONENT_DTYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}


class GltfFormatError(ValueError):
    """A glTF file this reader cannot turn into Gaussians; the message names the file and the problem."""


def sh_attribute(degree: int, coef: int) -> str:
    return f"{EXTENSION}:SH_DEGREE_{degree}_COEF_{coef}"


def attribute_names(sh_degree: int, fallback_color: bool = True) -> list[str]:
    """The primitive's attribute semantics, in the order written, for a model of this SH degree."""
    names = ["POSITION", ATTR_ROTATION, ATTR_SCALE, ATTR_OPACITY]
    names += [sh_attribute(l, n) for l in range(sh_degree + 1) for n in range(2 * l + 1)]
    if fallback_color:
        names.append("COLOR_0")
    return names


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _attribute_arrays(gaussians: Gaussians, color_space: str, fallback_color: bool) -> dict[str, np.ndarray]:
    """Attribute name -> [N, C] array (float32, or uint8 for COLOR_0), in the spec's activation spaces."""
    gaussians.validate(check_finite=True)
    n = len(gaussians)
    f64 = lambda t: t.detach().to(device="cpu", dtype=torch.float64).numpy()  # noqa: E731
    means = f64(gaussians.means)  # [N, 3]
    quats = f64(gaussians.quats)  # [N, 4] w, x, y, z
    norm = np.linalg.norm(quats, axis=1, keepdims=True)  # [N, 1]
    unit = np.where(norm > 0, quats / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    rot_xyzw = unit[:, [1, 2, 3, 0]]  # [N, 4] glTF order
    with np.errstate(over="ignore"):
        scales = np.exp(f64(gaussians.log_scales))  # [N, 3] linear
    logits = f64(gaussians.logit_opacities)  # [N]
    opacity = np.exp(-np.logaddexp(0.0, -logits))  # [N] sigmoid, without overflow
    sh0 = f64(gaussians.sh0).reshape(n, 3)  # [N, 3]
    shN = f64(gaussians.shN)  # [N, K-1, 3]

    out: dict[str, np.ndarray] = {
        "POSITION": means.astype(np.float32),
        ATTR_ROTATION: rot_xyzw.astype(np.float32),
        ATTR_SCALE: scales.astype(np.float32),
        ATTR_OPACITY: opacity.astype(np.float32).reshape(n, 1),
        sh_attribute(0, 0): sh0.astype(np.float32),
    }
    if not np.isfinite(out[ATTR_SCALE]).all():
        bad = int((~np.isfinite(out[ATTR_SCALE])).any(axis=1).sum())
        raise ValueError(f"{bad} Gaussian(s) have log_scales too large for a float32 linear scale (exp overflows)")
    for l in range(1, gaussians.sh_degree + 1):
        for m in range(2 * l + 1):
            out[sh_attribute(l, m)] = shN[:, l * l + m - 1, :].astype(np.float32)
    if fallback_color:
        rgb = np.clip(sh0 * SH_C0 + 0.5, 0.0, 1.0)
        if color_space == "srgb_rec709_display":
            rgb = _srgb_to_linear(rgb)  # COLOR_0 is linear by the glTF spec
        rgba = np.concatenate([rgb, opacity[:, None]], axis=1)
        out["COLOR_0"] = np.clip(np.round(rgba * 255.0), 0, 255).astype(np.uint8)
    return out


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def _generator() -> str:
    try:
        from .. import __version__
    except ImportError:  # pragma: no cover
        __version__ = "unknown"
    return f"splatlab {__version__}"


def build_gltf(
    gaussians: Gaussians,
    *,
    color_space: str = "srgb_rec709_display",
    fallback_color: bool = True,
) -> tuple[dict, bytes]:
    """The glTF JSON document (with one buffer, no uri) and the binary buffer for `gaussians`."""
    if color_space not in COLOR_SPACES:
        raise ValueError(f"color_space must be one of {COLOR_SPACES}, got {color_space!r}")
    doc: dict = {"asset": {"version": "2.0", "generator": _generator()}, "scene": 0}
    n = len(gaussians)
    if n == 0:
        gaussians.validate()
        doc["scenes"] = [{}]
        return doc, b""

    arrays = _attribute_arrays(gaussians, color_space, fallback_color)
    types = {1: "SCALAR", 3: "VEC3", 4: "VEC4"}
    blob = bytearray()
    views, accessors, attributes = [], [], {}
    for name in attribute_names(gaussians.sh_degree, fallback_color):
        arr = np.ascontiguousarray(arrays[name])
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        offset = len(blob)
        assert offset % 4 == 0
        blob += data
        blob += b"\x00" * (_pad4(len(blob)) - len(blob))
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(data), "target": ARRAY_BUFFER})
        acc = {
            "bufferView": len(views) - 1,
            "componentType": FLOAT if arr.dtype == np.float32 else UNSIGNED_BYTE,
            "count": n,
            "type": types[arr.shape[1]],
        }
        if arr.dtype == np.uint8:
            acc["normalized"] = True
        if name == "POSITION":
            acc["min"] = [float(v) for v in arr.min(axis=0)]  # exact float32 values, repr'd losslessly
            acc["max"] = [float(v) for v in arr.max(axis=0)]
        attributes[name] = len(accessors)
        accessors.append(acc)

    doc.update(
        {
            "extensionsUsed": [EXTENSION],
            "scenes": [{"nodes": [0]}],
            "nodes": [{"mesh": 0, "name": "gaussians"}],
            "meshes": [
                {
                    "name": "gaussians",
                    "primitives": [
                        {
                            "attributes": attributes,
                            "mode": POINTS,
                            "extensions": {
                                EXTENSION: {
                                    "kernel": "ellipse",
                                    "colorSpace": color_space,
                                    "projection": "perspective",
                                    "sortingMethod": "cameraDistance",
                                }
                            },
                        }
                    ],
                }
            ],
            "buffers": [{"byteLength": len(blob)}],
            "bufferViews": views,
            "accessors": accessors,
        }
    )
    return doc, bytes(blob)


def _glb_bytes(doc: dict, blob: bytes) -> bytes:
    js = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    js += b" " * (_pad4(len(js)) - len(js))  # JSON chunk padded with spaces
    chunks = struct.pack("<II", len(js), CHUNK_JSON) + js
    if blob:
        bin_ = blob + b"\x00" * (_pad4(len(blob)) - len(blob))  # BIN chunk padded with zeros
        chunks += struct.pack("<II", len(bin_), CHUNK_BIN) + bin_
    return struct.pack("<III", GLB_MAGIC, GLB_VERSION, 12 + len(chunks)) + chunks


def write_gltf(
    path: str | os.PathLike,
    gaussians: Gaussians,
    *,
    binary: bool | None = None,
    color_space: str = "srgb_rec709_display",
    fallback_color: bool = True,
) -> Path:
    """Write `gaussians` as glTF 2.0 + KHR_gaussian_splatting. Returns the main file's path.

    binary: True for .glb, False for .gltf + .bin; None (default) decides from the suffix (.glb).
    color_space: the extension's `colorSpace` ("srgb_rec709_display", what 3DGS training on
    ordinary photos produces, or "lin_rec709_display").
    fallback_color: also write COLOR_0 so that viewers without the extension show coloured points.
    """
    target = Path(os.fspath(path))
    if binary is None:
        binary = target.suffix.lower() == ".glb"
    doc, blob = build_gltf(gaussians, color_space=color_space, fallback_color=fallback_color)
    if binary:
        with atomic_write(target, "wb") as f:
            f.write(_glb_bytes(doc, blob))
        return target
    if blob:
        bin_path = target.with_name(target.stem + ".bin")
        if bin_path == target:
            raise ValueError(f"{target}: a .gltf file needs a name other than its .bin buffer's")
        doc["buffers"][0]["uri"] = quote(bin_path.name)
        with atomic_write(bin_path, "wb") as f:
            f.write(blob)
    with atomic_write(target, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    return target


# ---- reading ----------------------------------------------------------------------------------


def _load(path: Path) -> tuple[dict, list[bytes]]:
    """The JSON document and the bytes of every buffer."""
    raw = path.read_bytes()
    glb_blob: bytes | None = None
    if raw[:4] == b"glTF":
        if len(raw) < 20:
            raise GltfFormatError(f"{path}: truncated GLB header")
        magic, version, length = struct.unpack_from("<III", raw, 0)
        if version != 2:
            raise GltfFormatError(f"{path}: GLB version {version}, expected 2")
        if length > len(raw):
            raise GltfFormatError(f"{path}: truncated GLB: header says {length} bytes, file has {len(raw)}")
        pos, js = 12, None
        while pos + 8 <= length:
            clen, ctype = struct.unpack_from("<II", raw, pos)
            chunk = raw[pos + 8 : pos + 8 + clen]
            if len(chunk) != clen:
                raise GltfFormatError(f"{path}: truncated GLB chunk at byte {pos}")
            if ctype == CHUNK_JSON and js is None:
                js = chunk
            elif ctype == CHUNK_BIN and glb_blob is None:
                glb_blob = chunk
            pos += 8 + clen
        if js is None:
            raise GltfFormatError(f"{path}: GLB without a JSON chunk")
    else:
        js = raw
    try:
        doc = json.loads(js.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GltfFormatError(f"{path}: not a glTF file (unreadable JSON: {e})") from e
    buffers = []
    for i, buf in enumerate(doc.get("buffers", [])):
        uri = buf.get("uri")
        if uri is None:
            if glb_blob is None:
                raise GltfFormatError(f"{path}: buffer {i} has no uri and there is no GLB BIN chunk")
            data = glb_blob
        elif uri.startswith("data:"):
            import base64

            data = base64.b64decode(uri.split(",", 1)[1])
        else:
            bin_path = path.parent / unquote(uri)
            if not bin_path.is_file():
                raise GltfFormatError(f"{path}: buffer {i} refers to {bin_path}, which does not exist")
            data = bin_path.read_bytes()
        if len(data) < buf["byteLength"]:
            raise GltfFormatError(f"{path}: buffer {i} holds {len(data)} bytes, byteLength says {buf['byteLength']}")
        buffers.append(data)
    return doc, buffers


def _read_accessor(doc: dict, buffers: list[bytes], index: int) -> np.ndarray:
    """Accessor -> [count, components] float32 (normalized integers mapped to [0,1] / [-1,1])."""
    acc = doc["accessors"][index]
    count, comps = acc["count"], _COMPONENTS[acc["type"]]
    dtype = np.dtype(_COMPONENT_DTYPES[acc["componentType"]]).newbyteorder("<")
    if "bufferView" not in acc:
        return np.zeros((count, comps), dtype=np.float32)
    view = doc["bufferViews"][acc["bufferView"]]
    data = buffers[view["buffer"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    elem = dtype.itemsize * comps
    stride = view.get("byteStride", elem)
    span = view.get("byteOffset", 0) + view["byteLength"]
    if count and start + stride * (count - 1) + elem > span:
        raise GltfFormatError(f"accessor {index} reads past the end of its bufferView")
    arr = np.ndarray((count, comps), dtype=dtype, buffer=data, offset=start, strides=(stride, dtype.itemsize))
    out = arr.astype(np.float32)
    if acc.get("normalized"):
        info = np.iinfo(dtype)
        out = out / info.max if info.min == 0 else np.maximum(out / info.max, -1.0)
    return out


def read_gltf(path: str | os.PathLike, device: torch.device | str | None = None) -> Gaussians:
    """Read the first KHR_gaussian_splatting primitive of a .glb/.gltf back into float32 Gaussians.

    Inverts the activations (log of the scale, logit of the opacity, (x,y,z,w) -> (w,x,y,z)), so the
    raw parameters match the written ones to float32 rounding, not bit for bit. Node transforms are
    not applied. An asset without such a primitive but with no meshes at all reads as zero Gaussians.
    """
    path = Path(os.fspath(path))
    doc, buffers = _load(path)
    prim = None
    for mesh in doc.get("meshes", []):
        for p in mesh.get("primitives", []):
            if EXTENSION in p.get("extensions", {}):
                prim = p
                break
        if prim is not None:
            break
    if prim is None:
        if not doc.get("meshes"):
            g = Gaussians.empty(sh_degree=0)
            return g.to(device=device) if device is not None else g
        raise GltfFormatError(f"{path}: no mesh primitive with the {EXTENSION} extension")
    attrs = prim["attributes"]
    required = ["POSITION", ATTR_ROTATION, ATTR_SCALE, ATTR_OPACITY, sh_attribute(0, 0)]
    missing = [a for a in required if a not in attrs]
    if missing:
        raise GltfFormatError(f"{path}: missing attributes: {', '.join(missing)}")
    degree = 0
    while degree < 3 and all(sh_attribute(degree + 1, m) in attrs for m in range(2 * degree + 3)):
        degree += 1
    get = lambda name: _read_accessor(doc, buffers, attrs[name])  # noqa: E731
    means = get("POSITION")  # [N, 3]
    n = means.shape[0]
    xyzw = get(ATTR_ROTATION).astype(np.float64)  # [N, 4]
    scales = get(ATTR_SCALE).astype(np.float64)  # [N, 3]
    opacity = np.clip(get(ATTR_OPACITY).astype(np.float64).reshape(n), 1e-7, 1.0 - 1e-7)  # [N]
    sh = [get(sh_attribute(l, m)) for l in range(degree + 1) for m in range(2 * l + 1)]  # K x [N, 3]
    tiny = np.finfo(np.float32).tiny
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    g = Gaussians(
        means=t(means),
        quats=t(xyzw[:, [3, 0, 1, 2]]),
        log_scales=t(np.log(np.maximum(scales, tiny))),
        logit_opacities=t(np.log(opacity) - np.log1p(-opacity)),
        sh0=t(sh[0]).reshape(n, 1, 3),
        shN=t(np.stack(sh[1:], axis=1)) if degree > 0 else torch.zeros(n, 0, 3),
    )
    assert sh_degree_from_bases(g.shN.shape[1] + 1) == degree and num_sh_bases(degree) == len(sh)
    return g.to(device=device) if device is not None else g

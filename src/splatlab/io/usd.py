"""OpenUSD: Gaussians as a `UsdVol.ParticleField3DGaussianSplat` prim (.usd, .usda, .usdc, .usdz).

The schema (OpenUSD 26.03+; written and tested against usd-core 26.11): attribute names, types and
applied APIs from usd-core 26.11 itself (`pxr/pluginfo/usdVol/resources/generatedSchema.usda`,
which carries one-line briefs only), units and layouts from the schema's full documentation in
OpenUSD's `pxr/usd/usdVol/schema.usda` (PixarAnimationStudios/OpenUSD @ 26f83736461737422e517059434b571846b67a9c),
quoted below. Mapping from splatlab's raw parameters (gaussians.py) to the prim's attributes, all
float32:

    positions          point3f[]  means, in the prim's local space (ParticleFieldPositionAttributeAPI)
    orientations       quatf[]    quats normalised: "Quaternion orientation for each particle"
                                  (GfQuatf is real + imaginary; note that Vt.QuatfArray's numpy
                                  layout is (i, j, k, real), not splatlab's (w, x, y, z))
    scales             float3[]   exp(log_scales): "linear scales ... not specified in log-format as
                                  is sometimes seen in PLY files" (ParticleFieldScaleAttributeAPI).
                                  The kernel is a unit-standard-deviation Gaussian
                                  (ParticleFieldKernelGaussianEllipsoidAPI), so a scale is the
                                  per-axis standard deviation, as in 3DGS.
    opacities          float[]    sigmoid(logit_opacities): "in the range [0, 1] ... not the
                                  transformed data ... processed with a sigmoid activation"
                                  (ParticleFieldOpacityAttributeAPI)
    radiance:sphericalHarmonicsDegree        uniform int   the model's SH degree (schema default 3,
                                             so it is always authored)
    radiance:sphericalHarmonicsCoefficients  float3[]      N * (degree+1)^2 RGB triples, "grouped in
                                  the array by particle": particle i holds [sh0, shN[0], ..., shN[K-2]]
                                  in the 3DGS order (band l, then m = -l..l). The coefficients are the
                                  3DGS ones (the schema cites arXiv 2308.04079): colour =
                                  0.5 + sum(basis * coeff), so the schema's fallback "DC signal of
                                  (0.5, 0.5, 0.5)" is coefficient 0. Inria .ply stores the same
                                  numbers channel-major in f_rest_*; here they are coefficient-major.
    extent             float3[2]  box around every Gaussian's 3-sigma ellipsoid (the kernel doc:
                                  99.7% of the support lies within radius 3)
    primvars:displayColor  color3f[]  DC colour clamped to [0, 1], for viewers that draw points
    projectionModeHint "perspective", sortingModeHint "zDepth": how splatlab renders (EWA
                                  projection with the perspective Jacobian; tiles sorted by
                                  camera-space depth)

Stage metadata: metersPerUnit (1 unless told), defaultPrim (the splat prim), upAxis. USD knows
only +Y or +Z as up. When the model's up direction (from its training cameras, or what the data
said) is within 10 degrees of +Z or +Y, that axis is the upAxis and the data is left alone.
Otherwise the upAxis is Z and the prim gets one `xformOp:orient:splatlabUpright` that turns the
model's up onto +Z, so the model stands upright in any USD application while the particle values
stay exactly those of the model.

Reading takes every ParticleField3DGaussianSplat prim (or ParticleField with the Gaussian-ellipsoid
kernel) on the stage, applies its local-to-world transform (rotation, uniform scale, mirror and
translation; the SH bands are rotated too), except splatlab's own upright op, so that a model
reads back in the frame it was trained in (read_usd_info says where up is in that frame), and
concatenates them. The schema lets a reader
truncate over-long arrays and ignore short ones; splatlab refuses any length mismatch instead,
naming the prim and the attribute, because silently dropping data hides a broken export.
Attributes the schema gives fallbacks for (orientations, scales, opacities, SH) take them when
unauthored; the float attribute is preferred over its half (`...h`) twin, as the schema asks.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..gaussians import Gaussians
from ..sh import SH_C0, num_sh_bases
from .atomic import atomic_write_path

__all__ = [
    "USD_FORMATS",
    "UPRIGHT_OP_SUFFIX",
    "UsdFormatError",
    "UsdStageInfo",
    "check_usd_compliance",
    "read_usd",
    "read_usd_info",
    "require_usd",
    "stage_up",
    "write_usd",
]

USD_FORMATS = ("usd", "usda", "usdc", "usdz")
UPRIGHT_OP_SUFFIX = "splatlabUpright"  # xformOp:orient:<this>, authored by write_usd only
PRIM_NAME = "Gaussians"
AXIS_TOLERANCE_DEG = 10.0  # an up within this angle of +Z / +Y is taken as that axis
_INSTALL_HINT = 'pip install "splatlab[usd]"'
_SPLAT_TYPE = "ParticleField3DGaussianSplat"


class UsdFormatError(ValueError):
    """A USD file that is not a readable splat model; the message names the file, prim and attribute."""


@dataclass(frozen=True)
class UsdStageInfo:
    """Stage metadata of a USD splat file."""

    up_axis: str  # "Y" or "Z"
    meters_per_unit: float
    splat_prims: tuple[str, ...]  # paths of the splat prims read
    up: tuple[float, float, float]  # the up direction in the frame read_usd returns (undoes splatlab's upright op)


def require_usd() -> None:
    """Raise RuntimeError with the pip command unless a usd-core with the splat schema is installed."""
    _pxr()


def _pxr():
    """The pxr modules, or a RuntimeError that says how to install them."""
    try:
        from pxr import Gf, Sdf, Usd, UsdGeom, UsdUtils, UsdVol, Vt
    except ImportError as exc:
        raise RuntimeError(f"USD files need usd-core, which is not installed: {_INSTALL_HINT}") from exc
    if not hasattr(UsdVol, "ParticleField3DGaussianSplat"):
        raise RuntimeError(
            "the installed usd-core has no UsdVol.ParticleField3DGaussianSplat schema (OpenUSD 26.03+ "
            "has it): pip install -U \"splatlab[usd]\""
        )
    return Gf, Sdf, Usd, UsdGeom, UsdUtils, UsdVol, Vt


# ---- writing ----------------------------------------------------------------------------------


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(device="cpu", dtype=torch.float32).numpy())


def stage_up(up: Optional[torch.Tensor | Sequence[float] | str]) -> tuple[str, Optional[torch.Tensor]]:
    """(upAxis token, rotation [3, 3] to author on the prim or None) for the model's up direction."""
    if up is None:
        return "Z", None
    if isinstance(up, str):
        if up.upper() not in ("Y", "Z"):
            raise ValueError(f"up axis must be 'Y' or 'Z' (what USD allows), got {up!r}")
        return up.upper(), None
    up = torch.as_tensor(up, dtype=torch.float64).reshape(-1)
    if up.shape != (3,) or not torch.isfinite(up).all() or up.norm() < 1e-12:
        raise ValueError(f"up must be a non-zero 3-vector, got {up.tolist()}")
    up = up / up.norm()
    cos_tol = math.cos(math.radians(AXIS_TOLERANCE_DEG))
    if up[2] >= cos_tol:
        return "Z", None
    if up[1] >= cos_tol:
        return "Y", None
    from ..geometry import rotation_to_z_up

    return "Z", rotation_to_z_up(up)


def _extent(g: Gaussians) -> np.ndarray:
    """[2, 3] box around every Gaussian's 3-sigma ellipsoid."""
    if len(g) == 0:
        return np.zeros((2, 3), dtype=np.float32)
    from ..geometry import quat_to_rotmat

    m = quat_to_rotmat(g.quats.detach().double().cpu()) * g.log_scales.detach().double().cpu().exp().unsqueeze(-2)
    half = 3.0 * m.norm(dim=-1)  # [N, 3]: 3 sqrt(Sigma_ii), Sigma = (R S)(R S)^T
    means = g.means.detach().double().cpu()
    return np.stack([(means - half).min(0).values.numpy(), (means + half).max(0).values.numpy()]).astype(np.float32)


def _author_splat(stage, g: Gaussians, path: str, upright: Optional[torch.Tensor]):
    Gf, Sdf, Usd, UsdGeom, UsdUtils, UsdVol, Vt = _pxr()
    n = len(g)
    prim = UsdVol.ParticleField3DGaussianSplat.Define(stage, path)
    quats = torch.nn.functional.normalize(g.quats.detach().double(), dim=-1)  # [N, 4] w, x, y, z
    opac = torch.sigmoid(g.logit_opacities.detach().double())  # [N]
    sh = torch.cat([g.sh0, g.shN], dim=1).detach()  # [N, K, 3]
    prim.CreatePositionsAttr(Vt.Vec3fArray.FromNumpy(_f32(g.means)))
    prim.CreateOrientationsAttr(Vt.QuatfArray.FromNumpy(_f32(quats[:, [1, 2, 3, 0]])))  # numpy (i, j, k, real)
    prim.CreateScalesAttr(Vt.Vec3fArray.FromNumpy(_f32(g.log_scales.detach().double().exp())))
    prim.CreateOpacitiesAttr(Vt.FloatArray.FromNumpy(_f32(opac)))
    prim.CreateRadianceSphericalHarmonicsDegreeAttr(int(g.sh_degree))
    prim.CreateRadianceSphericalHarmonicsCoefficientsAttr(Vt.Vec3fArray.FromNumpy(_f32(sh.reshape(-1, 3))))
    prim.CreateExtentAttr(Vt.Vec3fArray.FromNumpy(_extent(g)))
    prim.CreateProjectionModeHintAttr("perspective")
    prim.CreateSortingModeHintAttr("zDepth")
    rgb = (g.sh0.detach().reshape(n, 3).double() * SH_C0 + 0.5).clamp(0, 1)
    prim.CreateDisplayColorPrimvar(UsdGeom.Tokens.vertex).Set(Vt.Vec3fArray.FromNumpy(_f32(rgb)))
    if upright is not None:
        from ..geometry import rotmat_to_quat

        w, x, y, z = rotmat_to_quat(upright.double()).tolist()
        op = prim.AddOrientOp(UsdGeom.XformOp.PrecisionDouble, UPRIGHT_OP_SUFFIX)
        op.Set(Gf.Quatd(w, x, y, z))
    return prim


def _build_stage(g: Gaussians, up, meters_per_unit: float):
    Gf, Sdf, Usd, UsdGeom, UsdUtils, UsdVol, Vt = _pxr()
    if not (math.isfinite(meters_per_unit) and meters_per_unit > 0):
        raise ValueError(f"metersPerUnit must be a positive number, got {meters_per_unit}")
    axis, upright = stage_up(up)
    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z if axis == "Z" else UsdGeom.Tokens.y)
    UsdGeom.SetStageMetersPerUnit(stage, float(meters_per_unit))
    prim = _author_splat(stage, g, f"/{PRIM_NAME}", upright)
    stage.SetDefaultPrim(prim.GetPrim())
    stage.GetRootLayer().customLayerData = {"creator": "splatlab"}
    return stage


def write_usd(
    path: str | os.PathLike,
    gaussians: Gaussians,
    *,
    up: Optional[torch.Tensor | Sequence[float] | str] = None,
    meters_per_unit: float = 1.0,
    format: Optional[str] = None,
) -> Path:
    """Write `gaussians` as one ParticleField3DGaussianSplat prim (atomically). Returns the path.

    up: the model's up direction (a 3-vector in the model's frame, or "Y"/"Z"); None: +Z.
    format: "usd" (binary crate), "usda" (text), "usdc" (crate) or "usdz" (package); None: from
    the suffix. Raises RuntimeError with the pip command when usd-core is missing, ValueError for
    malformed or non-finite parameters.
    """
    target = Path(os.fspath(path))
    fmt = (format or target.suffix.lstrip(".") or "usd").lower().lstrip(".")
    if fmt not in USD_FORMATS:
        raise ValueError(f"{target}: unknown USD format {fmt!r}; expected one of {', '.join(USD_FORMATS)}")
    gaussians.validate(check_finite=True)
    stage = _build_stage(gaussians, up, meters_per_unit)
    _, _, _, _, UsdUtils, _, _ = _pxr()
    with atomic_write_path(target) as tmp, tempfile.TemporaryDirectory(dir=target.parent, prefix=".usd-") as d:
        layer_ext = {"usd": "usd", "usda": "usda", "usdc": "usdc", "usdz": "usdc"}[fmt]
        layer = Path(d) / f"{PRIM_NAME}.{layer_ext}"
        args = {"format": "usdc"} if fmt == "usd" else {}
        if not stage.GetRootLayer().Export(str(layer), args=args):
            raise OSError(f"usd-core could not write {target}")
        if fmt == "usdz":
            # The official packager: uncompressed zip with 64-byte aligned files (the USDZ spec).
            package = Path(d) / "package.usdz"
            if not UsdUtils.CreateNewUsdzPackage(str(layer), str(package)):
                raise OSError(f"usd-core could not package {target}")
            layer = package
        shutil.move(str(layer), str(tmp))
    return target


# ---- reading ----------------------------------------------------------------------------------


def _open_stage(path: Path):
    _, Sdf, Usd, *_ = _pxr()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        stage = Usd.Stage.Open(str(path))
    except Exception as exc:  # usd-core raises Tf errors of its own types
        raise UsdFormatError(f"{path}: not a readable USD file: {str(exc).strip()}") from exc
    if stage is None:
        raise UsdFormatError(f"{path}: not a readable USD file")
    return stage


def _splat_prims(stage, where: str) -> list:
    *_, UsdGeom, UsdUtils, UsdVol, Vt = _pxr()
    found, others = [], []
    for prim in stage.Traverse():
        is_splat = prim.IsA(UsdVol.ParticleField3DGaussianSplat) or (
            prim.IsA(UsdVol.ParticleField) and prim.HasAPI(UsdVol.ParticleFieldKernelGaussianEllipsoidAPI)
        )
        if not is_splat:
            others.append(f"{prim.GetPath()} ({prim.GetTypeName() or 'no type'})")
        elif UsdGeom.Imageable(prim).ComputeVisibility() != UsdGeom.Tokens.invisible:
            found.append(prim)
    if not found:
        listing = ", ".join(others[:8]) + (f" and {len(others) - 8} more" if len(others) > 8 else "")
        raise UsdFormatError(
            f"{where}: no {_SPLAT_TYPE} prim (a UsdVol particle field with the Gaussian-ellipsoid kernel); "
            f"prims found: {listing or 'none'}"
        )
    return found


def _attr_array(prim, name: str, where: str) -> Optional[np.ndarray]:
    """The float attribute's value, else its half twin's, as a float32 array; None if unauthored."""
    Gf, Sdf, Usd, *_ = _pxr()
    for attr_name in (name, name + "h"):
        attr = prim.GetAttribute(attr_name)
        if attr and attr.HasAuthoredValue():
            value = attr.Get(Usd.TimeCode.EarliestTime())
            if value is None:
                continue
            try:
                return np.asarray(value, dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise UsdFormatError(
                    f"{where}: prim {prim.GetPath()}: attribute '{attr_name}' is {attr.GetTypeName()}, not numeric"
                ) from exc
    return None


def _checked(prim, name: str, arr: np.ndarray, rows: int, width: int, where: str, why: str) -> np.ndarray:
    """`arr` if it holds `rows` finite values of `width` components, else UsdFormatError."""
    if (width == 1 and arr.ndim != 1) or (width > 1 and (arr.ndim != 2 or arr.shape[1] != width)):
        raise UsdFormatError(f"{where}: prim {prim.GetPath()}: attribute '{name}' has shape {list(arr.shape)}, "
                             f"expected {rows} values of {width} component(s)")
    if arr.shape[0] != rows:
        raise UsdFormatError(f"{where}: prim {prim.GetPath()}: attribute '{name}' has {arr.shape[0]} values, "
                             f"expected {rows} ({why})")
    bad = ~np.isfinite(arr.reshape(rows, -1)).all(axis=1)
    if bad.any():
        raise UsdFormatError(f"{where}: prim {prim.GetPath()}: attribute '{name}' has non-finite values "
                             f"(NaN or Inf) in {int(bad.sum())} of {rows} entries")
    return arr


def _read_prim(prim, where: str) -> Gaussians:
    """One splat prim's particles in its local space, as float32 Gaussians."""
    *_, UsdVol, Vt = _pxr()
    positions = _attr_array(prim, "positions", where)
    if positions is None:
        raise UsdFormatError(f"{where}: prim {prim.GetPath()}: attribute 'positions' is not authored "
                             "(nor 'positionsh'); it defines the particles")
    n = positions.shape[0]
    positions = _checked(prim, "positions", positions.reshape(n, 3) if n == 0 else positions, n, 3, where,
                         "one position per particle")
    per_particle = f"one per particle: 'positions' holds {n}"

    def optional(name: str, width: int, default) -> np.ndarray:
        arr = _attr_array(prim, name, where)
        if arr is None:
            return np.broadcast_to(np.asarray(default, np.float32), (n, width) if width > 1 else (n,)).copy()
        return _checked(prim, name, arr, n, width, where, per_particle)

    quats_ijkr = optional("orientations", 4, (0.0, 0.0, 0.0, 1.0))  # identity; numpy layout (i, j, k, real)
    scales = optional("scales", 3, (1.0, 1.0, 1.0))
    opacities = optional("opacities", 1, 1.0)
    degree_attr = prim.GetAttribute("radiance:sphericalHarmonicsDegree")
    degree = int(degree_attr.Get()) if degree_attr and degree_attr.Get() is not None else 3
    coeffs = _attr_array(prim, "radiance:sphericalHarmonicsCoefficients", where)
    if coeffs is None:  # the schema's fallback: a DC signal of 0.5 grey, degree 0
        degree, coeffs = 0, np.zeros((n, 3), np.float32)
    if degree not in (0, 1, 2, 3):
        raise UsdFormatError(f"{where}: prim {prim.GetPath()}: attribute 'radiance:sphericalHarmonicsDegree' is "
                             f"{degree}; splatlab renders SH degrees 0 to 3")
    k = num_sh_bases(degree)
    coeffs = _checked(prim, "radiance:sphericalHarmonicsCoefficients", coeffs, n * k, 3, where,
                      f"{k} per particle for SH degree {degree}, {n} particles").reshape(n, k, 3)
    if (scales <= 0).any():
        raise UsdFormatError(f"{where}: prim {prim.GetPath()}: attribute 'scales' has {int((scales <= 0).any(1).sum())} "
                             "entries that are not positive; linear scales must be > 0")
    if ((opacities < 0) | (opacities > 1)).any():
        raise UsdFormatError(f"{where}: prim {prim.GetPath()}: attribute 'opacities' has values outside [0, 1]")
    t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))  # noqa: E731  (a writable copy)
    quats = t(quats_ijkr[:, [3, 0, 1, 2]])  # (w, x, y, z)
    tiny = float(np.finfo(np.float32).tiny)
    # Clamp so that log/logit stay finite: opacity 1 - 2^-24 renders as 1 (alpha is capped at 0.99).
    o = torch.from_numpy(opacities.astype(np.float64)).clamp(1e-30, 1.0 - 2.0**-24)
    return Gaussians(
        means=t(positions),
        quats=quats,
        log_scales=torch.from_numpy(np.log(np.maximum(scales.astype(np.float64), tiny))).float(),
        logit_opacities=torch.log(o / (1.0 - o)).float(),
        sh0=t(coeffs[:, :1]),
        shN=t(coeffs[:, 1:]),
    )


def _world_transform(prim) -> np.ndarray:
    """[4, 4] column-vector local-to-world matrix of `prim`, without splatlab's upright op."""
    Gf, Sdf, Usd, UsdGeom, *_ = _pxr()
    time = Usd.TimeCode.EarliestTime()
    xformable = UsdGeom.Xformable(prim)
    local = Gf.Matrix4d(1.0)
    for op in reversed(xformable.GetOrderedXformOps()):  # row vectors: p_world = p * op_last ... op_first
        if op.GetOpType() == UsdGeom.XformOp.TypeOrient and op.GetName().endswith(":" + UPRIGHT_OP_SUFFIX):
            continue
        local = local * op.GetOpTransform(time)
    if not xformable.GetResetXformStack():
        local = local * UsdGeom.XformCache(time).GetParentToWorldTransform(prim)
    return np.array(local, dtype=np.float64).T


def _apply_transform(g: Gaussians, m: np.ndarray, where: str, prim_path: str) -> Gaussians:
    if np.allclose(m, np.eye(4), atol=1e-12):
        return g
    a = m[:3, :3]
    scale = abs(np.linalg.det(a)) ** (1.0 / 3.0)
    if scale < 1e-12 or not np.allclose(a.T @ a, scale**2 * np.eye(3), atol=1e-6 * max(scale**2, 1.0)):
        raise UsdFormatError(
            f"{where}: prim {prim_path}: its transform is not a similarity (rotation, uniform scale, mirror, "
            "translation); splatlab cannot carry shear or non-uniform scale into Gaussians and their SH colour"
        )
    from ..edit import similarity_transform

    rotation = torch.from_numpy(a / scale)
    return similarity_transform(g, rotation, scale, torch.from_numpy(m[:3, 3]))


def _concat(parts: list[Gaussians]) -> Gaussians:
    degree = max(p.sh_degree for p in parts)
    k = num_sh_bases(degree)
    padded = []
    for p in parts:
        extra = torch.zeros(len(p), k - 1 - p.shN.shape[1], 3, dtype=p.shN.dtype)
        padded.append(Gaussians(p.means, p.quats, p.log_scales, p.logit_opacities, p.sh0, torch.cat([p.shN, extra], 1)))
    return Gaussians.cat(padded) if len(padded) > 1 else padded[0]


def read_usd_info(path: str | os.PathLike) -> UsdStageInfo:
    """upAxis, metersPerUnit and the splat prims of a USD file."""
    *_, UsdGeom, UsdUtils, UsdVol, Vt = _pxr()
    path = Path(os.fspath(path))
    stage = _open_stage(path)
    prims = _splat_prims(stage, str(path))
    axis = str(UsdGeom.GetStageUpAxis(stage))
    up = torch.tensor([0.0, 1.0, 0.0] if axis == "Y" else [0.0, 0.0, 1.0], dtype=torch.float64)
    upright = _upright_rotation(prims[0])
    if upright is not None:  # the op turned the model's up onto the axis; read_usd leaves it out
        up = upright.T @ up
    return UsdStageInfo(axis, float(UsdGeom.GetStageMetersPerUnit(stage)), tuple(str(p.GetPath()) for p in prims),
                        tuple(up.tolist()))


def _upright_rotation(prim) -> Optional[torch.Tensor]:
    """[3, 3] rotation of splatlab's upright op on `prim` (column vectors), or None."""
    Gf, Sdf, Usd, UsdGeom, *_ = _pxr()
    for op in UsdGeom.Xformable(prim).GetOrderedXformOps():
        if op.GetOpType() == UsdGeom.XformOp.TypeOrient and op.GetName().endswith(":" + UPRIGHT_OP_SUFFIX):
            q = op.Get(Usd.TimeCode.EarliestTime())
            from ..geometry import quat_to_rotmat

            wxyz = torch.tensor([q.GetReal(), *q.GetImaginary()], dtype=torch.float64)
            return quat_to_rotmat(wxyz[None])[0]
    return None


def read_usd(path: str | os.PathLike) -> Gaussians:
    """Read every splat prim of a USD file into float32 CPU Gaussians (in world space, see above).

    Raises FileNotFoundError, RuntimeError (usd-core missing) or UsdFormatError naming the prim and
    attribute: no splat prim, mismatched lengths, non-finite values, unsupported transforms.
    """
    path = Path(os.fspath(path))
    stage = _open_stage(path)
    parts = []
    for prim in _splat_prims(stage, str(path)):
        g = _read_prim(prim, str(path))
        parts.append(_apply_transform(g, _world_transform(prim), str(path), str(prim.GetPath())).to(dtype=torch.float32))
    return _concat(parts)


# ---- compliance -------------------------------------------------------------------------------


def check_usd_compliance(path: str | os.PathLike, strict: bool = True) -> list[str]:
    """Problems usd-core's validation framework finds in a USD file (empty: compliant).

    Runs the validators `usdchecker --useNewValidationFramework` runs (usd-core 26.11 ships no
    `usdchecker` executable and no UsdUtils.ComplianceChecker): every registered validator
    except the root-package one, with the USDZ package validators for .usdz files. `strict`:
    warnings count as problems too (`usdchecker --strict`).
    """
    _pxr()
    from pxr import Usd, UsdValidation

    path = Path(os.fspath(path))
    registry = UsdValidation.ValidationRegistry()
    names = [
        m.name for m in registry.GetAllValidatorMetadata()
        if m.name != "usdUtilsValidators:RootPackageValidator"
        and (path.suffix.lower() == ".usdz" or "UsdzValidators" not in m.GetKeywords())
    ]
    context = UsdValidation.ValidationContext(registry.GetOrLoadValidatorsByName(names))
    stage = Usd.Stage.Open(str(path))
    if stage is None:
        return [f"{path}: usd-core could not open the file"]
    serious = {UsdValidation.ValidationErrorType.Error}
    if strict:
        serious.add(UsdValidation.ValidationErrorType.Warn)
    return [e.GetErrorAsString() for e in context.Validate(stage) if e.GetType() in serious]

"""The `.splat` format of the common web viewers (antimatter15/splat and the viewers that copied it).

No header: N records of 32 bytes, little-endian, one per Gaussian:

    bytes  0..11   position   3 x float32                    means
    bytes 12..23   scale      3 x float32, ACTIVATED          exp(log_scales)
    bytes 24..27   colour     4 x uint8  R G B A              rgb = clamp(0.5 + SH_C0 * sh0, 0, 1) * 255,
                                                              a   = sigmoid(logit_opacity) * 255
    bytes 28..31   rotation   4 x uint8  w x y z              normalised quaternion * 128 + 128, clipped to 0..255

The uint8 values are truncated towards zero after clipping (numpy's float -> uint8 cast), as the
viewers' `convert.py` does. Records are sorted by importance, descending exp(sum log_scales) *
sigmoid(opacity), as the converter does (ties keep the model's order: a stable sort). Only the DC
colour is kept: view-dependent SH is lost, as is colour outside [0, 1] and rotation precision.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..gaussians import Gaussians
from ..sh import SH_C0
from .atomic import atomic_write

__all__ = ["SPLAT_DTYPE", "SplatData", "SplatFormatError", "splat_records", "write_splat", "read_splat"]

SPLAT_DTYPE = np.dtype(
    [("position", "<f4", (3,)), ("scale", "<f4", (3,)), ("color", "u1", (4,)), ("rotation", "u1", (4,))]
)
assert SPLAT_DTYPE.itemsize == 32


class SplatFormatError(ValueError):
    """A file that is not a valid .splat (its size is not a multiple of 32 bytes)."""


@dataclass(frozen=True)
class SplatData:
    """The raw content of a .splat file, in file order."""

    positions: np.ndarray  # [N, 3] float32
    scales: np.ndarray  # [N, 3] float32, activated (linear)
    colors: np.ndarray  # [N, 4] uint8, R G B A
    rotations: np.ndarray  # [N, 4] uint8, w x y z, q*128+128

    def __len__(self) -> int:
        return self.positions.shape[0]

    def to_gaussians(self) -> Gaussians:
        """Gaussians of SH degree 0 approximating these records (the quantisation is not undone).

        Zero scales map to the smallest float32 log-scale; alpha 0 and 255 are clamped to half a
        step inside (0, 1) so that the logit stays finite.
        """
        tiny = np.finfo(np.float32).tiny
        log_scales = np.log(np.maximum(self.scales.astype(np.float64), tiny))  # [N, 3]
        rgb = self.colors[:, :3].astype(np.float64) / 255.0  # [N, 3]
        alpha = np.clip(self.colors[:, 3].astype(np.float64), 0.5, 254.5) / 255.0  # [N]
        quats = (self.rotations.astype(np.float64) - 128.0) / 128.0  # [N, 4] w, x, y, z
        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        n = len(self)
        return Gaussians(
            means=f32(self.positions),
            quats=f32(quats),
            log_scales=f32(log_scales),
            logit_opacities=f32(np.log(alpha / (1.0 - alpha))),
            sh0=f32((rgb - 0.5) / SH_C0).reshape(n, 1, 3),
            shN=torch.zeros(n, 0, 3),
        )


def splat_records(gaussians: Gaussians) -> np.ndarray:
    """The [N] structured array (dtype SPLAT_DTYPE) that `write_splat` writes, importance-sorted."""
    gaussians.validate(check_finite=True)
    f32 = lambda t: t.detach().to(device="cpu", dtype=torch.float32).numpy()  # noqa: E731
    n = len(gaussians)
    means = f32(gaussians.means)  # [N, 3]
    log_scales = f32(gaussians.log_scales)  # [N, 3]
    logit = f32(gaussians.logit_opacities).astype(np.float64)  # [N]
    dc = f32(gaussians.sh0).reshape(n, 3).astype(np.float64)  # [N, 3]
    quats = f32(gaussians.quats).astype(np.float64)  # [N, 4] w, x, y, z

    with np.errstate(over="ignore"):
        opacity = 1.0 / (1.0 + np.exp(-logit))  # [N]
        importance = np.exp(log_scales.astype(np.float64).sum(axis=1)) * opacity  # [N]
        scales = np.exp(log_scales)  # [N, 3] float32, as the converter computes it
    order = np.argsort(-importance, kind="stable")

    rgba = np.concatenate([0.5 + SH_C0 * dc, opacity[:, None]], axis=1)  # [N, 4]
    norm = np.linalg.norm(quats, axis=1, keepdims=True)  # [N, 1]
    # A zero quaternion has no rotation to normalise: write the identity instead of NaN bytes.
    unit = np.where(norm > 0, quats / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))

    records = np.empty(n, dtype=SPLAT_DTYPE)
    records["position"] = means[order]
    records["scale"] = scales[order]
    records["color"] = np.clip(rgba[order] * 255.0, 0.0, 255.0).astype(np.uint8)
    records["rotation"] = np.clip(unit[order] * 128.0 + 128.0, 0.0, 255.0).astype(np.uint8)
    return records


def write_splat(path: str | os.PathLike, gaussians: Gaussians) -> Path:
    """Write `gaussians` as a .splat file (32 bytes per Gaussian, importance-sorted; atomically)."""
    records = splat_records(gaussians)
    target = Path(os.fspath(path))
    with atomic_write(target, "wb") as f:
        f.write(records.tobytes())
    return target


def read_splat(path: str | os.PathLike) -> SplatData:
    """Read a .splat file into arrays (file order). `.to_gaussians()` gives an SH-degree-0 model."""
    path = Path(os.fspath(path))
    raw = path.read_bytes()
    if len(raw) % SPLAT_DTYPE.itemsize:
        raise SplatFormatError(
            f"{path}: {len(raw)} bytes is not a multiple of {SPLAT_DTYPE.itemsize}, "
            f"the size of one .splat record ({len(raw) // SPLAT_DTYPE.itemsize} whole records, "
            f"{len(raw) % SPLAT_DTYPE.itemsize} bytes left over): truncated or not a .splat file"
        )
    records = np.frombuffer(raw, dtype=SPLAT_DTYPE)
    return SplatData(
        positions=records["position"].astype(np.float32),
        scales=records["scale"].astype(np.float32),
        colors=records["color"].copy(),
        rotations=records["rotation"].copy(),
    )

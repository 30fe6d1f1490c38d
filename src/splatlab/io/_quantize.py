"""Helpers shared by the quantised formats (SPZ, SOG, compressed .ply).

    ModelArrays       the raw parameters as float64 numpy arrays (file layouts are per-Gaussian rows)
    morton_order      a spatially coherent order (Z-order curve), so per-chunk ranges stay tight
    clamp_logit       opacities 0 and 1 (valid in 8-bit formats, infinite logits for us), counted
    warn_clamped      the ONE warning per file that says how many values were moved inside our range
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..gaussians import Gaussians


@dataclass
class ModelArrays:
    """Raw parameters, float64, on the CPU; the Inria .ply spaces (log scales, logit opacity)."""

    means: np.ndarray  # [N, 3]
    quats: np.ndarray  # [N, 4] w, x, y, z (as stored: not normalised)
    log_scales: np.ndarray  # [N, 3]
    logits: np.ndarray  # [N]
    sh0: np.ndarray  # [N, 3]
    shN: np.ndarray  # [N, K-1, 3]

    @staticmethod
    def from_gaussians(g: Gaussians) -> "ModelArrays":
        g.validate(check_finite=True)
        f64 = lambda t: t.detach().to(device="cpu", dtype=torch.float64).numpy()  # noqa: E731
        n = len(g)
        return ModelArrays(f64(g.means), f64(g.quats), f64(g.log_scales), f64(g.logit_opacities),
                           f64(g.sh0).reshape(n, 3), f64(g.shN))

    def to_gaussians(self) -> Gaussians:
        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        n = self.means.shape[0]
        return Gaussians(f32(self.means), f32(self.quats), f32(self.log_scales), f32(self.logits),
                         f32(self.sh0).reshape(n, 1, 3), f32(self.shN).reshape(n, -1, 3))

    def unit_quats(self) -> np.ndarray:
        """[N, 4] normalised quaternions; a zero quaternion becomes the identity (no NaN bytes)."""
        norm = np.linalg.norm(self.quats, axis=1, keepdims=True)  # [N, 1]
        ok = norm > 0
        return np.where(ok, self.quats / np.where(ok, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))


def morton_order(points: np.ndarray, bits: int = 10) -> np.ndarray:
    """[N] indices sorting `points` [N, 3] along a Z-order curve over their bounding box."""
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    q = np.clip(((points - lo) / span * ((1 << bits) - 1)).astype(np.int64), 0, (1 << bits) - 1)  # [N, 3]
    code = np.zeros(len(points), dtype=np.int64)
    for b in range(bits):
        for axis in range(3):
            code |= ((q[:, axis] >> b) & 1) << (3 * b + (2 - axis))
    return np.argsort(code, kind="stable")


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def clamp_logit(alpha: np.ndarray, step: float) -> tuple[np.ndarray, int]:
    """Logits of `alpha` [N] in [0, 1]; 0 and 1 (infinite logits) are moved half a quantisation
    `step` inside, the nearest value the format could have meant. Returns (logits, how many moved)."""
    half = step / 2.0
    moved = int(np.count_nonzero((alpha < half) | (alpha > 1.0 - half)))
    a = np.clip(alpha, half, 1.0 - half)
    return np.log(a / (1.0 - a)), moved


def warn_clamped(path: Path, counts: dict[str, int]) -> None:
    """One warning naming the file and every kind of value that was moved into our range."""
    parts = [f"{n} {what}" for what, n in counts.items() if n]
    if parts:
        warnings.warn(
            f"{path}: values valid in this format but outside splatlab's parameters were read as the "
            f"nearest finite value: {', '.join(parts)}", stacklevel=3)

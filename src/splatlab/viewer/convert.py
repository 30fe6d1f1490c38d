"""Our raw parameters -> the arrays viser's WebGL splat renderer takes, and view-dependent colour.

What viser expects (viser 1.1.1 from PyPI: `SceneApi.add_gaussian_splats` and
`GaussianSplatHandle` in viser/_scene_api.py and viser/_scene_handles.py):

    centers      [N, 3]     float32   world positions                    (our `means`)
    covariances  [N, 3, 3]  float32   Sigma = R S S^T R^T                (quats, exp(log_scales))
    rgbs         [N, 3]     in [0, 1] colour as seen from the camera     (SH, see `view_rgbs`)
    opacities    [N, 1]     in [0, 1] sigmoid(logit_opacities)

viser packs each Gaussian into 32 bytes on the wire: float32 centre, the 6 upper-triangular
covariance terms as float16, RGBA as 4 x uint8. A model costs 32 MB per million Gaussians per
push, and so does a colour update (viser re-sends the whole buffer when `rgbs` changes).

float16 covariances: the normal float16 range is about 6e-5 .. 6.5e4, so the variances of small
Gaussians (sigma ~ 1e-3 in a metre-scale scene) would fall into float16's subnormal range and
lose precision. The splats are therefore stored scaled by a power of two `k` chosen so the
median Gaussian has sigma ~ 1 (variances ~ 1, the middle of float16's range), and the viser node
gets `scale = 1/k`, which the client applies to centres and covariances alike. Very flat
Gaussians (thin axis below ~2% of the long axis) still lose their thickness to float16's 11-bit
mantissa: that is viser's format.

View-dependent colour: the browser's splat shader has one RGB per Gaussian, so the SH are
evaluated here, for the camera centre, exactly as the renderer does (splatlab.sh's basis with
the direction from the camera centre to each Gaussian; render/reference.py), and pushed again
when the camera moves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..constants import SH_C0
from ..gaussians import Gaussians
from ..geometry import quat_scale_to_covar
from ..sh import num_sh_bases, sh_basis, sh_degree_from_bases

DEFAULT_MAX_GAUSSIANS = 1_000_000
FLOAT16_SAFE_SIGMA = 200.0  # sigma (after the scale k) at which variances stay far below float16's max


@dataclass
class SplatArrays:
    """The shown Gaussians as viser's splat arrays, plus their SH for colour updates."""

    centers: np.ndarray  # [M, 3] float32, world positions x k
    covariances: np.ndarray  # [M, 3, 3] float32, x k^2
    rgbs: np.ndarray  # [M, 3] float32 in [0, 1], the DC colour
    opacities: np.ndarray  # [M, 1] float32 in [0, 1]
    sh: torch.Tensor  # [M, K, 3] float32 SH coefficients (K = (degree + 1)^2)
    sigma_median: float  # median over Gaussians of the middle axis' standard deviation (world units)
    total: int  # Gaussians in the model
    dropped_nonfinite: int  # Gaussians left out for NaN/Inf parameters
    scale: float = 1.0  # k: centres are world positions x k, covariances x k^2

    def __len__(self) -> int:
        return self.centers.shape[0]

    @property
    def sh_degree(self) -> int:
        return sh_degree_from_bases(self.sh.shape[1])


def _finite_subset(gaussians: Gaussians, max_gaussians: Optional[int], seed: int) -> tuple[torch.Tensor, int]:
    """Indices [M] of the Gaussians to show (finite, at most max_gaussians), and how many were non-finite."""
    means = gaussians.means.detach()
    quats = gaussians.quats.detach()
    # A sum is finite iff every term is (inf - inf = nan): one isfinite pass instead of six.
    row_sum = (means.sum(-1) + quats.sum(-1) + gaussians.log_scales.detach().sum(-1)
               + gaussians.logit_opacities.detach().reshape(-1)
               + gaussians.sh0.detach().flatten(1).sum(-1) + gaussians.shN.detach().flatten(1).sum(-1))  # [N]
    finite = torch.isfinite(row_sum) & (quats.abs().sum(-1) > 0)  # [N]
    keep = finite.nonzero().squeeze(-1).cpu()  # [M]
    dropped = len(gaussians) - keep.numel()
    if max_gaussians is not None and keep.numel() > max_gaussians:
        gen = torch.Generator().manual_seed(seed)
        keep = keep[torch.randperm(keep.numel(), generator=gen)[:max_gaussians].sort().values]
    return keep, dropped


def splat_arrays(
    gaussians: Gaussians,
    max_gaussians: Optional[int] = DEFAULT_MAX_GAUSSIANS,
    seed: int = 0,
    scale: float = 1.0,
) -> SplatArrays:
    """Convert raw parameters to viser's splat inputs, optionally subsampled and scaled.

    `scale` multiplies positions by k and covariances by k^2 (see the module docstring); the
    per-axis standard deviations are clamped to FLOAT16_SAFE_SIGMA / k first so no covariance
    term overflows float16. Gaussians with non-finite parameters are left out. A seeded uniform
    subset is kept above `max_gaussians` (stable from one push to the next).
    """
    with torch.no_grad():
        keep, dropped = _finite_subset(gaussians, max_gaussians, seed)
        g = gaussians.detach().to("cpu", torch.float32)
        if keep.numel() < len(gaussians):
            g = g[keep]
        k = float(scale)
        sigmas = torch.exp(g.log_scales)  # [M, 3]
        sigma_median = float(sigmas.median(dim=-1).values.median()) if len(sigmas) else 1.0
        sigmas = (sigmas * k).clamp(max=FLOAT16_SAFE_SIGMA)  # [M, 3], in the scaled frame
        covariances = quat_scale_to_covar(g.quats, sigmas)  # [M, 3, 3] = R S S^T R^T
        rgbs = (0.5 + SH_C0 * g.sh0.reshape(-1, 3)).clamp(0.0, 1.0)  # [M, 3]
        opacities = torch.sigmoid(g.logit_opacities.reshape(-1)).unsqueeze(-1)  # [M, 1]
        return SplatArrays(
            centers=(g.means * k).numpy(),
            covariances=covariances.numpy(),
            rgbs=rgbs.numpy(),
            opacities=opacities.numpy(),
            sh=torch.cat([g.sh0, g.shN], dim=1).contiguous(),  # [M, K, 3]
            sigma_median=sigma_median,
            total=len(gaussians),
            dropped_nonfinite=dropped,
            scale=k,
        )


def view_rgbs(arrays: SplatArrays, campos: Optional[np.ndarray], degree: Optional[int] = None) -> np.ndarray:
    """[M, 3] float32 in [0, 1]: each shown Gaussian's colour seen from the camera centre `campos`.

    `campos` is in world units ([3]); None, or degree 0, gives the DC colour. `degree` (default:
    all the model has) is clamped to the model's. Same formula as the renderer: eval_sh with the
    unit direction from the camera centre to the Gaussian, clamped to [0, 1] for 8-bit colour.
    The sum over the basis is an einsum rather than eval_sh's broadcast product: same numbers,
    without the [M, K, 3] temporary (7x faster at 200k Gaussians, one thread).
    """
    max_degree = arrays.sh_degree
    degree = max_degree if degree is None else min(int(degree), max_degree)
    if campos is None or degree == 0 or len(arrays) == 0:
        return arrays.rgbs
    with torch.no_grad():
        centers = torch.from_numpy(arrays.centers)  # [M, 3], world x k
        eye = torch.as_tensor(np.asarray(campos, dtype=np.float64) * arrays.scale, dtype=torch.float32)  # [3]
        dirs = torch.nn.functional.normalize(centers - eye, dim=-1)  # [M, 3]; directions do not change with k
        k = num_sh_bases(degree)
        basis = sh_basis(degree, dirs)  # [M, k]
        rgb = torch.einsum("mk,mkc->mc", basis, arrays.sh[:, :k])  # [M, 3]
        return (rgb + 0.5).clamp_(0.0, 1.0).numpy()


def sigma_median(gaussians: Gaussians, sample: int = 100_000) -> float:
    """Median over (up to `sample` of) the Gaussians of the middle axis' standard deviation."""
    log_scales = gaussians.log_scales.detach()
    if log_scales.shape[0] > sample:
        log_scales = log_scales[:: math.ceil(log_scales.shape[0] / sample)]
    log_scales = log_scales.to("cpu", torch.float32)
    log_scales = log_scales[torch.isfinite(log_scales).all(-1)]
    if log_scales.shape[0] == 0:
        return 1.0
    return float(torch.exp(log_scales.median(dim=-1).values.median()))


def float16_scale_for(sigma_median: float) -> float:
    """The power of two k that puts the median sigma near 1 (see the module docstring)."""
    if not math.isfinite(sigma_median) or sigma_median <= 0:
        return 1.0
    return float(2.0 ** round(-math.log2(sigma_median)))


@dataclass
class ShownModel:
    """One model as the viewer holds it between pushes."""

    arrays: SplatArrays  # what the browsers get (finite, at most max_gaussians)
    exact: Gaussians  # every finite Gaussian, a float32 CPU copy: what the exact render draws


def shown_model(gaussians: Gaussians, max_gaussians: Optional[int], previous_scale: Optional[float]) -> ShownModel:
    """Convert a model for showing. The float16 scale k follows the median sigma but is kept from
    the previous push unless it drifted by more than 4x (a new k rescales the whole buffer)."""
    k = previous_scale or 1.0
    if len(gaussians):
        ideal = float16_scale_for(sigma_median(gaussians))
        if previous_scale is None or abs(math.log2(ideal / previous_scale)) > 2:
            k = ideal
    arrays = splat_arrays(gaussians, max_gaussians, scale=k)
    exact = gaussians.detach().to("cpu", torch.float32)
    if arrays.dropped_nonfinite:
        flat = torch.cat([t.reshape(len(exact), -1) for t in exact.params().values()], dim=1)  # [N, 14 + 3K]
        exact = exact[torch.isfinite(flat).all(dim=1)]
    # A copy: a training run's live parameters move on while the exact render reads these.
    return ShownModel(arrays, exact.clone())

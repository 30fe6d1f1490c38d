"""Real spherical harmonics, degrees 0..3 (16 basis functions), with the 3DGS constants.

A Gaussian's colour seen from direction d (unit vector from the camera centre to the Gaussian,
in world space) is rgb = max(sum_k basis_k(d) * coeff_k + 0.5, 0). Coefficient 0 (`sh0`) is the
view-independent "DC" term; `shN` holds the (degree + 1)^2 - 1 higher ones.
"""

from __future__ import annotations

import torch

from .constants import SH_C0, SH_C1, SH_C2, SH_C3  # noqa: F401  (re-exported)


def num_sh_bases(degree: int) -> int:
    """Number of coefficients per channel for SH degree 0..3."""
    if degree not in (0, 1, 2, 3):
        raise ValueError(f"SH degree must be 0, 1, 2 or 3, got {degree}")
    return (degree + 1) ** 2


def sh_degree_from_bases(num_bases: int) -> int:
    """Inverse of num_sh_bases: 1 -> 0, 4 -> 1, 9 -> 2, 16 -> 3."""
    for degree in range(4):
        if (degree + 1) ** 2 == num_bases:
            return degree
    raise ValueError(f"{num_bases} SH coefficients per channel is not (degree+1)^2 for a degree in 0..3")


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """Colour in [0, 1] -> DC coefficient, so that a degree-0 Gaussian renders that colour."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    return sh0 * SH_C0 + 0.5


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Evaluate the (degree+1)^2 basis functions at unit directions.

    dirs: [..., 3] unit vectors. Returns [..., (degree+1)^2].
    """
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        out += [
            SH_C2[0] * xy,
            SH_C2[1] * yz,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * xz,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            SH_C3[0] * y * (3.0 * xx - yy),
            SH_C3[1] * xy * z,
            SH_C3[2] * y * (4.0 * zz - xx - yy),
            SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            SH_C3[4] * x * (4.0 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, coeffs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Colour from SH coefficients, using the first (degree+1)^2 of them.

    coeffs: [N, K, 3] with K >= (degree+1)^2; dirs: [N, 3] unit vectors. Returns [N, 3] rgb >= 0.
    """
    k = num_sh_bases(degree)
    if coeffs.shape[-2] < k:
        raise ValueError(f"SH degree {degree} needs {k} coefficients per channel, got {coeffs.shape[-2]}")
    basis = sh_basis(degree, dirs)  # [N, k]
    rgb = (basis.unsqueeze(-1) * coeffs[..., :k, :]).sum(dim=-2)  # [N, 3]
    return torch.clamp_min(rgb + 0.5, 0.0)

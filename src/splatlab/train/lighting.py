"""Per-photo lighting of each Gaussian's diffuse colour: which side of the subject is lit.

A photo collection (the statue: 40 Flickr photos taken on different days) changes more than
exposure from photo to photo: the sun is on the left of the statue in one photo, on the right
in the next. One affine colour map per photo (exposure.py) cannot brighten the left side in
one photo and the right side in another, so the model averages the photos, and blurs.

Here each training photo j has its own change of distant lighting, L_j [9, 3]: coefficients of
the 9 spherical harmonics of degree <= 2 of a surface normal, per colour channel. Lambertian
shading under any distant light is, within a few percent, a function of the normal in just
those 9 terms (Ramamoorthi & Hanrahan, "An Efficient Representation for Irradiance
Environment Maps", SIGGRAPH 2001). A Gaussian's normal is its shortest axis, turned toward the
camera (the side a camera sees faces it). Its diffuse (degree-0) colour d_i is scaled:

    d_i' = d_i * (1 + Y(n_i) . L_j)        per channel; view-dependent SH terms unchanged

The normals are read without a gradient (lighting must not move or turn the geometry). As for
exposure, the mean of L over the photos is pinned to zero: the model itself keeps the
collection's average lighting, and held-out views, exports and the viewer show it as it is.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..camera import Camera
from ..constants import SH_C0
from ..gaussians import Gaussians
from ..geometry import quat_to_rotmat
from ..sh import sh_basis
from .exposure import _PerImageDeltas

NUM_LIGHTING_BASES = 9  # spherical harmonics of degree <= 2: Lambertian irradiance (Ramamoorthi & Hanrahan)


def facing_normals(gaussians: Gaussians, camera_position: torch.Tensor) -> torch.Tensor:
    """[N, 3] unit normals: each Gaussian's shortest axis, on the side that faces the camera.
    No gradient: the normals only steer the colour."""
    with torch.no_grad():
        rot = quat_to_rotmat(gaussians.quats)  # [N, 3, 3], columns = the Gaussian's axes
        shortest = gaussians.log_scales.argmin(dim=1)  # [N]
        n = rot.gather(2, shortest[:, None, None].expand(-1, 3, 1))[..., 0]  # [N, 3]
        towards = camera_position.to(n) - gaussians.means  # [N, 3]
        return torch.where((n * towards).sum(-1, keepdim=True) < 0, -n, n)


class Lighting(_PerImageDeltas):
    """The lighting changes of all training views [V, 9, 3] and their optimizer (stepped at
    the exposure schedule's learning rates)."""

    def __init__(self, num_views: int, device: torch.device) -> None:
        self.deltas = torch.nn.Parameter(torch.zeros(num_views, NUM_LIGHTING_BASES, 3, device=device))  # [V, 9, 3]
        self.optimizer = torch.optim.Adam([self.deltas], lr=1e-2, eps=1e-15)

    def coefficients(self, index: int) -> torch.Tensor:
        """[9, 3] view `index`'s lighting change (mean over the views = none)."""
        return self.deltas[index] - self.deltas.mean(0)

    def shade(self, gaussians: Gaussians, index: int, camera: Camera) -> Gaussians:
        """The Gaussians as training view `index` lit them: sh0 rescaled, everything else shared."""
        normals = facing_normals(gaussians, camera.position)  # [N, 3]
        gain = sh_basis(2, normals) @ self.coefficients(index).to(gaussians.dtype)  # [N, 3]
        diffuse = SH_C0 * gaussians.sh0 + 0.5  # [N, 1, 3] the degree-0 colour
        return replace(gaussians, sh0=gaussians.sh0 + diffuse * gain[:, None, :] / SH_C0)

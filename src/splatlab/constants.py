"""The method's constants, in one place.

Every backend (reference, cpu kernels, triton kernels), the viewer and the trainer import them
from here, so that a change here changes the method everywhere at once. Values are those of
the 3DGS CUDA rasterizer (Kerbl et al. 2023) unless a comment says otherwise.
"""

from __future__ import annotations

# ---- rasterization ---------------------------------------------------------------------------

TILE_SIZE = 16  # pixels per tile side; every backend bins Gaussians into 16x16 tiles
ALPHA_MAX = 0.99  # a single Gaussian never makes a pixel fully opaque
ALPHA_MIN = 1.0 / 255.0  # contributions below one 8-bit step are skipped
T_MIN = 1e-4  # stop before the Gaussian that would take transmittance below this
FOV_CLAMP = 1.3  # the point used for the projection Jacobian is clamped to 1.3x the field of view
EPS2D = 0.3  # low-pass filter added to the 2D covariance, px^2
RADIUS_SIGMAS = 3.0  # a splat's screen radius: 3 standard deviations along its major axis
LAMBDA_FLOOR = 0.1  # floor under the eigenvalue discriminant of the 2D covariance (3DGS)
NEAR_PLANE = 0.01  # Gaussians closer to the camera than this (camera-space z) are culled
FAR_PLANE = 1e10

# ---- spherical harmonics (real, orthonormal; the 3DGS sign convention) ------------------------

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
    -0.4570457994644658, 1.445305721320277, -0.5900435899266435,
)  # fmt: skip
SH_MAX_DEGREE = 3

# ---- loss ------------------------------------------------------------------------------------

SSIM_WINDOW = 11  # Gaussian window of the SSIM statistics, pixels
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
SSIM_LAMBDA = 0.2  # loss = (1 - lambda) L1 + lambda (1 - SSIM)

# ---- masks -----------------------------------------------------------------------------------

SURROUND_BAND = 0.02  # width of the band outside an object mask whose colour a render shows behind
# the subject, as a fraction of the image's long side (train/surround.py)

# ---- Mip-Splatting's 3D smoothing filter (train/smoothing.py; Yu et al. 2024) -----------------

SMOOTHING_3D_VARIANCE = 0.2  # the filter's variance in screen space, px^2 (Mip-Splatting's 0.2)
SMOOTHING_3D_MARGIN = 0.15  # a camera "sees" a centre within 15% of its frame outside the image
SMOOTHING_3D_EVERY = 100  # steps between recomputations of the sampling rates (as Mip-Splatting)

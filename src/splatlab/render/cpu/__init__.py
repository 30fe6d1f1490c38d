"""backend="cpu": compiled Numba kernels with a hand-written backward.

Same stages, outputs and conventions as render/reference.py (the oracle it is tested
against), organised like the 3DGS CUDA rasterizer:

    ProjectGaussians (project.py, per Gaussian)   covariance, EWA projection, SH colour, radii
    bin_gaussians    (binning.py)                 radix sort by depth, counting sort by tile
    CompositeTiles   (composite.py, per tile)     front to back, then background, alpha and
                                                  expected depth (only with render_depth);
                                                  backward back to front

Shared inline helpers live in _common.py; kernels.py names every compiled kernel; ssim.py is
the fused SSIM that losses.ssim_map uses for CPU float32 images.

Both Functions are deterministic: every parallel task writes only memory it owns
(a Gaussian's outputs, a tile's pixels, a (Gaussian, tile) gradient slot), and per-Gaussian
gradients are reduced over slots in a fixed order, so results do not depend on the number of
threads or on scheduling. Memory grows with the number of tile-Gaussian intersections.

Gradients reach every raw parameter (means, quats, log_scales, logit_opacities, sh0, shN),
including the colour's view-direction term into `means`, as the reference does. The camera
is treated as constant: no gradient flows to `camera.viewmat`.

Threads: settings.num_threads, or torch.get_num_threads(), clamped to NUMBA_NUM_THREADS.
With settings.absgrad, backward also sets `out.means2d.absgrad` [N, 2] = sum over pixels of
|dL/dmeans2d| (componentwise); like `.grad`, it accumulates over backward calls.
"""

from __future__ import annotations

import torch

from ...camera import Camera
from ...gaussians import Gaussians
from ..settings import RenderOutput, RenderSettings
from . import kernels
from .binning import bin_gaussians
from .composite import CompositeTiles
from .project import CameraParams, ProjectGaussians

__all__ = ["rasterize_cpu", "camera_params"]

kernels.invalidate_stale_cache()  # before any kernel loads from the disk cache


def camera_params(gaussians: Gaussians, camera: Camera, settings: RenderSettings) -> CameraParams:
    """What ProjectGaussians needs from the camera and the settings, in kernel-ready form."""
    dtype = gaussians.dtype
    sh_degree = gaussians.sh_degree if settings.sh_degree is None else settings.sh_degree
    # As the reference does (viewmat.to(means)), round the camera to the data dtype first.
    viewmat = camera.viewmat.detach().to(dtype).double().contiguous()
    campos = camera.position.detach().to(dtype).double().contiguous()
    return CameraParams(
        viewmat=viewmat.numpy(),
        campos=campos.numpy(),
        fx=camera.fx, fy=camera.fy, cx=camera.cx, cy=camera.cy,
        width=camera.width, height=camera.height,
        near=float(settings.near_plane), far=float(settings.far_plane), eps2d=float(settings.eps2d),
        antialiased=bool(settings.antialiased), sh_degree=int(sh_degree),
        num_threads=settings.num_threads or torch.get_num_threads(),
    )  # fmt: skip


def rasterize_cpu(gaussians: Gaussians, camera: Camera, settings: RenderSettings) -> RenderOutput:
    """Render `gaussians` from `camera` with the Numba kernels. Inputs are assumed validated."""
    dtype = gaussians.dtype
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"backend 'cpu' supports float32 and float64 Gaussians, got {dtype}")
    cam = camera_params(gaussians, camera, settings)
    num_threads = cam.num_threads
    means2d, conics, depths, opacities, colors, radii, rect = ProjectGaussians.apply(
        gaussians.means, gaussians.quats, gaussians.log_scales, gaussians.logit_opacities,
        gaussians.sh0, gaussians.shN, cam,
    )  # fmt: skip
    if means2d.requires_grad:
        means2d.retain_grad()  # densification reads the screen-space gradient

    binning = bin_gaussians(radii, rect, depths, camera.width, camera.height, num_threads)
    image, alpha, depth = CompositeTiles.apply(
        means2d, conics, opacities, colors, depths, binning, camera.width, camera.height,
        tuple(float(c) for c in settings.background), num_threads, bool(settings.absgrad),
        bool(settings.render_depth),
    )  # fmt: skip
    return RenderOutput(
        image=image,  # [H, W, 3]
        alpha=alpha,  # [H, W, 1]
        depth=depth if settings.render_depth else None,  # [H, W, 1]
        means2d=means2d,  # [N, 2]
        radii=radii,  # [N] int32
        visible=radii > 0,  # [N] bool
        depths=depths,  # [N]
        num_intersections=binning.num_intersections,
    )

"""backend="triton": GPU kernels written in Triton, compiled just in time (no CUDA toolkit).

Same stages, outputs and conventions as render/reference.py (the oracle it is tested
against), organised like the cpu backend (render/cpu/):

    ProjectGaussians (Triton, per Gaussian)  covariance, EWA projection, SH colour, radii and
                                             the tiles where alpha can reach 1/255
    bin_gaussians    (Triton + torch.sort)   pairs emitted in depth order, stable sort by tile
    CompositeTiles   (Triton, per tile)      front to back; backward front to back again,
                                             per-pair gradient slots summed per Gaussian in
                                             a fixed order

Deterministic: no float atomics, so gradients are the same run to run. Gradients reach every
raw parameter (means, quats, log_scales, logit_opacities, sh0, shN), including the colour's
view-direction term into `means`, as the reference does; the camera is treated as constant.

Where it runs: CUDA tensors (Triton also targets AMD ROCm GPUs, which torch reports as
"cuda"); CPU tensors only through Triton's interpreter (TRITON_INTERPRET=1 set before Python
starts, slow: that is how the tests run without a GPU). Install: pip install "splatlab[gpu]".
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from ...camera import Camera
from ...gaussians import Gaussians
from ..settings import RenderOutput, RenderSettings

__all__ = ["rasterize_triton", "triton_installed", "triton_importable", "interpreter_mode", "TritonUnavailableError"]

INSTALL_HINT = 'pip install "splatlab[gpu]"'


class TritonUnavailableError(ImportError, RuntimeError):
    """backend="triton" cannot run here (Triton missing, or tensors it cannot reach)."""


def triton_installed() -> bool:
    """Whether the `triton` package is installed (checked without importing it: cheap)."""
    return importlib.util.find_spec("triton") is not None


@functools.lru_cache(maxsize=None)
def _import_error() -> str | None:
    try:
        import triton  # noqa: F401
    except Exception as exc:  # a broken install raises more than ImportError
        return f"{type(exc).__name__}: {exc}"
    return None


def triton_importable() -> bool:
    """Whether `import triton` works (tried once per process)."""
    return triton_installed() and _import_error() is None


def interpreter_mode() -> bool:
    """Whether the kernels run through Triton's interpreter (TRITON_INTERPRET=1 when they
    were first imported): then they take CPU tensors."""
    if not triton_installed():
        return False
    from .project_kernels import project_forward_kernel

    return type(project_forward_kernel).__name__ == "InterpretedFunction"


def _check_can_run(gaussians: Gaussians) -> None:
    if not triton_installed():
        raise TritonUnavailableError(f"backend 'triton' needs the Triton compiler, which is not installed: {INSTALL_HINT}")
    if not triton_importable():
        raise TritonUnavailableError(f"backend 'triton': importing Triton failed ({_import_error()}); reinstall it: "
                                     f"{INSTALL_HINT}")
    device = gaussians.device
    if device.type == "cuda" or interpreter_mode():
        return
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise TritonUnavailableError(
            "backend 'triton' was loaded before TRITON_INTERPRET=1 was set, so its kernels are compiled for the GPU "
            "and cannot take CPU tensors; set TRITON_INTERPRET=1 before starting Python"
        )
    raise TritonUnavailableError(
        f"backend 'triton' runs on the GPU but the Gaussians are on {device}: move them with "
        "gaussians.to('cuda') (a CUDA or ROCm build of PyTorch is needed), use backend 'cpu' or 'auto' for CPU "
        "tensors, or set TRITON_INTERPRET=1 before starting Python to run the kernels on the CPU through Triton's "
        "interpreter (slow; meant for tests)"
    )


def rasterize_triton(gaussians: Gaussians, camera: Camera, settings: RenderSettings) -> RenderOutput:
    """Render `gaussians` from `camera` with the Triton kernels. Inputs are assumed validated."""
    _check_can_run(gaussians)
    dtype, device = gaussians.dtype, gaussians.device
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"backend 'triton' supports float32 and float64 Gaussians, got {dtype}")
    from .autograd import CompositeTiles, ProjectGaussians, ProjectionMeta, bin_gaussians
    from .project_kernels import camera_tensor

    sh_degree = gaussians.sh_degree if settings.sh_degree is None else settings.sh_degree
    meta = ProjectionMeta(
        cam=camera_tensor(camera, settings, dtype, device), num_bases=(sh_degree + 1) ** 2,
        antialiased=bool(settings.antialiased), width=camera.width, height=camera.height,
    )  # fmt: skip
    means2d, conics, depths, opacities, colors, radii, rect = ProjectGaussians.apply(
        gaussians.means, gaussians.quats, gaussians.log_scales, gaussians.logit_opacities,
        gaussians.sh0, gaussians.shN, meta,
    )  # fmt: skip
    if means2d.requires_grad:
        means2d.retain_grad()  # densification reads the screen-space gradient
    binning = bin_gaussians(rect, radii, depths, camera.width, camera.height)
    features = colors  # [N, 3] (+ depth: [N, 4]) the channels to composite
    if settings.render_depth:
        features = torch.cat([colors, depths.unsqueeze(-1)], dim=-1)
    feat, t_final, _last = CompositeTiles.apply(
        means2d, conics, opacities, features, binning, camera.width, camera.height, bool(settings.absgrad)
    )
    # Background, alpha and expected depth as reference.finish_output makes them.
    background = torch.as_tensor(settings.background, dtype=dtype, device=device)
    alpha = (1.0 - t_final).unsqueeze(-1)  # [H, W, 1]
    image = feat[..., :3] + t_final.unsqueeze(-1) * background  # [H, W, 3]
    depth = feat[..., 3:4] / alpha.clamp_min(1e-10) if settings.render_depth else None  # [H, W, 1]
    return RenderOutput(
        image=image,
        alpha=alpha,
        depth=depth,
        means2d=means2d,  # [N, 2]
        radii=radii,  # [N] int32
        visible=radii > 0,  # [N] bool
        depths=depths,  # [N]
        num_intersections=binning.num_intersections,
    )

"""rasterize(gaussians, camera, settings) -> RenderOutput: the one public entry to rendering.

Backends share one signature and are tested against `reference` forward and backward:
- "reference": pure PyTorch, readable, autograd (render/reference.py) — the oracle.
- "cpu": compiled Numba kernels with a hand-written backward (render/cpu/).
- "triton": GPU kernels in Triton, compiled just in time (render/triton/); CUDA tensors, or
  CPU tensors through Triton's interpreter (TRITON_INTERPRET=1, for tests).
"""

from __future__ import annotations

import torch

from ..camera import Camera
from ..gaussians import Gaussians
from .settings import TILE_SIZE, RenderOutput, RenderSettings

__all__ = ["rasterize", "RenderSettings", "RenderOutput", "TILE_SIZE", "available_backends"]


def available_backends() -> list[str]:
    backends = ["reference"]
    try:
        from .cpu import rasterize_cpu  # noqa: F401
    except ImportError:
        pass
    else:
        backends.append("cpu")
    from .triton import triton_installed  # checks for the package without importing it

    if triton_installed():
        backends.append("triton")
    return backends


def resolve_backend(settings: RenderSettings, device: torch.device) -> str:
    """The backend `auto` stands for: cpu for CPU tensors, triton for CUDA tensors when
    Triton is installed, else reference."""
    if settings.backend != "auto":
        return settings.backend
    if device.type == "cpu" and "cpu" in available_backends():
        return "cpu"
    if device.type == "cuda":
        from .triton import triton_importable

        if triton_importable():
            return "triton"
    return "reference"


def rasterize(gaussians: Gaussians, camera: Camera, settings: RenderSettings | None = None) -> RenderOutput:
    """Render `gaussians` as seen by `camera`.

    Returns a RenderOutput with image [H, W, 3], alpha [H, W, 1], expected depth [H, W, 1],
    and, for densification, means2d [N, 2] (its .grad is filled by backward), radii [N] and
    a visibility mask [N]. Raises ValueError naming the problem for malformed input.
    """
    settings = settings or RenderSettings()
    settings.validate()
    if not isinstance(gaussians, Gaussians):
        raise TypeError(f"rasterize expects a splatlab.Gaussians, got {type(gaussians).__name__}")
    if not isinstance(camera, Camera):
        raise TypeError(f"rasterize expects a splatlab.Camera, got {type(camera).__name__}")
    gaussians.validate()
    camera.validate()
    if settings.sh_degree is not None and settings.sh_degree > gaussians.sh_degree:
        raise ValueError(
            f"settings.sh_degree={settings.sh_degree} but the Gaussians only have SH degree {gaussians.sh_degree}"
        )
    backend = resolve_backend(settings, gaussians.device)
    if backend == "reference":
        from .reference import rasterize_reference

        return rasterize_reference(gaussians, camera, settings)
    if backend == "cpu":
        if gaussians.device.type != "cpu":
            raise ValueError(f"backend 'cpu' needs CPU tensors, got Gaussians on {gaussians.device}")
        from .cpu import rasterize_cpu

        return rasterize_cpu(gaussians, camera, settings)
    if backend == "triton":
        from .triton import rasterize_triton

        return rasterize_triton(gaussians, camera, settings)
    raise ValueError(f"unknown backend {backend!r}")

"""Typed settings and outputs of the renderer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional

import torch
import tyro

from ..constants import EPS2D, FAR_PLANE, NEAR_PLANE, TILE_SIZE  # noqa: F401  (TILE_SIZE re-exported)

Backend = Literal["auto", "reference", "cpu", "triton"]  # the one place backends are named
BACKENDS: tuple[str, ...] = Backend.__args__


@dataclass
class RenderSettings:
    """How to render. Defaults follow the 3DGS rasterizer."""

    backend: Backend = "auto"
    """'reference' (pure PyTorch, autograd), 'cpu' (compiled Numba kernels), 'triton' (GPU
    kernels, compiled just in time), or 'auto' (cpu for CPU tensors, triton for CUDA tensors
    when Triton is installed, else reference)."""
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Colour behind the Gaussians: C = sum c_i a_i T_i + T_final * background."""
    # Per-render fields, hidden from command lines that embed these settings (training sets them).
    sh_degree: Annotated[Optional[int], tyro.conf.Suppress] = None
    """SH degree to evaluate (the training ramp lowers it); None = all the model has."""
    near_plane: float = NEAR_PLANE
    """Gaussians whose camera-space depth is below this are culled."""
    far_plane: float = FAR_PLANE
    """Gaussians whose camera-space depth is above this are culled."""
    eps2d: float = EPS2D
    """Low-pass filter added to the 2D covariance, in px^2 (3DGS: 0.3)."""
    antialiased: bool = False
    """Mip-Splatting's 2D filter: scale opacity by sqrt(det(S') / det(S' + eps2d I)) so that
    small Gaussians are not inflated by the low-pass filter."""
    num_threads: Optional[int] = None
    """Threads for the CPU backend; None = torch.get_num_threads()."""
    render_depth: Annotated[bool, tyro.conf.Suppress] = True
    """Also composite the expected depth. Training turns it off unless a depth loss needs it:
    it is one of the four composited channels. When off, `RenderOutput.depth` is None."""
    absgrad: Annotated[bool, tyro.conf.Suppress] = False
    """Also accumulate, per Gaussian, the sum over pixels of |dL/dmeans2d| (AbsGS-style
    densification); after backward it is readable as `output.means2d.absgrad` [N, 2]."""

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: expected one of {', '.join(BACKENDS)}")
        if len(tuple(self.background)) != 3:
            raise ValueError(f"background must be 3 floats (RGB), got {self.background!r}")
        if not 0.0 < self.near_plane < self.far_plane:
            raise ValueError(f"need 0 < near_plane < far_plane, got {self.near_plane}, {self.far_plane}")
        if self.eps2d < 0:
            raise ValueError(f"eps2d must be >= 0, got {self.eps2d}")
        if self.sh_degree is not None and self.sh_degree not in (0, 1, 2, 3):
            raise ValueError(f"sh_degree must be None or 0..3, got {self.sh_degree}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")


@dataclass
class RenderOutput:
    """What `rasterize` returns. Images are channels-last."""

    image: torch.Tensor  # [H, W, 3] RGB, background composited
    alpha: torch.Tensor  # [H, W, 1] accumulated opacity, 1 - T_final
    depth: Optional[torch.Tensor]  # [H, W, 1] expected camera-space depth, sum(w_i z_i) / alpha
    # (0 where alpha = 0); None when settings.render_depth is False
    means2d: torch.Tensor  # [N, 2] projected centres in pixels; .grad is readable after backward
    radii: torch.Tensor  # [N] int32 3-sigma radius in pixels, 0 = not rendered
    visible: torch.Tensor  # [N] bool, the Gaussian touches at least one tile of the image
    depths: torch.Tensor  # [N] camera-space depth of each centre
    num_intersections: int  # tile-Gaussian pairs composited

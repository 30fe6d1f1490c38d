"""The exact render shown when a camera rests: splatlab's own renderer at the browser's view.

The browser stretches the image over its canvas, so a large canvas is rendered at no more than
`max_pixels` (same field of view and aspect). The depth goes along so that viser composites the
camera frustums in front of or behind the surface; where the render is background it is set
beyond viser's depth range (0 .. 167.77 world units, fixed point).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..gaussians import Gaussians
from .cameras import ViewState, camera_from_view

FAR_DEPTH = 1e3  # beyond viser's largest depth: background pixels never hide a frustum


@dataclass
class StillFrame:
    image: np.ndarray  # [H, W, 3] uint8
    depth: Optional[np.ndarray]  # [H, W] float32 camera-space depth (world units), FAR_DEPTH where empty


def render_still(
    gaussians: Gaussians,
    view: ViewState,
    background: tuple[int, int, int],
    *,
    view_dependent: bool = True,
    max_pixels: int = 1_000_000,
    num_threads: Optional[int] = None,
    with_depth: bool = False,
) -> StillFrame:
    """Render `view` (a browser's camera) with splatlab.render.rasterize (cpu backend on CPU)."""
    from ..render import RenderSettings, rasterize

    shrink = min(1.0, math.sqrt(max_pixels / (view.width * view.height)))
    camera = camera_from_view(view, max(1, round(view.width * shrink)), max(1, round(view.height * shrink)))
    settings = RenderSettings(background=tuple(c / 255.0 for c in background), sh_degree=None if view_dependent else 0,
                              num_threads=num_threads, render_depth=with_depth)
    with torch.no_grad():
        out = rasterize(gaussians, camera, settings)
    image = (out.image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()  # [H, W, 3]
    depth = None
    if out.depth is not None:
        depth = torch.where(out.alpha > 0.5, out.depth, torch.full_like(out.depth, FAR_DEPTH))[..., 0].numpy()
    return StillFrame(image, depth)

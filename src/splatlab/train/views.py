"""What one training step sees of a training view: its target, the pixels that count, the
background it is composited over, and its depth prior.

The masks of a real capture mean one of two things (`--masks`, resolved by `resolve_mask_mode`):
- "object": white is the subject; outside it the render is trained to be empty, over a random
  background each step (as 3DGS trains RGBA images), and the PSNR counts the subject's pixels;
- "ignore": black pixels are left out of the loss (people, reflections).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..data.scene import Scene
from .config import TrainConfig
from .step import StepView


def resolve_mask_mode(scene: Scene, mode: str) -> str:
    """"off" without masks; "auto" is "object" when the masks cover less than half the pixels
    (a subject cut out of its surroundings), else "ignore" (a few regions left out)."""
    masked = [v for v in scene.train if v.mask is not None]
    if mode == "off" or not masked:
        return "off"
    if mode != "auto":
        return mode
    cover = sum(float(v.mask.float().mean()) for v in masked) / len(masked)
    return "object" if cover < 0.5 else "ignore"


def mask_message(scene: Scene, mode: str, asked: str) -> str:
    """The one line a run prints about its masks."""
    masked = [v for v in scene.train if v.mask is not None]
    cover = sum(float(v.mask.float().mean()) for v in masked) / len(masked)
    what = (f"masks are object silhouettes (they cover {cover:.0%} of the pixels): outside them the "
            "render is trained to be empty, over a random background" if mode == "object" else
            f"masks mark the pixels to train (they cover {cover:.0%}): the others are not supervised")
    return (f"{len(masked)} of {len(scene.train)} training views have masks ({asked}): "
            f"{what}; the progress PSNR and the evaluation count the masked pixels "
            "(--masks object|ignore|off to choose)")


def step_view(scene: Scene, index: int, config: TrainConfig, mask_mode: str,
              background: tuple[float, float, float], device: torch.device) -> StepView:
    """Training view `index` as the step consumes it (target [H, W, 3], mask [H, W, 1] or None)."""
    view = scene.train[index]
    target = view.image_float(device)  # [H, W, 3]
    if config.random_background:  # re-composite the target over a fresh random colour
        bg = torch.rand(3)
        alpha = view.alpha.to(device).float().unsqueeze(-1) / 255.0  # [H, W, 1]
        target = target + (1 - alpha) * (bg.to(device) - torch.tensor(background, device=device))
        background = tuple(bg.tolist())
    mask = None if view.mask is None else view.mask.to(device).unsqueeze(-1).float()  # [H, W, 1]
    measure = None
    if mask is not None and mask_mode == "object":  # outside the subject: empty space
        bg = torch.rand(3).to(device)
        target = target * mask + bg * (1 - mask)
        background, measure, mask = tuple(bg.tolist()), mask, None
    camera = view.camera.to(device)
    out = StepView(camera, target, mask, background, index, measure=measure)
    if config.depth.weight > 0:
        out.inv_depth = None if view.inv_depth is None else view.inv_depth.to(device)
        if out.inv_depth is None and config.depth.sparse:
            out.depth_points = sparse_depth(scene, view, camera, config.render.near_plane)
    return out


def sparse_depth(scene: Scene, view, camera, near_plane: float) -> Optional[torch.Tensor]:
    """[K, 3] (u, v, z) of the SfM points `view` observed that land inside its image."""
    if view.point_ids is None or scene.points is None:
        return None
    uvz = camera.project(scene.points[view.point_ids].to(camera.viewmat.device))  # [K, 3]
    u, v, z = uvz.unbind(-1)
    inside = (z > near_plane) & (u >= 0) & (v >= 0) & (u < view.width) & (v < view.height)
    return uvz[inside]

"""What one training step sees of a training view: its target, the pixels that count, the
background it is composited over, and its depth prior.

The masks of a real capture mean one of two things (`--masks`, resolved by `resolve_mask_mode`):
- "object": white is the subject; outside it the render is trained to be empty, over a random
  background each step (as 3DGS trains RGBA images), and the PSNR counts the subject's pixels.
  Inside the masks the render is composited over a learned colour (train/surround.py): masks
  take in some of the sky or wall around the subject, which a black background gets wrong;
- "ignore": black pixels are left out of the loss (people, reflections).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from ..data.scene import Scene
from .config import TrainConfig
from .step import StepView

if TYPE_CHECKING:
    from .distributed import Group


def mask_cover(scene: Scene, group: Optional[Group] = None) -> Optional[float]:
    """The mean fraction of the pixels the training masks cover (None without masks). With a
    `group`, each process measures its own views' masks and the per-view fractions are gathered
    (a sum where each view's entry comes from one process: exact)."""
    masked = [i for i, v in enumerate(scene.train) if v.has_mask]
    if not masked:
        return None
    mine = range(len(scene.train)) if group is None else group.shard(len(scene.train))
    covers = torch.zeros(len(scene.train), dtype=torch.float64)  # [V]
    for i in mine:
        view = scene.train[i]
        if view.has_mask:
            if view.mask is None:
                raise RuntimeError(f"{view.name}: the mask of this process's view is not loaded")
            covers[i] = float(view.mask.float().mean())
    if group is not None:
        group.sum_(covers, what="gathering the mask coverage")
    return sum(float(covers[i]) for i in masked) / len(masked)


def resolve_mask_mode(scene: Scene, mode: str, cover: Optional[float]) -> str:
    """"off" without masks; "auto" is "object" when the masks cover less than half the pixels
    (`cover`, from `mask_cover`: a subject cut out of its surroundings), else "ignore" (a few
    regions left out)."""
    if mode == "off" or cover is None:
        return "off"
    if mode != "auto":
        return mode
    return "object" if cover < 0.5 else "ignore"


def mask_message(scene: Scene, mode: str, asked: str, cover: float) -> str:
    """The one line a run prints about its masks."""
    masked = sum(v.has_mask for v in scene.train)
    what = (f"masks are object silhouettes (they cover {cover:.0%} of the pixels): outside them the "
            "render is trained to be empty, over a random background" if mode == "object" else
            f"masks mark the pixels to train (they cover {cover:.0%}): the others are not supervised")
    return (f"{masked} of {len(scene.train)} training views have masks ({asked}): "
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

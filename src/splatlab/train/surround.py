"""The colour behind a masked subject.

Object masks ("object" mode, train/views.py) are rarely drawn to the pixel: a segmenter or a
hand takes in a margin of sky or wall around the subject, and pixels at the subject's edge
are part subject, part surroundings. Training asks the render to be empty outside the masks
(over a random colour each step); inside them, over the black background 3DGS uses for real
captures, those pixels can only be matched by Gaussians painted the colour of the sky, which
disagree from photo to photo, and a held-out view shows them black.

So, as 3DGS renders synthetic objects over a known white, a run with object masks renders its
subject over one colour learned with the model: inside the masks every training render is
composited over it, outside them over the step's random colour. It starts at the median
colour of the photos just outside their masks (`surround_colour`), has its own Adam (the
exposure's schedule), is saved with the checkpoint, and is what the evaluation, `splatlab
render` and the viewer put behind the model (metrics.json records it). Exported models are
Gaussians only, unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from ..constants import SURROUND_BAND
from .exposure import Learned
from .schedule import exp_decay

if TYPE_CHECKING:
    from ..data.scene import Scene
    from .distributed import Group

SURROUND_LR = (1e-2, 1e-3)  # Adam learning rate, start and end (exponential decay), as exposure's


def surround_colour(scene: Scene, group: Optional[Group] = None) -> tuple[float, float, float]:
    """The median colour of the training photos just outside their masks: per view the median
    over a band SURROUND_BAND of the long side wide outside its mask, then the median over the
    views. With a `group`, each process measures its own views and the rows are gathered (each
    row comes from one process, zeros elsewhere: exact), so every process gets the same colour."""
    masked = [i for i, v in enumerate(scene.train) if v.has_mask]
    if not masked:
        return (0.0, 0.0, 0.0)
    colours = torch.zeros(len(scene.train), 3, dtype=torch.float64)  # [V, 3]
    mine = set(range(len(scene.train))) if group is None else set(group.shard(len(scene.train)))
    for i in masked:
        view = scene.train[i]
        if i not in mine or view.mask is None:
            continue
        mask = view.mask.float()[None, None]  # [1, 1, H, W]
        width = max(1, round(SURROUND_BAND * max(view.width, view.height)))
        grown = torch.nn.functional.max_pool2d(mask, 2 * width + 1, stride=1, padding=width)[0, 0] > 0
        band = grown & ~view.mask  # [H, W]
        if band.any():
            colours[i] = view.pixels()[band].double().median(dim=0).values / 255.0
    if group is not None:
        group.sum_(colours, what="gathering the colour around the masks")
    return tuple(round(float(c), 4) for c in colours[masked].median(dim=0).values)


class Surround(Learned):
    """The learned colour [3] behind a masked subject, and its optimizer (checkpointed as "colour")."""

    param = "colour"

    def __init__(self, start: tuple[float, float, float], device: torch.device) -> None:
        self.colour = torch.nn.Parameter(torch.tensor(start, dtype=torch.float32, device=device))  # [3]
        self.optimizer = torch.optim.Adam([self.colour], lr=SURROUND_LR[0], eps=1e-15)

    def value(self) -> torch.Tensor:
        """[3] the colour, in [0, 1]."""
        return self.colour.clamp(0.0, 1.0)

    def as_tuple(self) -> tuple[float, float, float]:
        return tuple(round(float(c), 4) for c in self.value().detach().cpu())

    def behind(self, measure: torch.Tensor, background: tuple[float, float, float]) -> torch.Tensor:
        """[H, W, 3] what a training render is composited over: this colour where `measure`
        [H, W, 1] (the object mask) is 1, the step's random `background` elsewhere."""
        bg = torch.tensor(background, dtype=measure.dtype, device=measure.device)
        return bg + measure * (self.value() - bg)

    def step(self, progress: float) -> None:
        self.optimizer.param_groups[0]["lr"] = exp_decay(SURROUND_LR[0], SURROUND_LR[1], progress)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

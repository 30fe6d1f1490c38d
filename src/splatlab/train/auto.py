"""Choices that follow from the images, the machine and the budget, each with its reason.

`splatlab train DATA` with no options must be a sensible run on a 2-core machine. 3DGS trains
at most 1.6k pixels on the long side (it downscales larger images); on a CPU with a short
budget, fewer pixels per step buy more steps, which matters more for quality than resolution
until the model has converged. The choices are logged in one line by the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LONG_SIDE = 1600  # 3DGS's cap: larger images are downscaled (its -r default)
CPU_SHORT_BUDGET_LONG_SIDE = 800  # CPU, budget <= CPU_SHORT_BUDGET_MINUTES: at most this many pixels
CPU_SHORT_BUDGET_MINUTES = 30.0
# Coarse-to-fine (DashGaussian) for budgets up to this many minutes, over this fraction of the
# schedule. Measured (docs/real_captures.md): at 5 minutes it gained on lego, the statue and fox;
# at 15 it cost lego 0.28 dB and left the statue as it was. Between the two it is not measured.
COARSE_TO_FINE_MAX_MINUTES = 10.0
COARSE_TO_FINE_FRACTION = 0.5
# Per-photo lighting (train/lighting.py) for training photos from at least this many cameras.
LIGHTING_MIN_CAMERAS = 2


@dataclass
class ResolutionChoice:
    downscale: int
    width: int
    height: int
    reason: str


def choose_downscale(width: int, height: int, device: str, max_minutes: float | None) -> ResolutionChoice:
    """The smallest power-of-two downscale that meets the caps for this device and budget."""
    cap, why = MAX_LONG_SIDE, f"long side <= {MAX_LONG_SIDE} px as 3DGS"
    if device.startswith("cpu") and max_minutes is not None and max_minutes <= CPU_SHORT_BUDGET_MINUTES:
        cap = CPU_SHORT_BUDGET_LONG_SIDE
        why = (f"long side <= {cap} px: on a CPU a {max_minutes:g}-minute budget buys more steps at "
               "fewer pixels (pass --downscale to choose)")
    factor = 1
    while max(width, height) / factor > cap:
        factor *= 2
    w, h = round(width / factor), round(height / factor)
    return ResolutionChoice(factor, w, h, f"training at {w}x{h} (images {width}x{height}, downscale {factor}): {why}")


def choose_coarse_to_fine(max_minutes: float | None) -> tuple[float, str]:
    """(fraction of the schedule trained coarse-to-fine, reason): on for short budgets, where
    cheap low-resolution steps early on buy more steps in all."""
    if max_minutes is not None and max_minutes <= COARSE_TO_FINE_MAX_MINUTES:
        f = COARSE_TO_FINE_FRACTION
        return f, (f"coarse to fine: the first {f / 3:.0%} of the schedule at 1/4 resolution, the next {f / 3:.0%} "
                   f"at 1/2: a {max_minutes:g}-minute budget fits more steps so (--coarse-to-fine 0 turns it off)")
    why = "no time budget" if max_minutes is None else f"a {max_minutes:g}-minute budget"
    return 0.0, f"full resolution from the start ({why}; --coarse-to-fine F to start coarse)"


def choose_lighting(sources: list) -> tuple[bool, str]:
    """(per-photo lighting on, reason) for photographs with exposure compensation: on for a photo
    collection, whose light changes from photo to photo, told by its photos coming from more
    than one camera (EXIF make and model). One camera is one capture (a phone video, a walk
    around an object), lit one way. Measured (docs/real_captures.md): +0.3 dB on the statue
    (40 photos from 19 cameras), nothing on fox (one phone)."""
    from ..data.images import camera_model

    models = {m for m in (camera_model(s) for s in sources if s is not None) if m is not None}
    if len(models) >= LIGHTING_MIN_CAMERAS:
        return True, (f"per-photo lighting on: the training photos come from {len(models)} cameras (EXIF), a photo "
                      "collection whose light changes from photo to photo (--exposure.lighting False turns it off)")
    seen = "one camera" if models else "no camera in their EXIF"
    return False, f"per-photo lighting off: the training photos show {seen}, one capture (--exposure.lighting True turns it on)"

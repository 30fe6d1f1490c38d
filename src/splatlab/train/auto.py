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

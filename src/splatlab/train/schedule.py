"""Schedules over a run's progress t in [0, 1]: learning-rate decay and the SH degree ramp.

Shared by 3D training and fit2d. Progress, not the iteration number, drives them, so that a
time budget that changes the number of iterations stretches the schedule instead of cutting it.
"""

from __future__ import annotations

import math


def exp_decay(start: float, end: float, t: float) -> float:
    """Log-linear interpolation from `start` (t = 0) to `end` (t = 1), as 3DGS decays lrs."""
    t = min(max(t, 0.0), 1.0)
    if start <= 0 or end <= 0:  # log of 0: fall back to linear (an lr of 0 stays reachable)
        return (1 - t) * start + t * end
    return math.exp((1 - t) * math.log(start) + t * math.log(end))


def sh_degree_at(progress: float, iterations: int, interval: int, max_degree: int) -> int:
    """Active SH degree: +1 every `interval` iterations of the nominal schedule of `iterations`."""
    return min(int(progress * iterations + 1e-9) // interval, max_degree)


def resolution_divisor(progress: float, until: float) -> int:
    """Coarse-to-fine: 4 in the first third of [0, until), 2 in the second, then 1."""
    if until <= 0 or progress >= until:
        return 1
    return 4 if progress < until / 3 else 2 if progress < 2 * until / 3 else 1

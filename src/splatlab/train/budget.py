"""A wall-clock budget for a training run: how many iterations fit, re-planned as the run goes.

The first plan times a few steps before training; densification then grows the model (slower
steps) or prunes it (faster). Every REPLAN_EVERY of the run the
total is re-estimated from the speed measured since the last re-plan. The schedule (learning
rates, densification, SH ramp) follows `progress(step)`, which is piecewise linear between
re-plans, so a re-plan changes the pace but never makes a learning rate or SH degree jump.
After 80% of the plan it is re-checked more often and may only shrink.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .config import ConfigError

REPLAN_EVERY = 0.1  # re-plan every 10% of the run ...
REPLAN_MIN_STEPS = 20  # ... and at least this many steps apart
MIN_ITERATIONS = 50  # a budget that fits fewer iterations than this is refused
GROWTH_ALLOWANCE = 1.3  # first plan: later steps may be this much slower (densification)


@dataclass
class TimeBudget:
    seconds: float  # the whole budget
    cap: int  # never plan more than this many iterations (the config's `iterations`)
    reserve: float  # seconds kept back for the final save and evaluation
    total: int  # iterations planned now
    anchor_step: int = 0  # (step, progress) where the current plan starts
    anchor_progress: float = 0.0
    mark_step: int = 0  # (step, elapsed) at the last re-plan: the recent speed
    mark_elapsed: float = 0.0
    next_replan: int = REPLAN_MIN_STEPS

    @classmethod
    def plan(cls, seconds: float, cap: int, seconds_per_step: float, reserve: float) -> "TimeBudget":
        """The first plan, from the measured time of one step; ConfigError if nothing useful fits."""
        usable = seconds - reserve
        fits = int(usable / (seconds_per_step * GROWTH_ALLOWANCE)) if usable > 0 else 0
        if fits < MIN_ITERATIONS and fits < cap:
            needed = (reserve + MIN_ITERATIONS * seconds_per_step * GROWTH_ALLOWANCE) / 60.0
            raise ConfigError(
                f"--max-minutes {seconds / 60:g} leaves time for about {max(fits, 0)} iterations on this "
                f"machine ({seconds_per_step:.2f} s each, plus {reserve:.0f} s for saving and evaluating); "
                f"give at least --max-minutes {needed:.1f}"
            )
        total = min(cap, fits)
        return cls(seconds, cap, reserve, total, next_replan=max(REPLAN_MIN_STEPS, int(REPLAN_EVERY * total)))

    @property
    def scale(self) -> float:
        """Planned iterations over the nominal schedule's: what iteration counts are scaled by."""
        return self.total / self.cap

    def progress(self, step: int) -> float:
        """Fraction of the schedule done at `step`, in [0, 1]."""
        p0, s0 = self.anchor_progress, self.anchor_step
        return min(1.0, p0 + (step - s0) * (1.0 - p0) / max(self.total - s0, 1))

    def exhausted(self, elapsed: float) -> bool:
        return elapsed + self.reserve >= self.seconds

    def observe(self, step: int, elapsed: float, densifying: bool) -> bool:
        """Re-plan when due; True when the plan (and so the schedule's scale) changed."""
        if step < self.next_replan:
            return False
        rate = (elapsed - self.mark_elapsed) / max(step - self.mark_step, 1)  # seconds per step, recent
        self.mark_step, self.mark_elapsed = step, elapsed
        late = step >= 0.8 * self.total
        every = REPLAN_EVERY / 4 if late else REPLAN_EVERY
        self.next_replan = step + max(REPLAN_MIN_STEPS, int(every * self.total))
        remaining = self.seconds - self.reserve - elapsed
        total = step + int(remaining / (rate * (1.2 if densifying else 1.05)))
        # At least REPLAN_MIN_STEPS more (a slow patch must not end the run abruptly), but never
        # more than the config's iterations: a fast machine finishes the schedule, not more.
        total = min(self.cap, max(step + REPLAN_MIN_STEPS, total))
        # Late in the run a plan only shrinks: a machine that slowed down (other work, thermal
        # limits) still reaches the end of the schedule, decayed learning rates included.
        if abs(total - self.total) < 0.05 * self.total or (late and total > self.total):
            return False
        self.anchor_progress, self.anchor_step = self.progress(step), step
        self.total = total
        return True

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, d: dict) -> "TimeBudget":
        return cls(**d)

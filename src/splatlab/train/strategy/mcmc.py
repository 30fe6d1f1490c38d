"""3D Gaussian Splatting as Markov Chain Monte Carlo (Kheradmand et al. 2024).

The Gaussians are treated as samples; training is Stochastic Gradient Langevin Dynamics:

- every step, positions get noise shaped by each Gaussian's covariance and gated to nearly
  transparent Gaussians (`ops.inject_noise`), scaled by noise_lr · (current means lr);
- every `refine_every` steps between `refine_start` and `refine_stop`, "dead" Gaussians
  (opacity <= min_opacity) are relocated onto live ones sampled ∝ opacity, and up to 5% more
  Gaussians are added the same way until `cap_max` (`ops.relocate`, `ops.sample_add`). Both
  use the paper's opacity/scale update, so that N Gaussians sharing a place render like the
  original one;
- the loss gets L1 regularisers on opacity and scale, which push unused Gaussians to die
  (and be relocated).

The number of Gaussians therefore only grows, up to `cap_max`: the budget is explicit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...gaussians import Gaussians
from ...render.settings import RenderOutput
from .. import ops
from .base import Optimizers, Strategy, refine_floor, scale_iterations

NOISE_K = 100.0  # steepness of the opacity gate of the position noise (paper: k = 100)
NOISE_T = 0.005  # opacity at which the gate is 1/2 (paper: t = 0.995, on 1 - opacity)
MAX_COPIES = 51  # size of the binomial table: more copies of one Gaussian are treated as 51


@dataclass
class MCMCStrategyConfig:
    """3DGS-MCMC settings; defaults are the paper's.

    Steps count completed iterations (see strategy/base.py)."""

    cap_max: int = 1_000_000
    """Maximum number of Gaussians; growth stops there ("budget reached" is reported once)."""
    noise_lr: float = 5e5
    """Scale of the position noise, multiplied by the current means learning rate."""
    refine_start: int = 500
    """Relocate and add only at steps > refine_start."""
    refine_stop: int = 25_000
    """No relocation or growth from this step on (the noise continues to the end)."""
    refine_every: int = 100
    """Relocate and add every this many steps."""
    min_opacity: float = 0.005
    """Gaussians with opacity <= this are dead and get relocated."""
    opacity_reg: float = 0.01
    """Weight of the L1 opacity regulariser: opacity_reg · mean(opacity)."""
    scale_reg: float = 0.01
    """Weight of the L1 scale regulariser: scale_reg · mean(scale) over all axes."""
    growth_rate: float = 0.05
    """Fraction of Gaussians added per refine (at least one while below cap_max)."""

    def __post_init__(self) -> None:
        if self.cap_max < 1:
            raise ValueError(f"cap_max must be >= 1, got {self.cap_max}")
        if self.refine_every < 1:
            raise ValueError(f"refine_every must be >= 1, got {self.refine_every}")
        for name in ("noise_lr", "opacity_reg", "scale_reg", "growth_rate", "refine_start", "refine_stop"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.min_opacity < 1.0:
            raise ValueError(f"min_opacity must be in (0, 1), got {self.min_opacity}")

    def scaled(self, factor: float) -> "MCMCStrategyConfig":
        """A copy with every iteration-count field scaled by `factor` (>= 1 each; 0 stays 0)."""
        scaled = scale_iterations(self, ("refine_start", "refine_stop", "refine_every"), factor)
        return refine_floor(scaled, self, factor)

    @property
    def needs_absgrad(self) -> bool:
        return False


class MCMCStrategy(Strategy):
    """Relocation, growth to a cap, and SGLD position noise. State: scene_extent, cap_reached."""

    def __init__(self, config: MCMCStrategyConfig | None = None, generator: torch.Generator | None = None) -> None:
        self.config = config or MCMCStrategyConfig()
        self.generator = generator  # None: torch's global RNG (seeded and checkpointed by the trainer)
        self.binoms = ops.binomial_table(MAX_COPIES)  # [51, 51], computed once

    def initialize_state(self, scene_extent: float) -> dict:
        scene_extent = float(scene_extent)
        if not (scene_extent > 0 and math.isfinite(scene_extent)):
            raise ValueError(f"scene_extent must be a positive finite number, got {scene_extent}")
        return {"scene_extent": scene_extent, "cap_reached": False}

    def loss(self, gaussians: Gaussians, state: dict, step: int) -> torch.Tensor | None:
        cfg = self.config
        terms = []
        if cfg.opacity_reg > 0:
            terms.append(cfg.opacity_reg * torch.sigmoid(gaussians.logit_opacities).mean())
        if cfg.scale_reg > 0:
            terms.append(cfg.scale_reg * torch.exp(gaussians.log_scales).mean())
        if not terms or len(gaussians) == 0:
            return None
        return sum(terms[1:], terms[0])

    def step_post_backward(
        self,
        gaussians: Gaussians,
        optimizers: Optimizers,
        state: dict,
        step: int,
        info: RenderOutput | list[RenderOutput],
        lr_means: float,
    ) -> list[str]:
        cfg = self.config
        events: list[str] = []
        if cfg.refine_start < step < cfg.refine_stop and step % cfg.refine_every == 0:
            events += self.refine(gaussians, optimizers, state)
        if cfg.noise_lr > 0 and lr_means > 0 and len(gaussians):
            ops.inject_noise(gaussians, cfg.noise_lr * lr_means, k=NOISE_K, t=NOISE_T, generator=self.generator)
        return events

    @torch.no_grad()
    def refine(self, gaussians: Gaussians, optimizers: Optimizers, state: dict) -> list[str]:
        """Relocate the dead, then add up to growth_rate more (capped). Returns the events."""
        cfg = self.config
        dead = gaussians.opacities.detach() <= cfg.min_opacity
        n_relocated = ops.relocate(
            gaussians, optimizers, dead, self.binoms, cfg.min_opacity, generator=self.generator
        )
        n = len(gaussians)
        target = min(cfg.cap_max, max(n + 1, int(n * (1.0 + cfg.growth_rate))))
        n_added = ops.sample_add(
            gaussians, optimizers, max(0, target - n), self.binoms, cfg.min_opacity, generator=self.generator
        )
        events = [f"relocate {n_relocated}, add {n_added}"]
        if len(gaussians) >= cfg.cap_max and not state.get("cap_reached", False):
            state["cap_reached"] = True
            events.append(f"budget reached: {len(gaussians)} Gaussians (cap_max)")
        return events

"""Adaptive density control of 3DGS (Kerbl et al. 2023): clone, split, prune, opacity reset.

Every `refine_every` steps between `refine_start` and `refine_stop`:

1. Grow where the view-space positional gradient is large. The statistic is, per Gaussian,
   the average over the views that saw it of ‖∂L/∂μ'‖, with μ' the projected centre in NDC
   (the pixel-space gradient times (W/2, H/2), as the 3DGS rasterizer reports it). Where the
   average exceeds `grad_threshold`: small Gaussians (max scale <= grow_scale3d · extent) are
   cloned (under-reconstruction), large ones are split in two, each 1.6x smaller, sampled from
   the parent (over-reconstruction).
2. Prune nearly transparent Gaussians (opacity < prune_opacity) and, after the first opacity
   reset, those too large in world space (max scale > prune_scale3d · extent) and, when the
   screen-size rules are on, too large on screen.
3. Reset the statistics.

Every `reset_every` steps (before `refine_stop`) every opacity is clamped to at most
2 · prune_opacity (= 0.01 at the default, the value 3DGS resets to) so that floaters must
earn their opacity back or be pruned.

Screen-size rules (`refine_scale2d_stop`): the original 3DGS code meant to prune Gaussians
wider than 20 px on screen, but its per-Gaussian max-radius buffer is zeroed when Gaussians
are added, *before* the prune test, so the rule never fires. Here the max radius (a fraction
of max(W, H)) is tracked over each refine interval and carried through clone/split (clones
and split children inherit their parent's value: it is the only observation there is), so
the rules do fire when enabled: a Gaussian seen wider than grow_scale2d is split, one seen
wider than prune_scale2d (after the first reset) is removed, children included. They are off
by default because published 3DGS quality was reached without them (the rule was dead code),
and a fixed on-screen size prunes legitimate large background Gaussians seen from close by.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ...gaussians import Gaussians
from ...render.settings import RenderOutput
from .. import ops
from .base import MIN_RESET_EVERY, Optimizers, Strategy, check_state_size, refine_floor, scale_iterations

GRAD_THRESHOLD = 2e-4  # 3DGS densify_grad_threshold, on the average NDC gradient norm
ABSGRAD_THRESHOLD = 8e-4  # AbsGS: the summed absolute gradient is larger, so is its threshold


@dataclass
class DefaultStrategyConfig:
    """Adaptive density control settings; defaults are those of 3DGS.

    Steps count completed iterations (see strategy/base.py)."""

    grad_threshold: Optional[float] = None
    """Grow a Gaussian when its average view-space positional gradient norm (NDC units) over
    the last refine interval exceeds this. None: 2e-4 (3DGS), or 8e-4 when `absgrad` is on,
    because the absolute gradient (a sum of |per-pixel gradients|, no cancellation) is larger."""
    absgrad: bool = False
    """Use the absolute gradient of AbsGS (Ye et al. 2024) instead of the gradient: it also
    grows Gaussians whose per-pixel gradients cancel (large blurry ones). Needs rendering with
    RenderSettings(absgrad=True), which fills `out.means2d.absgrad`."""
    pixel_weighted: bool = False
    """Average the gradient over views weighted by the pixels the Gaussian covers in each (its
    screen area, pi r^2 at the 3-sigma radius, at most the image), as Pixel-GS (Zhang et al.
    2024) does, instead of one vote per view: a Gaussian that looks large in a few close-up
    views and small in many wide ones grows from the close-ups' gradients."""
    refine_start: int = 500
    """Grow/prune only at steps > refine_start (statistics are gathered from step 0)."""
    refine_stop: int = 15_000
    """No statistics, growth, pruning or opacity reset from this step on."""
    refine_every: int = 100
    """Grow and prune every this many steps."""
    reset_every: int = 3000
    """Clamp all opacities to 2 · prune_opacity every this many steps (before refine_stop)."""
    prune_opacity: float = 0.005
    """Prune Gaussians with opacity below this at every refine."""
    grow_scale3d: float = 0.01
    """Growth candidates whose largest scale is <= grow_scale3d · scene extent are cloned,
    larger ones are split."""
    prune_scale3d: float = 0.1
    """After the first opacity reset, prune Gaussians whose largest scale exceeds
    prune_scale3d · scene extent."""
    grow_scale2d: float = 0.05
    """Screen-size rule (only while step < refine_scale2d_stop): also split Gaussians whose
    largest 3-sigma radius over the refine interval exceeded this fraction of max(W, H)."""
    prune_scale2d: float = 0.15
    """Screen-size rule (only while step < refine_scale2d_stop, after the first reset): prune
    Gaussians whose largest radius exceeded this fraction of max(W, H)."""
    refine_scale2d_stop: int = 0
    """Apply the screen-size rules before this step; 0 turns them off (default, see the module
    docstring for why)."""
    max_gaussians: Optional[int] = None
    """Budget: never grow beyond this many Gaussians. When growth would exceed it, only the
    candidates with the largest gradient statistic grow and a "budget reached" event is reported;
    None = no limit."""

    def __post_init__(self) -> None:
        if self.grad_threshold is not None and not self.grad_threshold > 0:
            raise ValueError(f"grad_threshold must be positive (or None), got {self.grad_threshold}")
        for name in ("refine_every", "reset_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("refine_start", "refine_stop", "refine_scale2d_stop"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.prune_opacity < 0.5:
            raise ValueError(f"prune_opacity must be in (0, 0.5), got {self.prune_opacity}")
        for name in ("grow_scale3d", "prune_scale3d", "grow_scale2d", "prune_scale2d"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_gaussians is not None and self.max_gaussians < 1:
            raise ValueError(f"max_gaussians must be >= 1 or None, got {self.max_gaussians}")

    @property
    def effective_grad_threshold(self) -> float:
        """grad_threshold, or its default for the chosen gradient (2e-4, absgrad 8e-4)."""
        if self.grad_threshold is not None:
            return self.grad_threshold
        return ABSGRAD_THRESHOLD if self.absgrad else GRAD_THRESHOLD

    @property
    def reset_value(self) -> float:
        """The opacity ceiling of an opacity reset: 2 · prune_opacity (0.01 at the defaults)."""
        return 2.0 * self.prune_opacity

    def scaled(self, factor: float) -> "DefaultStrategyConfig":
        """A copy with every iteration-count field scaled by `factor` (>= 1 each; 0 stays 0).

        A compressed schedule (factor < 1) keeps floors: refinement at most every
        MIN_REFINE_EVERY steps, and opacity resets at least MIN_RESET_EVERY apart, because
        recovering from a reset takes a fixed number of Adam steps (the logit climbs back from
        -4.6 at lr 2.5e-2), not a fraction of the run.
        """
        fields = ("refine_start", "refine_stop", "refine_every", "reset_every", "refine_scale2d_stop")
        out = refine_floor(scale_iterations(self, fields, factor), self, factor)
        if factor < 1.0:
            out = dataclasses.replace(out, reset_every=max(out.reset_every, min(self.reset_every, MIN_RESET_EVERY)))
        return out

    @property
    def needs_absgrad(self) -> bool:
        """Whether renders must accumulate |dL/dmeans2d| (RenderSettings.absgrad)."""
        return self.absgrad


class DefaultStrategy(Strategy):
    """3DGS adaptive density control; state holds the gradient statistics (see module doc).

    State keys: scene_extent (float); scene_centre ([3] or None: see _reach); grad2d [N] (sum of gradient norms), count [N] (views in
    which the Gaussian was visible; with pixel_weighted, the pixels it covered in them), max_radii [N] (largest radius / max(W, H)) — all None until
    the first statistics update, reset to zeros after each refine.
    """

    def __init__(self, config: DefaultStrategyConfig | None = None) -> None:
        self.config = config or DefaultStrategyConfig()
        # Set by a distributed run: reduce_statistics(sums, maxima) all-reduces in place.
        self.reduce_statistics: Optional[Callable[[list[torch.Tensor], list[torch.Tensor]], None]] = None

    def initialize_state(self, scene_extent: float) -> dict:
        scene_extent = float(scene_extent)
        if not (scene_extent > 0 and math.isfinite(scene_extent)):
            raise ValueError(f"scene_extent must be a positive finite number, got {scene_extent}")
        return {"scene_extent": scene_extent, "scene_centre": None, "grad2d": None, "count": None, "max_radii": None}

    # ---- statistics ---------------------------------------------------------------------

    def update_statistics(self, gaussians: Gaussians, state: dict, info: RenderOutput | list[RenderOutput]) -> None:
        """Accumulate the NDC positional gradient norm, visibility count and max radius.

        `info` is the render of one view, or the renders of a batch of views whose losses were
        averaged: each view's gradient is then scaled back by the batch size. The increments
        of this step go through `self.reduce_statistics` when set (a distributed run sums them,
        and takes the max of the radii, across processes) before they are added to the state.
        """
        infos = info if isinstance(info, list) else [info]
        n = len(gaussians)
        for key in ("grad2d", "count", "max_radii"):
            if state[key] is None:
                state[key] = torch.zeros(n, device=gaussians.device)
            check_state_size(state, key, n)
        grad2d, count, radii = state["grad2d"].new_zeros(n), state["count"].new_zeros(n), state["max_radii"].new_zeros(n)
        for one in infos:
            self._view_statistics(gaussians, one, float(len(infos)), grad2d, count, radii)
        if self.reduce_statistics is not None:
            self.reduce_statistics([grad2d, count], [radii])
        state["grad2d"] += grad2d
        state["count"] += count
        torch.maximum(state["max_radii"], radii, out=state["max_radii"])

    def _view_statistics(self, gaussians, info: RenderOutput, scale: float, grad2d, count, max_radii) -> None:
        """Add one view's gradient norms and counts to grad2d / count, its radii into max_radii."""
        n = len(gaussians)
        visible = info.visible  # [N] bool
        if visible.shape != (n,):
            raise ValueError(f"render output is for {visible.shape[0]} Gaussians, but there are {n}")
        if self.config.absgrad:
            grad = getattr(info.means2d, "absgrad", None)
            if grad is None and visible.any():
                raise RuntimeError(
                    "DefaultStrategyConfig.absgrad=True but out.means2d.absgrad is missing: render with "
                    "RenderSettings(absgrad=True) on a backend that supports it"
                )
        else:
            grad = info.means2d.grad
            if grad is None and visible.any():
                raise RuntimeError(
                    "out.means2d has no gradient: call loss.backward() before step_post_backward, and "
                    "render with gaussians.means requiring grad"
                )
        if grad is None:
            return  # nothing was visible: nothing to accumulate
        height, width = info.image.shape[:2]
        ndc = torch.tensor([0.5 * width * scale, 0.5 * height * scale], device=grad.device, dtype=grad.dtype)
        # Dense updates weighted by the mask: masked gather/scatter costs more than the
        # arithmetic at 100k+ Gaussians.
        weight = visible.to(grad2d.dtype)  # [N]
        norms = (grad.detach() * ndc).norm(dim=-1)  # [N]
        radii = info.radii.to(max_radii.dtype) * weight  # [N] pixels
        if self.config.pixel_weighted:  # pixels covered, >= 1 where visible (the average divides by >= 1)
            weight = (math.pi * radii * radii).clamp(max=float(width * height)).clamp_min(1.0) * weight
        grad2d += norms.to(grad2d.dtype) * weight
        count += weight
        radii = radii / float(max(width, height))  # [N]
        torch.maximum(max_radii, radii, out=max_radii)

    @staticmethod
    def _reach(gaussians: Gaussians, state: dict) -> torch.Tensor | float:
        """The length the world-size prune rule compares scales with: the scene extent, or,
        for a Gaussian farther than that from the scene centre (state["scene_centre"], when
        set), its distance: a far background Gaussian may be as large as it looks small."""
        extent, centre = state["scene_extent"], state.get("scene_centre")
        if centre is None:
            return extent
        dist = (gaussians.means.detach() - centre.to(gaussians.means)).norm(dim=-1)  # [N]
        return dist.clamp_min(extent)

    # ---- hooks --------------------------------------------------------------------------

    def step_post_backward(
        self,
        gaussians: Gaussians,
        optimizers: Optimizers,
        state: dict,
        step: int,
        info: RenderOutput | list[RenderOutput],
        lr_means: float = 0.0,
    ) -> list[str]:
        cfg = self.config
        if step >= cfg.refine_stop:
            return []
        self.update_statistics(gaussians, state, info)
        events: list[str] = []
        if step > cfg.refine_start and step % cfg.refine_every == 0:
            events += self.refine(gaussians, optimizers, state, step)
        if step > 0 and step % cfg.reset_every == 0:
            ops.reset_opacity(gaussians, optimizers, cfg.reset_value)
            events.append("opacity reset")
        return events

    # ---- refinement ---------------------------------------------------------------------

    @torch.no_grad()
    def refine(self, gaussians: Gaussians, optimizers: Optimizers, state: dict, step: int) -> list[str]:
        """Clone, split, then prune, from the statistics in `state`; then reset them."""
        cfg = self.config
        n = len(gaussians)
        device = gaussians.device
        extent = state["scene_extent"]
        zeros = torch.zeros(n, device=device)
        grad2d = zeros if state["grad2d"] is None else state["grad2d"]
        count = zeros if state["count"] is None else state["count"]
        radii = zeros if state["max_radii"] is None else state["max_radii"]
        use_2d = step < cfg.refine_scale2d_stop
        events: list[str] = []

        # 1. growth candidates
        avg = grad2d / count.clamp_min(1.0)  # [N]
        high = avg > cfg.effective_grad_threshold
        small = torch.exp(gaussians.log_scales.detach()).amax(-1) <= cfg.grow_scale3d * extent
        clone = high & small
        split = high & ~small
        if use_2d:
            split |= radii > cfg.grow_scale2d

        if cfg.max_gaussians is not None:  # each clone or split (in two) adds one Gaussian
            room = max(0, cfg.max_gaussians - n)
            candidates = (clone | split).nonzero(as_tuple=True)[0]
            if len(candidates) > room:
                order = torch.argsort(avg[candidates], descending=True, stable=True)
                chosen = torch.zeros(n, dtype=torch.bool, device=device)
                chosen[candidates[order[:room]]] = True
                clone &= chosen
                split &= chosen
                events.append(
                    f"budget reached: {cfg.max_gaussians} Gaussians "
                    f"({len(candidates) - room} of {len(candidates)} growth candidates skipped)"
                )

        # 2. clone, then split (clones are never split in the same refine)
        n_clone, n_split = int(clone.sum()), int(split.sum())
        if n_clone:
            radii = radii[ops.duplicate(gaussians, optimizers, clone)]  # copies inherit
            split = torch.cat([split, split.new_zeros(n_clone)])
        if n_split:
            radii = radii[ops.split(gaussians, optimizers, split, n=2)]  # children inherit

        # 3. prune
        prune = gaussians.opacities.detach() < cfg.prune_opacity
        if step > cfg.reset_every:
            prune |= torch.exp(gaussians.log_scales.detach()).amax(-1) > cfg.prune_scale3d * self._reach(gaussians, state)
            if use_2d:
                prune |= radii > cfg.prune_scale2d
        n_prune = int(prune.sum())
        if n_prune:
            ops.remove(gaussians, optimizers, prune)

        # 4. fresh statistics for the new set
        m = len(gaussians)
        for key in ("grad2d", "count", "max_radii"):
            state[key] = torch.zeros(m, device=device)
        events.insert(0, f"clone {n_clone}, split {n_split}, prune {n_prune}")
        return events


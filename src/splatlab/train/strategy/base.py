"""The densification-strategy interface: an object beside the parameters, not inside them.

A strategy decides when and how the set of Gaussians changes (clone / split / prune / opacity
reset, or MCMC relocation). It owns no parameters and no optimizer: it receives them at each
hook and changes them through `splatlab.train.ops`, which keeps every Adam's state aligned.
Everything it must remember between steps lives in a plain dict returned by
`initialize_state` (tensors, ints, floats, bools, None), so a checkpoint saves it with
`torch.save` and training resumes exactly.

The trainer calls, every step:

    out = rasterize(gaussians, camera, settings)
    strategy.step_pre_backward(gaussians, optimizers, state, step, out)
    loss = photometric(out.image, target) + (strategy.loss(gaussians, state, step) or 0)
    loss.backward()
    for opt in optimizers.values(): opt.step()
    events = strategy.step_post_backward(gaussians, optimizers, state, step, out, lr_means)
    for opt in optimizers.values(): opt.zero_grad()

`step` in `step_post_backward` counts the iterations completed, this one included (1 after
the first), as 3DGS counts iterations: with refine_every = 100 the set changes after
iterations 600, 700, ... and opacities reset after 3000, 6000, .... The strategies here do
not use `step` in the other hooks. Densification happens in `step_post_backward`, after the
optimizer step (as gsplat does), so statistics are read there from `out.means2d.grad`
before any change.
"""

from __future__ import annotations

import abc

import torch

from ...gaussians import Gaussians
from ...render.settings import RenderOutput
from .. import ops

Optimizers = dict[str, torch.optim.Optimizer]


class Strategy(abc.ABC):
    """Base class of densification strategies; see the module docstring for the call order."""

    @abc.abstractmethod
    def initialize_state(self, scene_extent: float) -> dict:
        """A fresh state dict for a scene of the given extent (radius of the camera/point bounds)."""

    def loss(self, gaussians: Gaussians, state: dict, step: int) -> torch.Tensor | None:
        """Regularisers to add to the loss before backward; None when the strategy has none."""
        return None

    def step_pre_backward(
        self, gaussians: Gaussians, optimizers: Optimizers, state: dict, step: int, info: RenderOutput
    ) -> None:
        """Before backward: make sure the screen-space positions keep their gradient."""
        means2d = info.means2d
        if means2d.requires_grad and not means2d.is_leaf:
            means2d.retain_grad()

    @abc.abstractmethod
    def step_post_backward(
        self,
        gaussians: Gaussians,
        optimizers: Optimizers,
        state: dict,
        step: int,
        info: RenderOutput,
        lr_means: float,
    ) -> list[str]:
        """After the optimizer step: update statistics, change the set of Gaussians.

        Returns human-readable events ("clone 120, split 40, prune 12", "opacity reset", ...),
        empty when nothing happened.
        """

    def check_sanity(self, gaussians: Gaussians, optimizers: Optimizers) -> None:
        """Raise ValueError if the parameters and optimizers cannot be used by this strategy.

        Every field must have its optimizer (the strategy changes all of them together), each
        holding exactly that Parameter, with per-row state shaped like it.
        """
        missing = [name for name in gaussians.params() if name not in optimizers]
        if missing:
            raise ValueError(f"no optimizer for Gaussians field(s) {missing}: a strategy needs one per field")
        for name, value in gaussians.params().items():
            if not isinstance(value, torch.nn.Parameter):
                raise ValueError(
                    f"gaussians.{name} must be a torch.nn.Parameter during training, got {type(value).__name__}"
                )
        ops.check_optimizer_sync(gaussians, optimizers)


def check_state_size(state: dict, key: str, n: int) -> None:
    """Raise RuntimeError if the per-Gaussian statistic state[key] does not have n rows."""
    value = state.get(key)
    if value is not None and value.shape[0] != n:
        raise RuntimeError(
            f"strategy state {key!r} has {value.shape[0]} rows but there are {n} Gaussians: the set of "
            "Gaussians was changed outside the strategy, or the state belongs to another checkpoint"
        )


MIN_REFINE_EVERY = 20  # a compressed schedule refines at most this often ...
MIN_RESET_EVERY = 1000  # ... and resets opacities at most this often


def scale_iterations(config, names: tuple[str, ...], factor: float):
    """A copy of dataclass `config` with the iteration-count fields `names` scaled by `factor`.

    Each becomes max(1, round(value · factor)); a field that is 0 stays 0 (0 means "from the
    start" or "off" for these fields, and must keep that meaning).
    """
    import dataclasses

    if not (factor > 0 and factor < float("inf")):
        raise ValueError(f"scaled: factor must be a positive finite number, got {factor}")
    changes = {}
    for name in names:
        value = getattr(config, name)
        changes[name] = 0 if value == 0 else max(1, int(round(value * factor)))
    return dataclasses.replace(config, **changes)


def refine_floor(scaled, base, factor: float):
    """When `factor` < 1 compresses a schedule, keep refinement from running more often than
    every MIN_REFINE_EVERY steps (it would grow from the gradient statistics of a handful of
    views), and start it no earlier than one interval in."""
    import dataclasses

    if factor >= 1.0:
        return scaled
    every = max(scaled.refine_every, min(base.refine_every, MIN_REFINE_EVERY))
    return dataclasses.replace(scaled, refine_every=every, refine_start=max(scaled.refine_start, every))

"""Training state: everything a run needs to continue exactly where it stopped.

`TrainState` holds the parameters, their Adam states, the strategy's state, the step, the
view order and the random number generators, with `state_dict()` / `load_state_dict()`.
A checkpoint is that dict, written atomically (train/outputs.py). Loading it and stepping on
gives bit-for-bit the same parameters as a run that never stopped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..gaussians import Gaussians
from .config import OptimConfig
from .optim import as_parameters, make_optimizers


@dataclass
class ViewSampler:
    """Training views in random order without replacement, epoch after epoch (3DGS)."""

    num_views: int
    generator: torch.Generator
    queue: list[int] = field(default_factory=list)

    @classmethod
    def seeded(cls, num_views: int, seed: int) -> "ViewSampler":
        return cls(num_views, torch.Generator().manual_seed(seed))

    def next(self) -> int:
        if not self.queue:  # a fresh random order
            self.queue = torch.randperm(self.num_views, generator=self.generator).tolist()
        return self.queue.pop()

    def take(self, n: int) -> list[int]:
        return [self.next() for _ in range(n)]

    def state_dict(self) -> dict:
        return {"num_views": self.num_views, "queue": list(self.queue), "generator": self.generator.get_state()}

    def load_state_dict(self, d: dict) -> None:
        if d["num_views"] != self.num_views:
            raise ValueError(
                f"the checkpoint was trained on {d['num_views']} views, the dataset now has {self.num_views}"
            )
        self.queue = list(d["queue"])
        self.generator.set_state(d["generator"])


def global_rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_global_rng_state(d: dict) -> None:
    torch.set_rng_state(d["torch"])
    np.random.set_state(d["numpy"])
    random.setstate(d["python"])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@dataclass
class TrainState:
    """The model being trained and everything stepping it depends on."""

    params: Gaussians  # fields are leaf nn.Parameters
    optimizers: dict[str, torch.optim.Optimizer]
    strategy_state: dict
    sampler: ViewSampler
    step: int = 0  # iterations completed
    extras: dict = field(default_factory=dict)  # name -> module with state_dict (e.g. exposure)

    @classmethod
    def create(
        cls, gaussians: Gaussians, optim: OptimConfig, extent: float, strategy_state: dict,
        num_views: int, seed: int, device: torch.device,
    ) -> "TrainState":  # fmt: skip
        params = as_parameters(gaussians.to(device))
        return cls(params, make_optimizers(params, optim, extent), strategy_state, ViewSampler.seeded(num_views, seed))

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "params": {k: v.detach().cpu() for k, v in self.params.params().items()},
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "strategy_state": self.strategy_state,
            "sampler": self.sampler.state_dict(),
            "extras": {k: v.state_dict() for k, v in self.extras.items()},
            "rng": global_rng_state(),
        }

    def load_state_dict(self, d: dict, optim: OptimConfig, extent: float, device: torch.device) -> None:
        """Replace everything with the checkpoint's (parameters of its size, their Adam moments)."""
        self.step = int(d["step"])
        self.params = as_parameters(Gaussians(**d["params"]).to(device))
        self.optimizers = make_optimizers(self.params, optim, extent)
        for name, opt in self.optimizers.items():
            opt.load_state_dict(d["optimizers"][name])
        self.strategy_state = _to_device(d["strategy_state"], device)
        self.sampler.load_state_dict(d["sampler"])
        for name, module in self.extras.items():
            module.load_state_dict(d["extras"][name])
        set_global_rng_state(d["rng"])

    def first_non_finite(self) -> Optional[str]:
        """The name of a parameter holding NaN/Inf, or None (one reduction per parameter)."""
        for name, value in self.params.params().items():
            if not torch.isfinite(value.detach().sum()) and not torch.isfinite(value).all():
                return name
        return None


def _to_device(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj

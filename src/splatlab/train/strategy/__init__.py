"""Densification strategies: objects beside the parameters that grow, prune and move Gaussians.

- `DefaultStrategy` — 3DGS adaptive density control (clone / split / prune / opacity reset).
- `MCMCStrategy` — 3DGS as MCMC (relocation, growth to a cap, position noise, regularisers).

`make_strategy("default" | "mcmc" | "absgrad", **overrides)` builds one by name, with config
fields overridden by keyword.
"""

from __future__ import annotations

import dataclasses

from .base import Strategy
from .default import DefaultStrategy, DefaultStrategyConfig
from .mcmc import MCMCStrategy, MCMCStrategyConfig

__all__ = [
    "Strategy",
    "DefaultStrategy",
    "DefaultStrategyConfig",
    "MCMCStrategy",
    "MCMCStrategyConfig",
    "make_strategy",
    "STRATEGY_NAMES",
]

# name -> (strategy class, config class, preset overrides)
_PRESETS = {
    "default": (DefaultStrategy, DefaultStrategyConfig, {}),
    "absgrad": (DefaultStrategy, DefaultStrategyConfig, {"absgrad": True}),  # AbsGS growth
    "mcmc": (MCMCStrategy, MCMCStrategyConfig, {}),
}
_ALIASES = {"adc": "default", "3dgs": "default"}
STRATEGY_NAMES = tuple(_PRESETS)


def make_strategy(name: str, **overrides) -> Strategy:
    """A strategy by name ("default", "absgrad", "mcmc"; aliases "adc", "3dgs"), config fields
    overridden by keyword: make_strategy("mcmc", cap_max=300_000)."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _PRESETS:
        raise ValueError(f"unknown strategy {name!r}: expected one of {', '.join(STRATEGY_NAMES)}")
    strategy_cls, config_cls, preset = _PRESETS[key]
    valid = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for strategy {key!r}: valid options are {', '.join(sorted(valid))}"
        )
    return strategy_cls(config_cls(**{**preset, **overrides}))

"""Typed training configuration, with the 3DGS paper's defaults.

One dataclass per concern; the CLI is generated from these, and `config.json` in every output
folder is written from them (and read back with `TrainConfig.from_dict`, never `eval`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Optional

import tyro

from ..render.settings import Backend
from .init import InitRegion
from .strategy import DefaultStrategyConfig, MCMCStrategyConfig


@dataclass
class DataConfig:
    """Which data to train on and how to load it."""

    path: tyro.conf.Positional[Optional[Path]] = None
    """Dataset folder: COLMAP, Blender transforms_*.json, nerfstudio transforms.json, or photos."""
    downscale: int = 1
    """Downscale images by 1, 2, 4 or 8 (uses images_N/ folders when present)."""
    test_every: int = 8
    """COLMAP/photos: every N-th image (sorted by name) is held out for testing; 0 = none."""
    eval_split: str = "test"
    """Blender: which transforms_<split>.json to evaluate on (falls back to val)."""
    images_on_device: bool = False
    """Keep all images on the training device (GPU) instead of copying one per step."""


@dataclass
class OptimConfig:
    """Adam learning rates per parameter (3DGS defaults)."""

    means_lr: float = 1.6e-4
    """Initial position learning rate, multiplied by the scene extent."""
    means_lr_final: float = 1.6e-6
    """Final position learning rate (x extent); exponential decay over the run."""
    sh0_lr: float = 2.5e-3
    """Learning rate of the DC colour coefficient."""
    shN_lr: float = 2.5e-3 / 20
    """Learning rate of the higher SH coefficients (the paper's 'rest / 20')."""
    opacity_lr: float = 2.5e-2
    """Opacity learning rate (newer 3DGS code: 2.5e-2; the paper's release: 5e-2)."""
    scales_lr: float = 5e-3
    """Log-scale learning rate."""
    quats_lr: float = 1e-3
    """Quaternion learning rate."""
    eps: float = 1e-15
    """Adam epsilon (3DGS uses 1e-15)."""


@dataclass
class TrainConfig:
    """Everything that defines a training run."""

    data: Annotated[DataConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=DataConfig)
    """The dataset (its options appear without a prefix on the command line: --downscale)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    output: Optional[Path] = None
    """Output folder; default outputs/<dataset name>."""
    iterations: int = 30_000
    """Optimisation steps (one camera per step)."""
    max_minutes: Optional[float] = None
    """Wall-clock budget: the schedule (lr decay, densification, SH ramp) is scaled to the
    iterations that fit, estimated from the measured speed, and the run ends cleanly."""
    backend: Backend = "auto"
    """Renderer backend (auto = cpu kernels on CPU)."""
    device: str = "cpu"
    """Torch device for parameters and rendering."""
    num_threads: Optional[int] = None
    """CPU threads for rendering and torch; None = all cores."""
    strategy: Literal["default", "mcmc"] = "default"
    """Densification: 3DGS adaptive density control, or 3DGS-MCMC relocation."""
    default_strategy: DefaultStrategyConfig = field(default_factory=DefaultStrategyConfig)
    mcmc_strategy: MCMCStrategyConfig = field(default_factory=MCMCStrategyConfig)
    sh_degree: int = 3
    """Largest SH degree."""
    sh_degree_interval: int = 1000
    """Raise the active SH degree by one every this many iterations."""
    ssim_lambda: float = 0.2
    """Loss = (1 - lambda) L1 + lambda (1 - SSIM)."""
    random_background: bool = False
    """Render over a random colour each step (discourages using the background as colour)."""
    antialiased: bool = False
    """Mip-Splatting's 2D filter with opacity compensation."""
    init_opacity: float = 0.1
    """Opacity of the initial Gaussians."""
    init_region: InitRegion = "auto"
    """Where the initial Gaussians come from (train/init.py): "points" = the dataset's point
    cloud (SfM, or the loader's random cube as 3DGS does for Blender); "hull" = inside the
    visual hull of the training alpha masks; "frusta" = where most training views look;
    "box" = anywhere in the box around the cameras. "auto" = hull when the dataset's points are
    random and the images have alpha, else the points (frusta when there are none)."""
    init_num_random: int = 100_000
    """How many Gaussians "hull", "frusta" and "box" place."""
    seed: int = 0
    """Seed for camera order, initialisation and densification randomness."""
    save_at: tuple[int, ...] = (7_000, 30_000)
    """Iterations at which to write the model as .ply (the last one is always written)."""
    checkpoint_every: int = 1_000
    """Write a resumable checkpoint every this many iterations (and at the end)."""
    eval_at: tuple[int, ...] = (7_000, 30_000)
    """Iterations at which to evaluate on the test views (the end is always evaluated)."""
    save_renders: bool = True
    """Save test renders next to ground truth as PNG at the final evaluation."""
    progress: bool = True
    """Show a progress bar."""

    def to_dict(self) -> dict:
        def convert(v):
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, tuple):
                return list(v)
            return v

        return dataclasses.asdict(self, dict_factory=lambda items: {k: convert(v) for k, v in items})

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Inverse of to_dict; unknown keys are an error that names them."""
        return _from_dict(cls, d)


def _from_dict(cls, d: dict):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    kwargs = {}
    for name, value in d.items():
        default = getattr(cls(), name) if name in known else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            kwargs[name] = _from_dict(type(default), value)
        elif isinstance(default, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
        elif name in ("path", "output") and value is not None:
            kwargs[name] = Path(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)

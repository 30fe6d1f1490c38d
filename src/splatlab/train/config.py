"""Typed training configuration, with the 3DGS paper's defaults.

One dataclass per concern; the CLI is generated from these, and `config.json` in every output
folder is written from them (and read back with `TrainConfig.from_dict`, never `eval`).

    TrainConfig
      data      DataConfig       which dataset, how to load it
      optim     OptimConfig      Adam learning rates
      strategy  DefaultStrategyConfig | MCMCStrategyConfig   (its type picks the strategy)
      render    RenderSettings   backend, threads, anti-aliasing (per-step fields set by the run)
      ...       the schedule, outputs and the time budget
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import tyro

from ..render.settings import RenderSettings
from .exposure import ExposureConfig
from .init import InitRegion
from .pose import PoseConfig
from .strategy import DefaultStrategyConfig, MCMCStrategyConfig


MaskMode = Literal["auto", "object", "ignore", "off"]
IntrinsicsMode = Literal["auto", "as-given", "per-photo"]


class ConfigError(ValueError):
    """A setting that cannot work (the CLI exits 2 with it)."""


@dataclass
class DataConfig:
    """Which data to train on and how to load it."""

    path: tyro.conf.Positional[Optional[Path]] = None
    """Dataset folder: COLMAP, Blender transforms_*.json, nerfstudio transforms.json, or photos."""
    downscale: Optional[int] = None
    """Downscale images by 1, 2, 4 or 8 (uses images_N/ folders when present). None = chosen
    from the image size, the device and the budget (train/auto.py), and logged."""
    masks: MaskMode = "auto"
    """What the dataset's masks (masks/) mean. "object": white is the subject; outside it the
    render is trained to be empty (over a random background, as 3DGS trains RGBA images).
    "ignore": black pixels are not trained (people, reflections). Either way the progress PSNR
    and the evaluation count the white pixels. "off": masks are not used, every pixel counts.
    "auto": "object" when the masks cover less than half of the images, else "ignore"."""
    mask_background: Literal["surround", "render"] = "surround"
    """Object masks: what the subject is rendered over. "surround": a colour learned with the
    model, starting from the median colour of the photos just outside their masks (a mask
    drawn loosely takes some of the surroundings in, which black gets wrong), used inside the
    masks while training and in the run's evaluation and renders (train/surround.py).
    "render": --render.background (black unless given)."""
    test_every: int = 8
    """COLMAP/photos: every N-th image (sorted by name) is held out for testing; 0 = none."""
    eval_split: str = "test"
    """Blender: which transforms_<split>.json to evaluate on (falls back to val)."""
    images_on_device: bool = False
    """Keep all images on the training device (GPU) instead of copying one per step."""
    triangulate: bool = True
    """nerfstudio/instant-ngp data with poses but no point cloud: start from points triangulated
    from the known poses (pycolmap; seconds, cached) instead of random points."""
    intrinsics: IntrinsicsMode = "auto"
    """COLMAP models. "auto": when photos from different cameras (EXIF make, model, focal length)
    share one camera in the model, a photo collection, each photo's focal length and distortion
    are refined by bundle adjustment (seconds, cached; data/intrinsics.py), logged. "per-photo":
    whenever photos share a camera. "as-given": the model's cameras."""

    def validate(self) -> None:
        if self.downscale is not None and self.downscale < 1:
            raise ConfigError(f"--downscale must be >= 1, got {self.downscale}")
        if self.test_every < 0:
            raise ConfigError(f"--test-every must be >= 0, got {self.test_every}")


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

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"--optim.{f.name.replace('_', '-')} must be a finite number >= 0, got {value}")


@dataclass
class DepthConfig:
    """Depth regularisation (3DGS train.py's depth_l1_weight): L1 between the rendered
    inverse depth and a prior: the dataset's depth maps (depths/, as 3DGS lays them out), or
    else the SfM points each view observed."""

    weight: float = 0.0
    """Initial weight of the depth term (3DGS: 1.0 when depth maps are given); 0 = off."""
    weight_final: float = 0.01
    """Final weight (3DGS: 0.01); exponential decay over the run."""
    sparse: bool = True
    """Without depth maps, use the depths of the SfM points each view observed."""

    def validate(self) -> None:
        if not (math.isfinite(self.weight) and self.weight >= 0 and math.isfinite(self.weight_final)
                and self.weight_final >= 0):
            raise ConfigError(f"--depth.weight and --depth.weight-final must be >= 0, got {self.weight}, {self.weight_final}")


StrategyConfig = Union[
    Annotated[DefaultStrategyConfig, tyro.conf.subcommand("default")],
    Annotated[MCMCStrategyConfig, tyro.conf.subcommand("mcmc")],
]
STRATEGY_KINDS = {DefaultStrategyConfig: "default", MCMCStrategyConfig: "mcmc"}


@dataclass
class TrainConfig:
    """Everything that defines a training run."""

    data: Annotated[DataConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=DataConfig)
    """The dataset (its options appear without a prefix on the command line: --downscale)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    render: RenderSettings = field(default_factory=RenderSettings)
    """How training renders (backend, threads, anti-aliasing). The run sets the background (the
    dataset's when it has one), the SH degree of the ramp, absgrad and depth itself."""
    output: Optional[Path] = None
    """Output folder; default outputs/<dataset name>."""
    iterations: int = 30_000
    """Optimisation steps of one view each. A step of B views (processes x batch size) counts
    as B of them: the run takes iterations / B steps, its schedule scaled to match."""
    batch_size: int = 1
    """Views per step in each process; their losses are averaged. Learning rates follow --batch-rule."""
    batch_rule: Literal["gsplat", "grendel"] = "gsplat"
    """Adam for a batch of B views: "gsplat": lr x sqrt(B), betas 1 - B(1 - beta), eps / sqrt(B);
    "grendel": lr x sqrt(B), betas beta^B (Zhao et al. 2024). B = 1: plain 3DGS."""
    max_minutes: Optional[float] = 15.0
    """Wall-clock budget in minutes (training, saving and the final evaluation): the schedule
    (lr decay, densification, SH ramp) is scaled to the iterations that fit, estimated from the
    measured speed, and the run ends cleanly. None = no budget: run all --iterations."""
    device: str = "cpu"
    """Torch device for parameters and rendering."""
    sh_degree: int = 3
    """Largest SH degree."""
    sh_degree_interval: int = 1000
    """Raise the active SH degree by one every this many iterations."""
    ssim_lambda: float = 0.2
    """Loss = (1 - lambda) L1 + lambda (1 - SSIM)."""
    coarse_to_fine: Optional[float] = None
    """Coarse-to-fine resolution (after DashGaussian, Chen et al. 2025): the first third of this
    fraction of the schedule trains at 1/4 of the resolution, the second third at 1/2, the rest
    at full; early steps, which only fit coarse structure, cost 4-16x less. 0 = off. None =
    chosen from the budget (train/auto.py): 0.5 with --max-minutes 10 or less, else off."""
    exposure: ExposureConfig = field(default_factory=ExposureConfig)
    """Per-image exposure compensation (train/exposure.py)."""
    depth: DepthConfig = field(default_factory=DepthConfig)
    """Depth regularisation against inverse-depth maps or SfM points (data/depths.py)."""
    pose: PoseConfig = field(default_factory=PoseConfig)
    """Per-photo camera pose refinement (train/pose.py)."""
    smoothing_3d: bool = False
    """Mip-Splatting's 3D smoothing filter (train/smoothing.py): no Gaussian finer than the
    training photos resolve it (0.2 px^2 at the closest training camera that sees it), so that
    views closer than the photos (zoom-in, telephoto) do not break it up; baked into the saved
    model (so --init-model from such a model with --smoothing-3d filters it a second time).
    Pair with --render.antialiased for Mip-Splatting's 2D filter."""
    random_background: bool = False
    """Render over a random colour each step (discourages using the background as colour)."""
    init_opacity: float = 0.1
    """Opacity of the initial Gaussians."""
    init_region: InitRegion = "auto"
    """Where the initial Gaussians come from (train/init.py): "points" = the dataset's point
    cloud (SfM, or the loader's random cube as 3DGS does for Blender); "hull" = inside the
    visual hull of the training alpha masks; "frusta" = where most training views look;
    "box" = anywhere in the box around the cameras. "auto" = hull when the dataset's points are
    random and the images have alpha, else the points (frusta when there are none)."""
    init_model: Optional[Path] = None
    """Start from a model file of any format (.ply, .spz, .sog, ...) instead of the dataset's
    points (its SH bands cut or zero-padded to --sh-degree; no background
    Gaussians are added)."""
    init_num_random: int = 100_000
    """How many Gaussians "hull", "frusta" and "box" place."""
    background_gaussians: int = 20_000
    """Directions on a sphere behind the scene (twice the reach of the SfM points) where
    Gaussians for the sky and far surroundings start, coloured from the images; those no view
    sees are dropped. Used when every pixel is trained (no masks) and the dataset has no
    background colour of its own. 0 = none."""
    seed: int = 0
    """Seed for camera order, initialisation and densification randomness."""
    save_at: tuple[int, ...] = (7_000, 30_000)
    """Iterations at which to write the model as .ply (the last one is always written)."""
    checkpoint_every: int = 1_000
    """Write a resumable checkpoint every this many iterations (and at the end) ..."""
    checkpoint_minutes: float = 2.0
    """... and at least this often in wall-clock minutes, and at a clean stop (Ctrl-C)."""
    eval_at: tuple[int, ...] = (7_000, 30_000)
    """Iterations at which to evaluate on the test views (the end is always evaluated)."""
    save_renders: bool = True
    """Save test renders next to ground truth as PNG at the final evaluation."""
    progress: bool = True
    """Show a progress bar."""
    strategy: StrategyConfig = field(default_factory=DefaultStrategyConfig)
    """Densification: `strategy:default` (3DGS adaptive density control) or `strategy:mcmc`
    (3DGS-MCMC relocation), each with its own options (--strategy.*), given last."""

    # ---- checks and (de)serialisation --------------------------------------------------------

    def validate(self) -> None:
        """Raise ConfigError naming the first setting that cannot work."""
        self.data.validate()
        if self.init_model is not None and not Path(self.init_model).is_file():
            raise ConfigError(f"--init-model {self.init_model}: no such model file")
        self.optim.validate()
        self.depth.validate()
        positive = {"iterations": self.iterations, "sh-degree-interval": self.sh_degree_interval,
                    "checkpoint-every": self.checkpoint_every, "init-num-random": self.init_num_random,
                    "batch-size": self.batch_size}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"--{name} must be >= 1, got {value}")
        if self.background_gaussians < 0:
            raise ConfigError(f"--background-gaussians must be >= 0, got {self.background_gaussians}")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise ConfigError(f"--max-minutes must be a positive number of minutes, got {self.max_minutes}")
        if not (math.isfinite(self.checkpoint_minutes) and self.checkpoint_minutes > 0):
            raise ConfigError(f"--checkpoint-minutes must be positive, got {self.checkpoint_minutes}")
        if self.sh_degree not in (0, 1, 2, 3):
            raise ConfigError(f"--sh-degree must be 0, 1, 2 or 3, got {self.sh_degree}")
        if self.coarse_to_fine is not None and not 0.0 <= self.coarse_to_fine <= 1.0:
            raise ConfigError(f"--coarse-to-fine must be in [0, 1], got {self.coarse_to_fine}")
        if not (self.pose.lr >= 0 and self.pose.lr_final >= 0 and 0 <= self.pose.start < 1):
            raise ConfigError(f"--pose.lr and --pose.lr-final must be >= 0 and --pose.start in [0, 1), got "
                              f"{self.pose.lr}, {self.pose.lr_final}, {self.pose.start}")
        if not 0.0 <= self.ssim_lambda <= 1.0:
            raise ConfigError(f"--ssim-lambda must be in [0, 1], got {self.ssim_lambda}")
        if not 0.0 < self.init_opacity < 1.0:
            raise ConfigError(f"--init-opacity must be in (0, 1), got {self.init_opacity}")
        try:
            self.render.validate()
        except ValueError as exc:
            raise ConfigError(f"--render: {exc}") from None

    @property
    def strategy_kind(self) -> str:
        return STRATEGY_KINDS[type(self.strategy)]

    def to_dict(self) -> dict:
        d = _to_dict(self)
        d["strategy"] = {"kind": self.strategy_kind, **d["strategy"]}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Inverse of to_dict; unknown keys are an error that names them."""
        d = dict(d)
        strategy = dict(d.pop("strategy", {"kind": "default"}))
        kinds = {v: k for k, v in STRATEGY_KINDS.items()}
        kind = strategy.pop("kind", "default")
        if kind not in kinds:
            raise ValueError(f"unknown strategy kind {kind!r}: expected one of {', '.join(kinds)}")
        cfg = _from_dict(cls, d)
        return dataclasses.replace(cfg, strategy=_from_dict(kinds[kind], strategy))


def _to_dict(obj) -> dict:
    def convert(v):
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple):
            return list(v)
        return v

    return dataclasses.asdict(obj, dict_factory=lambda items: {k: convert(v) for k, v in items})


def _from_dict(cls, d: dict):
    hints = typing.get_type_hints(cls, include_extras=True)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    kwargs = {}
    for name, value in d.items():
        target = _plain_type(hints[name])
        if dataclasses.is_dataclass(target) and isinstance(value, dict):
            kwargs[name] = _from_dict(target, value)
        elif target is tuple and isinstance(value, list):
            kwargs[name] = tuple(value)
        elif target is Path and value is not None:
            kwargs[name] = Path(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _plain_type(hint):
    """The class behind Annotated[...] / Optional[...] / tuple[...] hints (else the hint)."""
    while typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is Union and len(args) == 1:
        return _plain_type(args[0])
    if typing.get_origin(hint) is tuple:
        return tuple
    return hint

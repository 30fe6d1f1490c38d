"""A training run: the loop around `train_step`, with time, events, checkpoints and outputs.

    run = Run(config, scene)          # the caller loads the scene (splatlab.data.load_scene)
    run.subscribe(print)              # typed events: train/events.py
    result = run.train(resume=False)  # -> TrainResult

The run owns what a step must not: which views come next, the schedule values of each step,
the wall-clock budget (train/budget.py), checkpoints on a step and a wall-clock cadence and at a
clean stop (Ctrl-C), snapshots, evaluation and the output folder (train/outputs.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..data.scene import Scene
from ..gaussians import Gaussians
from ..metrics import LPIPS, evaluate_views
from ..render import RenderSettings
from .auto import choose_coarse_to_fine, choose_lighting
from .budget import TimeBudget
from .distributed import Group, SharedFolder, ShardSampler, apply_batch_rule, convert_steps, merge_evaluations
from .config import ConfigError, TrainConfig
from .events import EndEvent, EvalEvent, EventBus, MessageEvent, SnapshotEvent, StepEvent, Subscriber
from .init import background_gaussians, background_sphere, initial_gaussians
from .optim import base_lrs, means_lr_at
from .outputs import RunFolder
from .schedule import exp_decay, resolution_divisor, sh_degree_at
from .state import TrainState, seed_everything
from .exposure import make_appearance
from .lighting import Lighting
from .smoothing import SmoothingFilter3D
from .pose import PoseCorrection
from .step import LossSettings, StepPlan, StepResult, StepView, train_step
from .surround import Surround, surround_colour
from .views import mask_cover, mask_message, resolve_mask_mode, step_view
from .strategy import DefaultStrategy, DefaultStrategyConfig, MCMCStrategy, Strategy

LOG_EVERY = 10  # steps between StepEvents (and host reads of the loss)
BACKGROUND_OPACITY = 0.8  # initial opacity of the background sphere's Gaussians


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, bad checkpoint); the message says what to do."""


@dataclass
class TrainResult:
    gaussians: Gaussians
    step: int
    metrics: dict
    output: Path
    reason: str  # "completed" | "time budget"


def make_strategy(config) -> Strategy:
    """The strategy its config's type names."""
    return DefaultStrategy(config) if isinstance(config, DefaultStrategyConfig) else MCMCStrategy(config)


def same_run(a: TrainConfig, b: TrainConfig) -> bool:
    """Whether two configs train the same model (the output path and progress bar aside)."""
    strip = dict(output=None, progress=True)
    return dataclasses.replace(a, **strip) == dataclasses.replace(b, **strip)


class StopRequests:
    """Set by SIGINT / SIGTERM; the loop stops at the next step boundary and checkpoints."""

    requested = False


@contextlib.contextmanager
def stop_requests():
    """Turn the first Ctrl-C (or SIGTERM, as cluster schedulers send) into a stop request
    that the loop honours between steps; a second Ctrl-C interrupts at once."""
    stop = StopRequests()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals can only be handled on the main thread
        return

    def handler(signum, frame):
        if stop.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.requested = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def default_output(scene: Scene) -> Path:
    return Path("outputs") / Path(str(scene.path)).resolve().name


class Run:
    def __init__(self, config: TrainConfig, scene: Scene, group: Optional[Group] = None) -> None:
        config.validate()
        if not scene.train:
            raise TrainingError(f"the scene at {scene.path} has no training views")
        self.group = group or Group.single(config.device)
        if self.group.world > len(scene.train):
            raise ConfigError(f"{self.group.world} processes but the scene at {scene.path} has only "
                              f"{len(scene.train)} training views: use at most --nproc {len(scene.train)}")
        if config.random_background and (scene.background is None or not all(v.has_alpha for v in scene.train)):
            raise ConfigError(
                "--random-background needs training images with an alpha channel composited over a known "
                "background (e.g. Blender RGBA); this scene has none"
            )
        self.config, self.scene = config, scene
        self.folder = RunFolder(config.output or default_output(scene))
        self.device = self.group.device if self.group.distributed else torch.device(config.device)
        self.batch = config.batch_size * self.group.world  # views per step, all processes together
        self.shard = ShardSampler(self.group.shard(len(scene.train)), config.seed, self.group.rank, self.group.world)
        if self.group.distributed:  # rank 0 alone writes; the others get what it reads
            self.folder = SharedFolder(self.folder, self.group)
        self._background = tuple(scene.background or config.render.background)
        self.events = EventBus()
        self.strategy = make_strategy(config.strategy)
        if self.group.distributed and hasattr(self.strategy, "reduce_statistics"):
            self.strategy.reduce_statistics = self.group.reduce_statistics
        self.mask_cover = mask_cover(scene, self.group)
        self.mask_mode = resolve_mask_mode(scene, config.data.masks, self.mask_cover)
        self._surround_start = self._choose_surround()
        # Coarse-to-fine when the config leaves it open: from the budget, as the CLI logs it.
        self.coarse_to_fine = config.coarse_to_fine if config.coarse_to_fine is not None \
            else choose_coarse_to_fine(config.max_minutes)[0]
        self.lighting, self._lighting_why = self._choose_lighting()
        if config.exposure.lighting and not self.uses_exposure:
            raise ConfigError("--exposure.lighting works with exposure compensation, which is off for this run "
                              "(--exposure.enabled False, or a synthetic dataset): add --exposure.enabled True")
        self.losses = LossSettings(config.ssim_lambda, config.exposure if self.uses_exposure else None, scene.extent,
                                   config.pose if config.pose.enabled else None)
        self.state: Optional[TrainState] = None
        self.budget: Optional[TimeBudget] = None
        self.history: list[dict] = []
        self.elapsed = 0.0  # training seconds, earlier sessions of a resumed run included
        self._lpips: Optional[LPIPS] = None

    def _choose_surround(self) -> Optional[tuple[float, float, float]]:
        """Object masks over a dataset without a background colour: the colour the subject is
        rendered over is learned, from the colour just outside the masks (train/surround.py)."""
        if self.mask_mode != "object" or self.scene.background is not None \
                or self.config.data.mask_background != "surround":
            return None
        return surround_colour(self.scene, self.group)

    @property
    def background(self) -> tuple[float, float, float]:
        """What the model is rendered over in evaluations and renders: the learned colour behind
        a masked subject when there is one, else the dataset's or --render.background."""
        surround = None if self.state is None else self.state.extras.get("surround")
        return self._background if surround is None else surround.as_tuple()

    def _choose_lighting(self) -> tuple[bool, str | None]:
        """Per-photo lighting: as the config says, else from the photos (train/auto.py)."""
        wanted = self.config.exposure.lighting
        if wanted is not None or not self.uses_exposure:
            return bool(wanted), None
        return choose_lighting([view.source for view in self.scene.train])

    @property
    def uses_exposure(self) -> bool:
        """Exposure compensation: on for photographs (not for renders of a synthetic scene, which
        have one exposure and a known background), unless the config says otherwise."""
        wanted = self.config.exposure.enabled
        return wanted if wanted is not None else self.scene.background is None

    @property
    def output(self) -> Path:
        return self.folder.path

    def subscribe(self, fn: Subscriber) -> None:
        self.events.subscribe(fn)

    def live_gaussians(self) -> Optional[Gaussians]:
        """The model being trained, detached, or None before the start: the parameters
        themselves (views, not copies), or with the 3D smoothing filter, filtered copies."""
        return None if self.state is None else self.model()

    def model(self) -> Gaussians:
        """The trained model as it is saved, evaluated and shown: the parameters, detached,
        with the 3D smoothing filter baked in when the run uses it."""
        params = self.state.params.detach()
        smoothing = self.state.extras.get("smoothing")
        return params if smoothing is None else smoothing.apply(params)

    @property
    def steps(self) -> int:
        """Steps of the nominal schedule: one view per iteration, `batch` views per step."""
        return max(1, math.ceil(self.config.iterations / self.batch))

    @property
    def total(self) -> int:
        return self.budget.total if self.budget is not None else self.steps

    def progress(self, step: int) -> float:
        return self.budget.progress(step) if self.budget is not None else step / self.steps

    # ---- start -------------------------------------------------------------------------------

    def train(self, resume: bool = False, force: bool = False) -> TrainResult:
        """Train to the end (or the budget). `resume` continues from the folder's checkpoint, or
        starts afresh when it has none; `force` replaces an existing folder."""
        cfg = self.config
        if cfg.render.num_threads:
            torch.set_num_threads(cfg.render.num_threads)
        if self.folder.prepare(resume, force):
            self._resume()
        else:
            if resume:
                self._say(f"no checkpoint in {self.output}: starting the run afresh")
            self._fresh_start()
        self.folder.write_config(cfg.to_dict())
        with stop_requests() as self._stop:
            try:
                reason = self._loop()
            except KeyboardInterrupt:  # raised between steps, where the state is whole
                self._save_checkpoint()
                self._say(f"stopped at step {self.state.step}; continue with: splatlab train --resume --output {self.output}")
                raise
        return self._finish(reason)

    def _fresh_start(self) -> None:
        cfg, scene = self.config, self.scene
        seed_everything(cfg.seed)
        started = time.perf_counter()
        gaussians, region = initial_gaussians(scene, cfg.init_region, cfg.init_num_random, cfg.sh_degree,
                                              cfg.init_opacity, cfg.seed, cfg.init_model, self.group)
        self._say(f"{len(gaussians)} initial Gaussians from {region}")
        if cfg.init_model is None:  # a trained model has its surroundings already
            gaussians = self._with_background(gaussians)
        # Every rank computed the same Gaussians from the same sums; rank 0's bits make sure.
        self.group.broadcast_(list(gaussians.params().values()), "sharing the initial Gaussians")
        strategy_state = self.strategy.initialize_state(scene.extent)
        if "scene_centre" in strategy_state:
            strategy_state["scene_centre"] = background_sphere(scene)[0].float().to(self.device)
        self.state = TrainState.create(gaussians, cfg.optim, scene.extent, strategy_state,
                                       len(scene.train), cfg.seed, self.device)
        self._apply_batch_rule()
        self._add_extras()
        self.elapsed = time.perf_counter() - started  # placing the Gaussians is part of the run
        if self.mask_mode != "off":
            self._say(mask_message(self.scene, self.mask_mode, self.config.data.masks, self.mask_cover))
        if self._surround_start is not None:
            r, g, b = self._surround_start
            self._say(f"the subject is rendered over a colour learned with it, from the colour just outside the "
                      f"masks ({r:.3f}, {g:.3f}, {b:.3f}), in training (inside the masks), evaluation and "
                      "renders (--mask-background render: --render.background instead)")
            if tuple(self.config.render.background) != RenderSettings().background:
                self._say(f"--render.background {' '.join(f'{c:g}' for c in self.config.render.background)} is not "
                          "what the masked subject is rendered over: add --mask-background render to use it",
                          "warning")
        if self._lighting_why:
            self._say(self._lighting_why)
        if cfg.max_minutes is not None:
            per_step = self.group.max(self._probe_seconds_per_step() * cfg.batch_size)  # all plan alike
            self.budget = TimeBudget.plan(60.0 * cfg.max_minutes, self.steps, per_step,
                                          self._reserve_seconds(per_step))
            unit = "iterations" if self.batch == 1 else f"steps of {self.batch} views"
            self._say(f"time budget {cfg.max_minutes:g} min: about {self.budget.total} {unit} "
                      f"at {per_step:.3f} s each")
        self._rescale_schedule()

    def _resume(self) -> None:
        saved = self.folder.load_checkpoint()
        if not same_run(TrainConfig.from_dict(saved["config"]), self.config):
            raise TrainingError(f"{self.folder.checkpoint_path} was written by a run with another config; "
                                "resume with the run's own config (splatlab train --resume --output DIR)")
        self.state = TrainState.create(Gaussians.empty(self.config.sh_degree), self.config.optim,
                                       self.scene.extent, {}, len(self.scene.train), self.config.seed, self.device)
        self._add_extras()
        self.folder.truncate_log(saved["state"]["step"])  # in the steps the log was written in
        convert_steps(saved, self.batch)  # resumed with another number of processes or batch size
        self.state.load_state_dict(saved["state"], self.config.optim, self.scene.extent, self.device)
        self._apply_batch_rule()
        self.budget = None if saved["budget"] is None else TimeBudget.from_state_dict(saved["budget"])
        self.elapsed, self.history = saved["elapsed"], saved["history"]
        self._rescale_schedule()
        self._say(f"resumed from step {self.state.step} ({self.elapsed / 60:.1f} min trained)")

    def _with_background(self, gaussians: Gaussians) -> Gaussians:
        """Add Gaussians on a sphere for the sky and far surroundings (init.background_gaussians)
        when every pixel is trained (no masks) and the dataset has no background colour."""
        scene, n = self.scene, self.config.background_gaussians
        if n <= 0 or scene.background is not None or self.mask_mode != "off":
            return gaussians
        sky = background_gaussians(scene, n, self.config.sh_degree, BACKGROUND_OPACITY, self.group)
        if sky is None:
            return gaussians
        radius = background_sphere(scene)[1]
        self._say(f"{len(sky)} background Gaussians on a sphere of radius {radius:.3g} for the sky and "
                  "far surroundings (--background-gaussians 0 to leave them out)")
        return Gaussians.cat([gaussians, sky])

    def _add_extras(self) -> None:
        if self.uses_exposure:
            self.state.extras["exposure"] = make_appearance(len(self.scene.train), self.device, self.config.exposure)
            if self.lighting:
                self.state.extras["lighting"] = Lighting(len(self.scene.train), self.device)
        if self._surround_start is not None:
            self.state.extras["surround"] = Surround(self._surround_start, self.device)
        if self.config.pose.enabled:
            self.state.extras["pose"] = PoseCorrection(len(self.scene.train), self.device, self.scene.extent)
        if self.config.smoothing_3d:  # cameras at the full training resolution: the finest sampling
            self.state.extras["smoothing"] = SmoothingFilter3D([v.camera.to(self.device) for v in self.scene.train])

    def _apply_batch_rule(self) -> None:
        cfg = self.config
        apply_batch_rule(self.state.optimizers, base_lrs(cfg.optim, self.scene.extent), cfg.optim.eps,
                         self.batch, cfg.batch_rule)

    def _rescale_schedule(self) -> None:
        """The strategy's iteration counts follow the planned length of the run (in steps)."""
        scale = self.total / self.config.iterations
        self.strategy.config = self.config.strategy.scaled(scale) if scale != 1.0 else self.config.strategy

    # ---- the loop ----------------------------------------------------------------------------

    def _loop(self) -> str:
        cfg, state = self.config, self.state
        last_checkpoint = time.monotonic()
        since_log = (state.step, self.elapsed)
        while state.step < self.total:
            clock = time.perf_counter()
            result = train_step(state, self.strategy, self._batch(), self._plan(state.step + 1),
                                self._settings(), self.losses, self.group.reduce_gradients)
            self.elapsed += time.perf_counter() - clock
            self.elapsed, stop = self.group.agree(self.elapsed, self._stop.requested)  # same plan on all ranks
            if stop:
                raise KeyboardInterrupt
            if state.step % LOG_EVERY == 0 or result.messages or state.step == self.total:
                since_log = self._report(result, since_log)
            if self._due(cfg.save_at) and state.step != self.total:
                self._save_ply()
            if self._due(cfg.eval_at) and state.step != self.total:
                self.evaluate(save_renders=False)
            if self._due_every(cfg.checkpoint_every) or time.monotonic() - last_checkpoint > 60 * cfg.checkpoint_minutes:
                if state.step != self.total:
                    self._save_checkpoint()
                    last_checkpoint = time.monotonic()
            if self.budget is not None:
                if self.budget.exhausted(self.elapsed):
                    return "time budget"
                densifying = state.step < self.strategy.config.refine_stop
                if self.budget.observe(state.step, self.elapsed, densifying):
                    self._rescale_schedule()
        return "completed"

    def _due(self, iterations: tuple[int, ...]) -> bool:
        """Whether this step passed one of `iterations` (counted in views: `batch` per step)."""
        seen = self.state.step * self.batch
        return any(seen - self.batch < i <= seen for i in iterations)

    def _due_every(self, every: int) -> bool:
        seen = self.state.step * self.batch
        return seen // every > (seen - self.batch) // every

    def _plan(self, iteration: int) -> StepPlan:
        cfg = self.config
        progress = self.progress(iteration - 1)
        return StepPlan(
            iteration=iteration,
            progress=progress,
            means_lr=means_lr_at(progress, cfg.optim, self.scene.extent) * math.sqrt(self.batch),
            sh_degree=sh_degree_at(progress, cfg.iterations, cfg.sh_degree_interval, cfg.sh_degree),
            depth_weight=exp_decay(cfg.depth.weight, cfg.depth.weight_final, progress) if cfg.depth.weight > 0 else 0.0,
            divisor=resolution_divisor(progress, self.coarse_to_fine),
        )

    def _settings(self) -> RenderSettings:
        return dataclasses.replace(self.config.render, absgrad=self.strategy.config.needs_absgrad, render_depth=False)

    def _batch(self) -> list[StepView]:
        """This process's views of the step: from the whole set with one process, else from its shard."""
        if self.group.distributed:
            indices = self.shard.take(self.state.step, self.config.batch_size)
        else:
            indices = self.state.sampler.take(self.config.batch_size)
        return [step_view(self.scene, i, self.config, self.mask_mode, self._background, self.device)
                for i in indices]

    def _report(self, result: StepResult, since: tuple[int, float]) -> tuple[int, float]:
        """Read the step's loss (a host sync), stop on NaN/Inf, and emit a StepEvent."""
        step = self.state.step
        loss = float(result.loss)
        if not torch.isfinite(torch.tensor(loss)) or self.state.first_non_finite() is not None:
            raise TrainingError(
                f"training diverged at iteration {step} (loss {loss}); the last good checkpoint is "
                f"{self.folder.checkpoint_path}. Continue with --resume, or start again with lower "
                "learning rates (--optim.*-lr)"
            )
        its = (step - since[0]) / max(self.elapsed - since[1], 1e-9)
        event = StepEvent(step, self.total, loss, result.psnr, len(self.state.params), its, self.elapsed,
                          result.messages, self.progress(step))
        self.history.append({"step": step, "loss": loss, "psnr": event.psnr,
                             "num_gaussians": event.num_gaussians, "elapsed": self.elapsed})
        self.events.emit(event)
        return step, self.elapsed

    # ---- evaluation and files ----------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, save_renders: bool = True) -> dict:
        """PSNR / SSIM (/ LPIPS) on the test views; appended to metrics.json."""
        views = self.scene.test
        settings = dataclasses.replace(self.config.render, background=self.background, sh_degree=None)
        if self._lpips is None:
            self._lpips = LPIPS()
        mine = self.group.shard(len(views))  # each process evaluates its share; rank 0 gathers
        renders = []

        def save(i, view, image):  # render | ground truth, as uint8 on the host
            both = torch.cat([image, view.image_float(self.device)], dim=1)
            renders.append((mine[i], view.name, (both.clamp(0, 1) * 255).round().to(torch.uint8).cpu()))

        result = evaluate_views(self.model(), [views[i] for i in mine], settings, self._lpips,
                                self.device, save if save_renders else None)
        if self.group.distributed:
            result = merge_evaluations(self.group.gather((mine, result), "gathering the evaluation"), views)
            renders = [r for part in self.group.gather(renders, "gathering the test renders") for r in part]
        for i, name, image in sorted(renders, key=lambda r: r[0]):
            self.folder.save_render(i, name, image.float() / 255.0)
        metrics = {"step": self.state.step, "num_gaussians": len(self.state.params),
                   "num_test_views": len(views), "elapsed_seconds": self.elapsed, **result,
                   "background": list(settings.background)}
        if not self._lpips.available:
            metrics["lpips"] = None
            metrics["lpips_unavailable"] = self._lpips.reason
        metrics["per_image"] = metrics.pop("per_image")  # keep the long list last in the file
        self.folder.append_metrics(metrics)
        self.events.emit(EvalEvent(self.state.step, metrics))
        return metrics

    def _finish(self, reason: str) -> TrainResult:
        self._save_checkpoint()
        self._save_ply()
        metrics = self.evaluate(save_renders=self.config.save_renders)
        self.folder.write_history(self.history, f"{len(self.state.params)} Gaussians, {self.elapsed / 60:.1f} min")
        self.events.emit(EndEvent(self.state.step, reason, self.output))
        return TrainResult(self.model(), self.state.step, metrics, self.output, reason)

    def _save_ply(self) -> None:
        snapshot = self.model().clone()
        path = self.folder.save_ply(self.state.step, snapshot)
        self.events.emit(SnapshotEvent(self.state.step, snapshot, path))

    def _save_checkpoint(self) -> None:
        bad = self.state.first_non_finite()
        if bad is not None:  # never overwrite a good checkpoint with a broken one
            raise TrainingError(f"parameter {bad} has NaN/Inf at iteration {self.state.step}; the last good "
                                f"checkpoint is {self.folder.checkpoint_path}")
        if not self.group.is_main:
            return
        self.folder.save_checkpoint({
            "config": self.config.to_dict(), "state": self.state.state_dict(), "batch": self.batch,
            "budget": None if self.budget is None else self.budget.state_dict(),
            "elapsed": self.elapsed, "history": self.history,
        })  # fmt: skip

    def _say(self, text: str, level: str = "info") -> None:
        self.events.emit(MessageEvent(text, level))

    # ---- time budget -------------------------------------------------------------------------

    def _probe_seconds_per_step(self) -> float:
        """Median time of a forward+backward on a scratch copy of the model, plus an Adam step."""
        probe = self.state.params.detach().clone().requires_grad_()
        scratch = TrainState.create(probe, self.config.optim, self.scene.extent, {}, 1, 0, self.device)
        settings = self._settings()
        plan = StepPlan(1, 0.0, 0.0, self.config.sh_degree)
        times = []
        views = [v for v in self.scene.train if v.loaded]  # this process's share
        for i in range(6):
            view = views[i % len(views)]
            step_view = StepView(view.camera.to(self.device), view.image_float(self.device), None, self.background, 0)
            t0 = time.perf_counter()
            train_step(scratch, _NoStrategy(), [step_view], plan, settings, LossSettings(self.config.ssim_lambda))
            times.append(time.perf_counter() - t0)
        return float(torch.tensor(times[1:]).median())  # the first may load compiled kernels

    def _reserve_seconds(self, per_step: float) -> float:
        """Time kept back from the budget for the final save and evaluation."""
        return 5.0 + 0.5 * per_step * len(self.scene.test)


class _NoStrategy(Strategy):
    """For timing steps: no statistics, no densification."""

    def initialize_state(self, scene_extent: float) -> dict:
        return {}

    def step_post_backward(self, gaussians, optimizers, state, step, info, lr_means) -> list[str]:
        return []


def train(config: TrainConfig, scene: Scene, resume: bool = False, force: bool = False) -> TrainResult:
    """Train with `config` on `scene` and return the result."""
    return Run(config, scene).train(resume=resume, force=force)

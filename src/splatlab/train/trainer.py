"""The 3DGS optimisation loop: Scene in, trained Gaussians out.

One step: pick a training view (random order without replacement) -> render -> strategy
pre-backward hook -> loss (1-l) L1 + l (1-SSIM) (+ strategy regularisers) -> backward -> Adam
steps -> strategy post-backward hook (densification) -> zero grads.

The trainer emits events (StepEvent, EvalEvent, SnapshotEvent, EndEvent) to subscribers: the
progress bar, a logger, a live viewer. Nothing outside the loop is called from inside it.

Output folder:
    config.json                 the TrainConfig of the run
    checkpoints/latest.pt       parameters, Adam states, strategy state, step, RNG states
    point_cloud/iteration_N/point_cloud.ply    Inria .ply at the `save_at` iterations and the end
    metrics.json                PSNR / SSIM (/ LPIPS) per test image and mean, per evaluation
    renders/test/*.png          render | ground truth, side by side (final evaluation)
    curve.png, history.json     loss and PSNR against iterations and time
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from ..gaussians import Gaussians
from ..io import atomic_write, save_png, write_ply
from ..losses import photometric_loss
from ..metrics import LPIPS, evaluate_views, psnr
from ..render import RenderSettings, rasterize
from .config import TrainConfig
from .events import EndEvent, EvalEvent, Event, SnapshotEvent, StepEvent  # noqa: F401  (re-exported)
from .init import random_init, resolve_region
from .optim import as_parameters, make_optimizers, means_lr_at
from .strategy import DefaultStrategy, DefaultStrategyConfig, MCMCStrategy, Strategy

CHECKPOINT_VERSION = 1
MIN_REFINE_EVERY = 20  # densification interval floor when a time budget compresses the schedule
MIN_RESET_EVERY = 1000  # opacity-reset interval floor, likewise
REPLAN_EVERY = 0.1  # with a time budget, re-plan the schedule every 10% of the run ...
REPLAN_MIN_STEPS = 20  # ... and at least this many steps apart


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, bad output folder, bad checkpoint)."""


@dataclass
class TrainResult:
    gaussians: Gaussians
    step: int
    metrics: dict
    output: Path
    reason: str


# ---- the trainer -----------------------------------------------------------------------------


class Trainer:
    def __init__(self, config: TrainConfig, scene=None) -> None:
        self.config = config
        self.subscribers: list[Callable[[Event], None]] = []
        if scene is None:
            if config.data.path is None:
                raise TrainingError("no scene given and config.data.path is not set")
            from ..data import load_scene

            scene = load_scene(
                config.data.path,
                downscale=config.data.downscale,
                test_every=config.data.test_every,
                eval_split=config.data.eval_split,
                device=config.device if config.data.images_on_device else None,
            )
        if not scene.train:
            raise TrainingError("the scene has no training views")
        self.scene = scene
        self.device = torch.device(config.device)
        self.output = Path(config.output) if config.output else Path("outputs") / Path(str(scene.path)).name
        self.background = tuple(scene.background) if scene.background is not None else (0.0, 0.0, 0.0)
        if config.random_background and (scene.background is None or any(v.alpha is None for v in scene.train)):
            raise TrainingError(
                "random_background needs training images with an alpha channel composited over a known "
                "background (e.g. Blender RGBA); this scene has none"
            )
        self.history: list[dict] = []
        self._lpips: Optional[LPIPS] = None

    def subscribe(self, fn: Callable[[Event], None]) -> None:
        self.subscribers.append(fn)

    def _emit(self, event: Event) -> None:
        for fn in self.subscribers:
            fn(event)

    # ---- set-up ----------------------------------------------------------------------------

    def _initial_gaussians(self) -> Gaussians:
        cfg, scene = self.config, self.scene
        self.init_region_used = resolve_region(scene, cfg.init_region)
        if self.init_region_used == "points":
            return Gaussians.from_points(scene.points, scene.point_colors, cfg.sh_degree, cfg.init_opacity)
        gen = torch.Generator().manual_seed(cfg.seed)
        gaussians, self.init_region_used = random_init(
            scene, cfg.init_num_random, self.init_region_used, cfg.sh_degree, cfg.init_opacity, generator=gen
        )
        return gaussians

    def _make_strategy(self, schedule_scale: float) -> Strategy:
        cfg = self.config
        if cfg.strategy not in ("default", "mcmc"):
            raise TrainingError(f"unknown strategy {cfg.strategy!r}: expected 'default' or 'mcmc'")
        base = cfg.default_strategy if cfg.strategy == "default" else cfg.mcmc_strategy
        scaled = base.scaled(schedule_scale)
        if schedule_scale < 1.0:
            # A short budget compresses the schedule, but refining more often than every
            # MIN_REFINE_EVERY steps would grow from gradient statistics of a handful of views.
            every = max(scaled.refine_every, min(base.refine_every, MIN_REFINE_EVERY))
            scaled = dataclasses.replace(scaled, refine_every=every, refine_start=max(scaled.refine_start, every))
            if isinstance(scaled, DefaultStrategyConfig):
                # Recovering from an opacity reset takes a fixed number of Adam steps (the
                # logit climbs from -4.6 at lr 2.5e-2), not a fraction of the run: resets
                # closer than MIN_RESET_EVERY would leave the model no time to recover.
                reset = max(scaled.reset_every, min(base.reset_every, MIN_RESET_EVERY))
                scaled = dataclasses.replace(scaled, reset_every=reset)
        return DefaultStrategy(scaled) if cfg.strategy == "default" else MCMCStrategy(scaled)

    def _settings(self, sh_degree: int, background) -> RenderSettings:
        cfg = self.config
        absgrad = cfg.strategy == "default" and cfg.default_strategy.absgrad
        return RenderSettings(
            backend=cfg.backend, background=tuple(background), sh_degree=sh_degree,
            antialiased=cfg.antialiased, num_threads=cfg.num_threads, absgrad=absgrad,
        )

    def _prepare_output(self, resume: bool, force: bool) -> None:
        ckpt = self.output / "checkpoints" / "latest.pt"
        if self.output.exists() and any(self.output.iterdir()) and not resume:
            if not force:
                raise TrainingError(
                    f"output folder {self.output} already exists and is not empty; "
                    "pass resume=True (--resume) to continue it or force=True (--force) to overwrite"
                )
            import shutil

            shutil.rmtree(self.output)
        if resume and not ckpt.exists():
            raise TrainingError(f"cannot resume: no checkpoint at {ckpt}")
        (self.output / "checkpoints").mkdir(parents=True, exist_ok=True)

    # ---- the loop --------------------------------------------------------------------------

    def train(self, resume: bool = False, force: bool = False) -> TrainResult:
        cfg = self.config
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self._prepare_output(resume, force)
        if resume:
            self._load_checkpoint(self.output / "checkpoints" / "latest.pt")
        else:
            self._fresh_start()
        with atomic_write(self.output / "config.json", "w") as f:
            json.dump(cfg.to_dict(), f, indent=2)

        deadline = None if cfg.max_minutes is None else 60.0 * cfg.max_minutes
        bar = self._progress_bar()
        reason = "completed"
        step_time = time.perf_counter()
        last_t, last_step = step_time, self.step
        while self.step < self.total:
            messages = self._train_step()
            now = time.perf_counter()
            self.elapsed += now - step_time
            step_time = now
            if self.step % 10 == 0 or self.step == self.total:
                its = (self.step - last_step) / max(now - last_t, 1e-9)
                last_t, last_step = now, self.step
                event = StepEvent(
                    self.step, self.total, self._last_loss, self._last_psnr, len(self.params),
                    its, self.elapsed, messages,
                )
                self.history.append({"step": self.step, "loss": self._last_loss, "psnr": self._last_psnr,
                                     "num_gaussians": len(self.params), "elapsed": self.elapsed})
                if bar is not None:
                    bar.set_postfix(loss=f"{event.loss:.4f}", psnr=f"{event.psnr:.2f}",
                                    N=event.num_gaussians, its=f"{its:.1f}/s")
                    bar.update(self.step - bar.n)
                self._emit(event)
            elif messages:
                self._emit(StepEvent(self.step, self.total, self._last_loss, self._last_psnr,
                                     len(self.params), 0.0, self.elapsed, messages))
            if self.step in cfg.save_at and self.step != self.total:
                self._save_ply(self.step)
            if self.step in cfg.eval_at and self.step != self.total:
                self.evaluate(save_renders=False)
            if self.step % cfg.checkpoint_every == 0 and self.step != self.total:
                self._save_checkpoint()
            if deadline is not None and self.elapsed + self._reserve_seconds() >= deadline:
                reason = "time budget"
                break
            if deadline is not None and self.step >= self.next_replan:
                self._replan(deadline)
                if bar is not None:
                    bar.total = self.total
            step_time = time.perf_counter()  # evaluation and saving are not training time
        if bar is not None:
            bar.close()
        self._save_checkpoint()
        self._save_ply(self.step)
        metrics = self.evaluate(save_renders=cfg.save_renders)
        self._save_curve()
        self._emit(EndEvent(self.step, reason, self.output))
        return TrainResult(self.params.detach(), self.step, metrics, self.output, reason)

    def _fresh_start(self) -> None:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        started = time.perf_counter()
        self.params = as_parameters(self._initial_gaussians().to(self.device))
        self.optimizers = make_optimizers(self.params, cfg.optim, self.scene.extent)
        self.view_generator = torch.Generator().manual_seed(cfg.seed)
        self.view_queue: list[int] = []
        self.step = 0
        self.elapsed = time.perf_counter() - started  # placing the Gaussians is part of the run
        self.total = cfg.iterations
        scale = 1.0
        if cfg.max_minutes is not None:
            self.total = self._estimate_iterations(60.0 * cfg.max_minutes)
            scale = self.total / cfg.iterations
        self.schedule_scale = scale
        self.anchor = (0, 0.0)  # (step, schedule progress) where the current plan starts
        self.next_replan = max(REPLAN_MIN_STEPS, int(REPLAN_EVERY * self.total))
        self.mark = (0, 0.0)  # (step, elapsed) at the last re-plan: the recent speed
        self.strategy = self._make_strategy(scale)
        self.strategy_state = self.strategy.initialize_state(self.scene.extent)

    def _estimate_iterations(self, budget_s: float) -> int:
        """Iterations that fit in the budget, from timed steps on a scratch copy of the model."""
        probe = self.params.detach().clone().requires_grad_()
        settings = self._settings(self.config.sh_degree, self.background)
        times = []
        for i in range(6):
            view = self.scene.train[i % len(self.scene.train)]
            target = view.image_float(self.device)
            t0 = time.perf_counter()
            out = rasterize(probe, view.camera.to(self.device), settings)
            photometric_loss(out.image, target, self.config.ssim_lambda).backward()
            times.append(time.perf_counter() - t0)
        # The first call may load compiled kernels; the median resists a busy machine's spikes.
        per_step = float(np.median(times[1:])) + self._optimizer_seconds()
        # Densification can make later steps slower (or, pruning a random start, faster): a
        # cautious allowance, corrected by _replan as the run measures its own speed.
        growth = 1.3
        self._probe_seconds = per_step
        usable = max(budget_s - self._reserve_seconds(), 0.0)
        return int(min(self.config.iterations, max(10, usable / (per_step * growth))))

    def _optimizer_seconds(self) -> float:
        """Time of one Adam step over all parameters, measured on copies."""
        copies = {k: v.detach().clone() for k, v in self.params.params().items()}
        opts = [torch.optim.Adam([torch.nn.Parameter(v)], lr=1e-3) for v in copies.values()]
        for opt in opts:
            for group in opt.param_groups:
                for p in group["params"]:
                    p.grad = torch.zeros_like(p)
        t0 = time.perf_counter()
        for opt in opts:
            opt.step()
        return time.perf_counter() - t0

    def progress(self) -> float:
        """Fraction of the schedule done at the current step, in [0, 1].

        Without a budget: step / iterations. With one, the plan is piecewise linear: from the
        anchor (step, progress) of the last re-plan to 1 at `total`, so re-planning changes the
        pace of the schedule but never makes the learning rate or SH degree jump.
        """
        s0, p0 = self.anchor
        return min(1.0, p0 + (self.step - s0) * (1.0 - p0) / max(self.total - s0, 1))

    def _replan(self, deadline: float) -> None:
        """Re-estimate the iterations that fit from the speed measured since the last re-plan.

        The first estimate times the initial model; densification then grows it (slower steps)
        or prunes it (a random start thins out: faster steps). Every REPLAN_EVERY of the run,
        while the run is before 80% of its plan, the total is re-planned and the densification
        schedule re-scaled to it; the strategy keeps its state.
        """
        step, elapsed = self.step, self.elapsed
        rate = (elapsed - self.mark[1]) / max(step - self.mark[0], 1)  # seconds per step, recent
        self.mark = (step, elapsed)
        self.next_replan = step + max(REPLAN_MIN_STEPS, int(REPLAN_EVERY * self.total))
        if step >= 0.8 * self.total:
            return
        densifying = step < self.strategy.config.refine_stop
        remaining = deadline - self._reserve_seconds() - elapsed
        total = step + int(remaining / (rate * (1.2 if densifying else 1.05)))
        total = max(step + REPLAN_MIN_STEPS, min(total, self.config.iterations))
        if abs(total - self.total) < 0.05 * self.total:
            return
        self.anchor = (step, self.progress())
        self.total = total
        # The densification schedule follows the new plan (iteration counts on the new scale).
        self.schedule_scale = total / self.config.iterations
        self.strategy = self._make_strategy(self.schedule_scale)

    def _reserve_seconds(self) -> float:
        """Time kept back from the budget for the final save and evaluation."""
        per_view = getattr(self, "_probe_seconds", 0.5) * 0.5
        return 5.0 + per_view * len(self.scene.test)

    def _next_view(self) -> int:
        if not self.view_queue:  # a fresh random order, without replacement
            self.view_queue = torch.randperm(len(self.scene.train), generator=self.view_generator).tolist()
        return self.view_queue.pop()

    def _train_step(self) -> list[str]:
        """One iteration. Strategy hooks get `it`, the 1-based number of this iteration
        (= iterations completed once it ends), so refine/reset timings match 3DGS."""
        cfg, step = self.config, self.step
        it = step + 1
        progress = self.progress()
        lr = means_lr_at(progress, cfg.optim, self.scene.extent)
        self.optimizers["means"].param_groups[0]["lr"] = lr
        # The SH ramp runs on the nominal schedule: degree +1 every sh_degree_interval of `iterations`.
        sh_degree = min(int(progress * cfg.iterations + 1e-9) // cfg.sh_degree_interval, cfg.sh_degree)

        view = self.scene.train[self._next_view()]
        target = view.image_float(self.device)  # [H, W, 3]
        gt = target  # what the step's PSNR is measured against (before masking)
        background = self.background
        if cfg.random_background:  # re-composite the target over a fresh random colour
            bg = torch.rand(3)
            alpha = view.alpha.to(self.device).float().unsqueeze(-1) / 255.0  # [H, W, 1]
            target = target + (1 - alpha) * (bg.to(self.device) - torch.tensor(self.background, device=self.device))
            background = tuple(bg.tolist())
            gt = target

        out = rasterize(self.params, view.camera.to(self.device), self._settings(sh_degree, background))
        self.strategy.step_pre_backward(self.params, self.optimizers, self.strategy_state, it, out)
        image = out.image
        if view.mask is not None:  # only supervise valid pixels
            m = view.mask.to(self.device).unsqueeze(-1).to(image.dtype)
            image, target = image * m, target * m
        loss = photometric_loss(image, target, cfg.ssim_lambda)
        extra = self.strategy.loss(self.params, self.strategy_state, it)
        if extra is not None:
            loss = loss + extra
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at iteration {step + 1}; stopping. The last good checkpoint "
                f"is {self.output / 'checkpoints' / 'latest.pt'} (resume with --resume, perhaps with lower learning rates)"
            )
        loss.backward()
        for opt in self.optimizers.values():
            opt.step()
        self.step = it
        messages = self.strategy.step_post_backward(
            self.params, self.optimizers, self.strategy_state, it, out, lr_means=lr
        )
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        self._last_loss = loss.item()
        with torch.no_grad():
            self._last_psnr = psnr(out.image.detach().clamp(0, 1), gt)
        if self.step % 100 == 0:
            self._check_finite()
        return list(messages or [])

    def _check_finite(self) -> None:
        for name, value in self.params.params().items():
            if not torch.isfinite(value.detach().sum()) and not torch.isfinite(value).all():
                raise TrainingError(
                    f"parameter {name} has NaN/Inf at iteration {self.step}; stopping. The last good "
                    f"checkpoint is {self.output / 'checkpoints' / 'latest.pt'}"
                )

    def _progress_bar(self):
        if not self.config.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.total, initial=self.step, desc="train", unit="it", dynamic_ncols=True)

    # ---- evaluation ------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, save_renders: bool = True) -> dict:
        """PSNR / SSIM (/ LPIPS) on the test views; appended to metrics.json."""
        views = self.scene.test
        settings = self._settings(self.config.sh_degree, self.background)
        settings.absgrad = False
        if self._lpips is None:
            self._lpips = LPIPS()
        render_dir = self.output / "renders" / "test"
        if save_renders and views:
            render_dir.mkdir(parents=True, exist_ok=True)

        def save(i, view, image):  # render | ground truth
            save_png(render_dir / f"{i:04d}_{_safe(view.name)}.png",
                     torch.cat([image, view.image_float(self.device)], dim=1))

        result = evaluate_views(self.params.detach(), views, settings, self._lpips, self.device,
                                save if save_renders else None)
        metrics = {"step": self.step, "num_gaussians": len(self.params), "num_test_views": len(views),
                   "elapsed_seconds": self.elapsed, **result}
        if not self._lpips.available:
            metrics["lpips"] = None
            metrics["lpips_unavailable"] = self._lpips.reason
        metrics["per_image"] = metrics.pop("per_image")  # keep the long list last in the file
        path = self.output / "metrics.json"
        runs = json.loads(path.read_text()) if path.exists() else []
        runs = [r for r in runs if r.get("step") != self.step] + [metrics]
        with atomic_write(path, "w") as f:
            json.dump(runs, f, indent=2)
        self._emit(EvalEvent(self.step, metrics))
        return metrics

    # ---- files -----------------------------------------------------------------------------

    def _save_ply(self, step: int) -> Path:
        path = self.output / "point_cloud" / f"iteration_{step}" / "point_cloud.ply"
        path.parent.mkdir(parents=True, exist_ok=True)
        snapshot = self.params.detach().clone()
        write_ply(path, snapshot)
        self._emit(SnapshotEvent(step, snapshot, path))
        return path

    def _save_checkpoint(self) -> Path:
        self._check_finite()  # never overwrite a good checkpoint with a broken one
        state = {
            "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "step": self.step,
            "total": self.total,
            "schedule_scale": self.schedule_scale,
            "anchor": self.anchor,
            "next_replan": self.next_replan,
            "mark": self.mark,
            "elapsed": self.elapsed,
            "params": {k: v.detach().cpu() for k, v in self.params.params().items()},
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "strategy_state": self.strategy_state,
            "view_queue": list(self.view_queue),
            "view_generator": self.view_generator.get_state(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            "history": self.history,
        }
        path = self.output / "checkpoints" / "latest.pt"
        with atomic_write(path) as f:
            torch.save(state, f)
        return path

    def _load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
            raise TrainingError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
            raise TrainingError(f"{path} is not a splatlab checkpoint (version {CHECKPOINT_VERSION})")
        saved = TrainConfig.from_dict(state["config"])
        self.config = saved  # resume with the run's own config, so the result matches
        self.step, self.total, self.elapsed = state["step"], state["total"], state["elapsed"]
        self.schedule_scale, self.anchor = state["schedule_scale"], tuple(state["anchor"])
        self.next_replan, self.mark = state["next_replan"], tuple(state["mark"])
        self.params = as_parameters(Gaussians(**state["params"]).to(self.device))
        self.optimizers = make_optimizers(self.params, saved.optim, self.scene.extent)
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self.strategy = self._make_strategy(self.schedule_scale)
        self.strategy_state = state["strategy_state"]
        self.view_queue = list(state["view_queue"])
        self.view_generator = torch.Generator()
        self.view_generator.set_state(state["view_generator"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        self.history = state["history"]

    def _save_curve(self) -> None:
        with atomic_write(self.output / "history.json", "w") as f:
            json.dump(self.history, f)
        if not self.history:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [h["step"] for h in self.history]
        fig, ax1 = plt.subplots(figsize=(7, 4), dpi=100)
        ax1.plot(steps, [h["loss"] for h in self.history], color="tab:red", lw=1)
        ax1.set_xlabel("iteration")
        ax1.set_ylabel("training loss", color="tab:red")
        ax1.set_yscale("log")
        ax2 = ax1.twinx()
        ax2.plot(steps, [h["psnr"] for h in self.history], color="tab:blue", lw=1, alpha=0.7)
        ax2.set_ylabel("training-view PSNR (dB)", color="tab:blue")
        ax1.set_title(f"{len(self.params)} Gaussians, {self.elapsed / 60:.1f} min")
        fig.tight_layout()
        with atomic_write(self.output / "curve.png") as f:
            fig.savefig(f, format="png")
        plt.close(fig)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).stem)[:80]


def train(config: TrainConfig, scene=None, resume: bool = False, force: bool = False) -> TrainResult:
    """Train with `config` (on `scene`, or on config.data.path) and return the result."""
    return Trainer(config, scene).train(resume=resume, force=force)

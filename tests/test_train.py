"""Training end to end on a tiny synthetic scene: loss falls, PSNR rises, resume is exact."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from splatlab import Camera, RenderSettings, rasterize
from splatlab.data.scene import Scene, View
from splatlab.train.config import TrainConfig
from splatlab.train.strategy import DefaultStrategyConfig
from splatlab.train.config import ConfigError
from splatlab.train.budget import TimeBudget
from splatlab.train.events import EndEvent, MessageEvent, StepEvent
from splatlab.train.outputs import RunFolderError
from splatlab.train.run import Run, TrainingError, train
from splatlab.train.strategy.base import MIN_REFINE_EVERY, MIN_RESET_EVERY

from helpers import random_scene


def synthetic_scene(num_views: int = 12, size: int = 32, seed: int = 0) -> Scene:
    """Views of a random Gaussian scene on a ring of cameras around the origin."""
    truth = random_scene(150, sh_degree=1, seed=seed, dtype=torch.float32, spread=0.8, depth=0.0,
                         log_scale_range=(-2.8, -2.0), opacity_range=(0.5, 0.95))
    views = []
    for i in range(num_views):
        a = 2 * math.pi * i / num_views
        cam = Camera.look_at((3 * math.cos(a), 3 * math.sin(a), 1.0), (0, 0, 0), width=size, height=size,
                             fov_x=math.radians(50), name=f"view{i:02d}")
        with torch.no_grad():
            img = rasterize(truth, cam, RenderSettings(background=(1, 1, 1))).image
        views.append(View(cam, (img.clamp(0, 1) * 255).round().to(torch.uint8), cam.name))
    test = views[::4]
    train_views = [v for i, v in enumerate(views) if i % 4]
    cams = torch.stack([v.camera.position for v in train_views])
    extent = 1.1 * (cams - cams.mean(0)).norm(dim=1).max().item()
    gen = torch.Generator().manual_seed(1)
    points = torch.rand(300, 3, generator=gen) * 2 - 1
    return Scene(train_views, test, points, torch.rand(300, 3, generator=gen), extent, (1.0, 1.0, 1.0),
                 "synthetic", Path("synthetic"))


def tiny_config(tmp_path: Path, **kw) -> TrainConfig:
    strategy = DefaultStrategyConfig(refine_start=20, refine_stop=150, refine_every=20, reset_every=100,
                                    max_gaussians=2000)
    base = TrainConfig(output=tmp_path / "run", iterations=200, max_minutes=None, sh_degree=1, sh_degree_interval=50,
                       save_at=(100,), eval_at=(), checkpoint_every=50, progress=False,
                       strategy=strategy, seed=3)
    return replace(base, **kw)


def test_training_reduces_loss_and_raises_test_psnr(tmp_path):
    scene = synthetic_scene()
    cfg = tiny_config(tmp_path, iterations=300)
    trainer = Run(cfg, scene)
    events = []
    trainer.subscribe(events.append)
    result = trainer.train()
    steps = [e for e in events if isinstance(e, StepEvent) and e.its_per_sec > 0]
    first = np.mean([e.loss for e in steps[:3]])
    last = np.mean([e.loss for e in steps[-3:]])
    assert last < 0.5 * first, (first, last)
    assert result.metrics["psnr"] > 24.0, result.metrics["psnr"]
    assert isinstance(events[-1], EndEvent) and result.reason == "completed" and result.step == 300
    # Files a user gets.
    out = tmp_path / "run"
    assert (out / "point_cloud" / "iteration_100" / "point_cloud.ply").exists()
    assert (out / "point_cloud" / "iteration_300" / "point_cloud.ply").exists()
    assert (out / "checkpoints" / "latest.pt").exists()
    assert (out / "curve.png").stat().st_size > 1000
    metrics = json.loads((out / "metrics.json").read_text())[-1]
    assert metrics["step"] == 300 and len(metrics["per_image"]) == 3
    assert metrics["lpips"] is None or isinstance(metrics["lpips"], float)
    assert len(list((out / "renders" / "test").glob("*.png"))) == 3
    assert TrainConfig.from_dict(json.loads((out / "config.json").read_text())) == cfg


def test_jsonl_logger_records_the_events(tmp_path):
    from splatlab.train.logging import JsonlLogger

    scene = synthetic_scene(num_views=4, size=16)
    trainer = Run(tiny_config(tmp_path, iterations=40, save_at=(20,), save_renders=False), scene)
    trainer.subscribe(JsonlLogger(tmp_path / "log.jsonl"))
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    kinds = [r["event"] for r in rows]
    assert kinds.count("step") >= 4 and "snapshot" in kinds and "eval" in kinds and kinds[-1] == "end"
    assert all(math.isfinite(r["loss"]) for r in rows if r["event"] == "step")


def test_resume_matches_an_uninterrupted_run(tmp_path):
    scene = synthetic_scene(num_views=8, size=24)
    cfg = tiny_config(tmp_path / "a", iterations=120, checkpoint_every=40, save_renders=False)
    straight = train(cfg, scene)

    cfg_b = replace(cfg, output=tmp_path / "b")
    killer = Run(cfg_b, scene)

    def kill(event):
        if isinstance(event, StepEvent) and event.step == 70:
            raise KeyboardInterrupt  # a stop between steps: the run checkpoints where it stands

    killer.subscribe(kill)
    with pytest.raises(KeyboardInterrupt):
        killer.train()
    # Changed on purpose (issue 10): a clean stop checkpoints at its step (70), not only every 40.
    assert torch.load(tmp_path / "b" / "checkpoints" / "latest.pt", weights_only=False)["state"]["step"] == 70
    messages = []
    again = Run(cfg_b, scene)
    again.subscribe(lambda e: messages.append(e.text) if isinstance(e, MessageEvent) else None)
    resumed = again.train(resume=True)
    assert any("resumed from step 70" in m for m in messages)
    assert resumed.step == straight.step == 120
    for name, value in straight.gaussians.params().items():
        assert torch.equal(value, resumed.gaussians.params()[name]), name


def test_existing_output_is_not_overwritten_without_force(tmp_path):
    scene = synthetic_scene(num_views=4, size=16)
    cfg = tiny_config(tmp_path, iterations=5, save_at=(), checkpoint_every=100, save_renders=False)
    train(cfg, scene)
    with pytest.raises(RunFolderError, match="already exists.*--resume.*--force"):
        train(cfg, scene)
    assert train(cfg, scene, force=True).step == 5
    # Changed on purpose (issue 10): --resume on a folder without a checkpoint starts afresh.
    messages = []
    run = Run(replace(cfg, output=tmp_path / "new"), scene)
    run.subscribe(lambda e: messages.append(e.text) if isinstance(e, MessageEvent) else None)
    assert run.train(resume=True).step == 5
    assert any("no checkpoint" in m and "afresh" in m for m in messages)


def test_nan_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path):
    scene = synthetic_scene(num_views=4, size=16)
    cfg = tiny_config(tmp_path, iterations=50, checkpoint_every=10, save_renders=False)
    trainer = Run(cfg, scene)

    def poison(event):
        if isinstance(event, StepEvent) and event.step == 20:
            with torch.no_grad():
                trainer.state.params.logit_opacities[0] = float("nan")

    trainer.subscribe(poison)
    with pytest.raises((TrainingError, ValueError), match="NaN|non-finite"):
        trainer.train()
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=False)
    assert ckpt["state"]["step"] == 10  # the step-20 checkpoint was refused: NaN
    assert all(torch.isfinite(v).all() for v in ckpt["state"]["params"].values())
    # The folder it leaves is one that --resume continues from the last good checkpoint.
    assert Run(cfg, scene).train(resume=True).step == 50


def test_nonsense_settings_are_refused_before_anything_is_written(tmp_path):
    scene = synthetic_scene(num_views=4, size=16)
    for bad in (dict(iterations=-5), dict(max_minutes=0.0), dict(sh_degree=4), dict(checkpoint_every=0)):
        with pytest.raises(ConfigError):
            Run(tiny_config(tmp_path, **bad), scene)
    from splatlab.train.config import OptimConfig

    with pytest.raises(ConfigError, match="means-lr"):
        Run(tiny_config(tmp_path, optim=OptimConfig(means_lr=float("nan"))), scene)
    assert not (tmp_path / "run").exists()


def test_wall_clock_budget_scales_the_schedule_and_ends_cleanly(tmp_path):
    scene = synthetic_scene(num_views=8, size=24)
    budget = 0.4  # minutes
    cfg = tiny_config(tmp_path, iterations=30_000, max_minutes=budget, save_renders=False, save_at=())
    trainer = Run(cfg, scene)
    lrs, progress = [], []

    def record(e):
        if isinstance(e, StepEvent) and e.its_per_sec > 0:
            lrs.append(trainer.state.optimizers["means"].param_groups[0]["lr"])
            progress.append(e.progress)

    trainer.subscribe(record)
    result = trainer.train()
    plan = trainer.budget
    assert result.step <= plan.total < 30_000
    # The schedule is scaled to the iterations that fit (re-planned from the measured speed).
    assert plan.scale == pytest.approx(plan.total / 30_000)
    assert trainer.strategy.config.refine_stop == max(1, round(150 * plan.scale))
    # The learning rate only decays, re-plans included, and reaches the end of its schedule;
    # the progress the bar shows never goes back.
    assert all(b <= a * (1 + 1e-9) for a, b in zip(lrs, lrs[1:]))
    assert all(b >= a for a, b in zip(progress, progress[1:]))
    assert trainer.progress(result.step) > 0.9
    # The run uses its budget (training time plus the reserve for saving and evaluating) ...
    assert trainer.elapsed + plan.reserve >= 0.7 * budget * 60
    # ... and stays inside it.
    assert trainer.elapsed <= budget * 60 + 2.0
    assert (tmp_path / "run" / "metrics.json").exists()
    assert (tmp_path / "run" / "point_cloud" / f"iteration_{result.step}" / "point_cloud.ply").exists()


def test_a_budget_too_small_for_anything_says_the_minimum(tmp_path):
    scene = synthetic_scene(num_views=4, size=16)
    with pytest.raises(ConfigError, match=r"at least --max-minutes \d"):
        Run(tiny_config(tmp_path, max_minutes=0.01), scene).train()


def test_a_replanned_budget_never_runs_past_the_configured_iterations():
    """A budget far larger than 30 iterations need: re-plans may extend the run, never past 30
    (it once planned step + REPLAN_MIN_STEPS = 40)."""
    budget = TimeBudget.plan(600.0, cap=30, seconds_per_step=0.01, reserve=1.0)
    assert budget.total == 30
    for step in range(1, 30):
        budget.observe(step, elapsed=0.01 * step, densifying=step < 15)
        assert budget.total <= 30 and budget.progress(step) <= 1.0
    assert budget.total == 30 and budget.progress(30) == 1.0


def test_a_compressed_schedule_keeps_opacity_resets_apart():
    short = DefaultStrategyConfig().scaled(0.1)  # 3000 iterations planned
    assert short.refine_stop == 1500 and short.refine_every == MIN_REFINE_EVERY
    assert short.reset_every == MIN_RESET_EVERY  # not 300: recovering from a reset takes longer
    assert DefaultStrategyConfig().scaled(1.0).reset_every == 3000


def test_random_background_recomposites_the_target_or_is_refused(tmp_path):
    scene = synthetic_scene(num_views=4, size=16)
    with pytest.raises(ConfigError, match="alpha"):
        Run(tiny_config(tmp_path, random_background=True), scene)
    for view in scene.train + scene.test:  # opaque everywhere but one transparent corner
        view.alpha = torch.full(view.image.shape[:2], 255, dtype=torch.uint8)
        view.alpha[:4, :4] = 0
    result = train(tiny_config(tmp_path, iterations=20, random_background=True, save_renders=False), scene)
    assert result.step == 20 and math.isfinite(result.metrics["psnr"])

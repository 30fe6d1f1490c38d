"""Camera pose refinement (train/pose.py).

- moving the Gaussians by V⁻¹ Δ V renders exactly what the corrected camera Δ V renders of the
  originals (positions, shapes, diffuse colour), and the move has exact gradients;
- from two views whose true poses differ from the given ones, the corrections are recovered;
- a run with --pose.enabled trains, checkpoints and resumes its corrections; bad settings exit 2.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from helpers import random_scene, write_demo_blender
from splatlab import Camera, RenderSettings, rasterize
from splatlab.train.pose import PoseConfig, PoseCorrection, skew

REF = RenderSettings(backend="reference", background=(0.1, 0.2, 0.3))


def _camera(**kw) -> Camera:
    return Camera.look_at((0.3, -0.2, -0.5), (0.0, 0.0, 4.0), up=(0.0, -1.0, 0.0), width=40, height=32, **kw)


def test_moving_the_gaussians_equals_moving_the_camera():
    g = random_scene(60, sh_degree=0, seed=3)
    cam = _camera()
    pose = PoseCorrection(2, torch.device("cpu"), extent=2.0)
    with torch.no_grad():
        pose.deltas.copy_(torch.tensor([[0.02, -0.03, 0.01, 0.05, -0.02, 0.03], [0.0] * 6]))
    rot, trans = pose.correction(0)
    assert torch.allclose(rot @ rot.T, torch.eye(3), atol=1e-6) and trans.abs().max() > 0.01
    corrected = pose.corrected_camera(0, cam)
    assert not torch.allclose(corrected.viewmat, cam.viewmat.double())
    moved = rasterize(pose.apply(g, 0, cam), cam, REF).image
    truth = rasterize(g, corrected, REF).image
    assert (moved - truth).abs().max() < 1e-5
    assert (moved - rasterize(g, cam, REF).image).abs().max() > 0.05  # the correction did something
    # View-dependent colour is read at directions turned by the correction (0.04 rad here).
    g2 = random_scene(60, sh_degree=2, seed=3)
    assert (rasterize(pose.apply(g2, 0, cam), cam, REF).image - rasterize(g2, corrected, REF).image).abs().max() < 0.02
    # The mean over the views is pinned to none: view 1 is corrected by the opposite.
    assert torch.allclose(pose.deltas[1] - pose.deltas.mean(0), -(pose.deltas[0] - pose.deltas.mean(0)))


def test_the_same_correction_of_every_camera_is_pinned_away():
    """A motion of the whole scene (the same turn and shift of all cameras, in world axes) is no
    correction at all: what the mean pinning removes, so held-out cameras keep seeing the scene."""
    cams = [_camera(), Camera.look_at((2.0, 1.0, 0.0), (0.0, 0.0, 4.0), up=(0.0, -1.0, 0.0), width=40, height=32)]
    pose = PoseCorrection(2, torch.device("cpu"), extent=1.0)
    with torch.no_grad():
        pose.deltas.copy_(torch.tensor([[0.01, 0.02, -0.01, 0.1, 0.0, 0.2]] * 2))
    for i, cam in enumerate(cams):
        assert torch.allclose(pose.corrected_camera(i, cam).viewmat, cam.viewmat.double(), atol=1e-7)


def test_pose_move_gradients_are_exact():
    g = random_scene(5, sh_degree=0, seed=1)
    cam = _camera()
    pose = PoseCorrection(2, torch.device("cpu"), extent=1.5)
    pose.deltas = torch.nn.Parameter(0.05 * torch.randn(2, 6, dtype=torch.float64))

    def moved(deltas, means, quats):
        pose.deltas = deltas
        out = pose.apply(replace(g, means=means, quats=quats), 0, cam)
        return out.means, out.quats

    inputs = (pose.deltas.detach().clone().requires_grad_(), g.means.clone().requires_grad_(),
              g.quats.clone().requires_grad_())  # fmt: skip
    assert torch.autograd.gradcheck(moved, inputs)
    assert torch.autograd.gradcheck(lambda w: torch.linalg.matrix_exp(skew(w)),
                                    (torch.zeros(3, dtype=torch.float64, requires_grad=True),))


def test_corrections_are_recovered_from_two_views():
    """Photos taken from corrected cameras; the model is known and held fixed: learning the
    corrections makes the renders match the photos. (The corrections themselves are not
    unique: with a narrow field of view a small turn and a small shift move the image alike.)"""
    g = random_scene(150, sh_degree=0, seed=5, log_scale_range=(-2.5, -1.5))
    cams = [_camera(), Camera.look_at((-0.4, 0.3, -0.5), (0.0, 0.0, 4.0), up=(0.0, -1.0, 0.0), width=40, height=32)]
    true = torch.tensor([[0.015, -0.02, 0.01, 0.02, -0.01, 0.015]], dtype=torch.float64)
    truth = PoseCorrection(2, torch.device("cpu"), extent=1.0)
    truth.deltas = torch.nn.Parameter(torch.cat([true, -true]))
    photos = [rasterize(g, truth.corrected_camera(i, c), REF).image.detach() for i, c in enumerate(cams)]
    pose = PoseCorrection(2, torch.device("cpu"), extent=1.0)
    pose.deltas = torch.nn.Parameter(torch.zeros(2, 6, dtype=torch.float64))
    pose.optimizer = torch.optim.Adam([pose.deltas], lr=2e-3)
    fast = replace(REF, backend="cpu")
    start = None
    for _ in range(150):
        loss = sum((rasterize(pose.apply(g, i, c), c, fast).image - photos[i]).square().mean() for i, c in enumerate(cams))
        start = float(loss.detach()) if start is None else start
        loss.backward()
        pose.optimizer.step()
        pose.optimizer.zero_grad()
    learned = pose.deltas.detach() - pose.deltas.detach().mean(0)
    assert float(loss.detach()) < 1e-2 * start, (float(loss.detach()), start)
    assert torch.allclose(learned[0], -learned[1])  # mean none
    assert learned[0, 2] == pytest.approx(float(true[0, 2]), abs=1e-3)  # the roll has no twin


def test_training_with_pose_refinement_runs_resumes_and_refuses_bad_settings(tmp_path):
    from splatlab.train.config import TrainConfig
    from splatlab.data.scene import load_scene
    from splatlab.train.run import Run

    data = write_demo_blender(tmp_path / "data", num_views=4, size=16)
    options = ["--max-minutes", "None", "--no-progress", "--init-num-random", "300", "--sh-degree", "0",
               "--no-save-renders", "--iterations", "30", "--pose.enabled", "--pose.start", "0.2"]
    cli = [sys.executable, "-m", "splatlab.cli", "train", str(data), "--output", str(tmp_path / "run")]
    done = subprocess.run([*cli, *options], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    saved = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=False)
    deltas = saved["state"]["extras"]["pose"]["deltas"]
    assert deltas.shape == (3, 6) and deltas.abs().sum() > 0  # 3 training views, moved after 20%
    bad = subprocess.run([*cli, "--force", *options, "--pose.lr", "-1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--pose.lr" in bad.stderr, bad.stderr
    assert not TrainConfig().pose.enabled and TrainConfig().pose == PoseConfig()

    cfg = replace(TrainConfig.from_dict(saved["config"]), output=tmp_path / "api", iterations=20, checkpoint_every=10)
    scene = load_scene(data)
    first = Run(cfg, scene)
    first.train()
    resumed = Run(cfg, scene)
    resumed.train(resume=True)  # nothing left to train: the corrections come back as saved
    assert torch.equal(resumed.state.extras["pose"].deltas, first.state.extras["pose"].deltas)

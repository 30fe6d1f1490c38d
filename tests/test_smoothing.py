"""Mip-Splatting's 3D smoothing filter (train/smoothing.py): sampling rates from the training
cameras, the filtered covariance and opacity, gradients, and a run that uses it."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from splatlab import Camera, Gaussians
from splatlab.constants import SMOOTHING_3D_VARIANCE
from splatlab.geometry import quat_scale_to_covar
from splatlab.io import read_ply
from splatlab.train.events import StepEvent
from splatlab.train.run import Run, train
from splatlab.train.smoothing import SmoothingFilter3D, filter_variances, sampling_rates, smoothed

from helpers import make_gaussians
from test_train import synthetic_scene, tiny_config


def forward_camera(z_offset: float = 0.0, f: float = 50.0) -> Camera:
    """A 64x64 camera at (0, 0, z_offset) looking down +z."""
    return Camera.look_at((0.0, 0.0, z_offset), (0.0, 0.0, z_offset + 1.0), up=(0.0, -1.0, 0.0), width=64, height=64,
                          fov_x=2 * math.atan(32 / f), name="cam")


def test_sampling_rate_is_the_closest_cameras_focal_over_depth():
    means = torch.tensor([[0.0, 0.0, 4.0], [0.0, 0.0, -3.0], [50.0, 0.0, 4.0]], dtype=torch.float64)
    near, far = forward_camera(0.0), forward_camera(-4.0)
    rates = sampling_rates(means, [near, far])
    fx = near.fx
    assert rates[0].item() == pytest.approx(fx / 4.0)  # the nearer camera wins (4 < 8)
    assert rates[1].item() == pytest.approx(fx / 1.0)  # behind the first camera, 1 unit in front of the second
    assert rates[2].item() == 0.0  # far outside both frames (beyond the 15% margin)
    var = filter_variances(means, [near, far])
    assert var[0].item() == pytest.approx(SMOOTHING_3D_VARIANCE * 16.0 / fx**2)
    assert var[2].item() == pytest.approx(var[0].item())  # unseen: as coarse as the coarsest seen one


def test_the_filter_adds_an_isotropic_variance_and_keeps_the_integrated_weight():
    g = make_gaussians(torch.randn(5, 3, dtype=torch.float64), log_scale=-2.0, opacity=0.7)
    g = replace(g, quats=torch.randn(5, 4, dtype=torch.float64),
                log_scales=torch.randn(5, 3, dtype=torch.float64) * 0.5 - 2.0)
    variances = torch.rand(5, dtype=torch.float64) * 0.02
    f = smoothed(g, variances)
    cov = quat_scale_to_covar(g.quats, torch.exp(g.log_scales))  # [N, 3, 3]
    cov_f = quat_scale_to_covar(f.quats, torch.exp(f.log_scales))
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(cov_f, cov + variances[:, None, None] * eye)
    # opacity x sqrt(det Sigma) (the Gaussian's integral) is unchanged
    torch.testing.assert_close(f.opacities * torch.linalg.det(cov_f).sqrt(), g.opacities * torch.linalg.det(cov).sqrt())
    assert torch.all(f.opacities < g.opacities)


def test_the_filter_has_the_gradient_autograd_finds_in_float64():
    g = make_gaussians(torch.randn(4, 3, dtype=torch.float64), log_scale=-2.0, opacity=0.6)
    variances = torch.rand(4, dtype=torch.float64) * 0.05

    def fn(log_scales, logits):
        out = smoothed(replace(g, log_scales=log_scales, logit_opacities=logits), variances)
        return out.log_scales, out.logit_opacities

    log_scales = (torch.randn(4, 3, dtype=torch.float64) * 0.5 - 2.0).requires_grad_()
    logits = torch.randn(4, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(fn, (log_scales, logits))


def test_the_variances_are_recomputed_when_gaussians_are_added_and_every_100_steps():
    cams = [forward_camera(0.0)]
    g = make_gaussians(torch.tensor([[0.0, 0.0, 4.0]]), log_scale=-2.0)
    filt = SmoothingFilter3D(cams)
    filt.refresh(g, 1)
    first = filt.variances.clone()
    moved = replace(g, means=torch.tensor([[0.0, 0.0, 2.0]]))
    filt.refresh(moved, 50)  # not due: the variances of step 1 stay
    assert torch.equal(filt.variances, first)
    filt.refresh(moved, 100)
    assert filt.variances[0].item() == pytest.approx(first[0].item() / 4.0, rel=1e-5)
    two = make_gaussians(torch.tensor([[0.0, 0.0, 4.0], [0.0, 0.0, 8.0]]), log_scale=-2.0)
    assert len(filt.apply(two)) == 2 and len(filt.variances) == 2


def test_a_run_with_the_filter_saves_filtered_gaussians_and_resumes_exactly(tmp_path):
    scene = synthetic_scene(num_views=8, size=24)
    cfg = tiny_config(tmp_path / "a", iterations=120, checkpoint_every=40, save_renders=False, smoothing_3d=True)
    straight = train(cfg, scene)
    # what is saved and returned is the trained parameters filtered: no axis thinner than the filter
    ckpt = torch.load(cfg.output / "checkpoints" / "latest.pt", weights_only=False)["state"]
    raw = Gaussians(**ckpt["params"])
    filt = SmoothingFilter3D([v.camera for v in scene.train])
    filt.load_state_dict(ckpt["extras"]["smoothing"])  # the last refinement may have changed N since
    expected = filt.apply(raw)
    variances = filt.variances
    saved = read_ply(cfg.output / "point_cloud" / "iteration_120" / "point_cloud.ply")
    torch.testing.assert_close(saved.log_scales, expected.log_scales)
    torch.testing.assert_close(saved.logit_opacities, expected.logit_opacities)
    torch.testing.assert_close(saved.log_scales, straight.gaussians.log_scales)
    assert torch.all(torch.exp(2 * saved.log_scales).amin(-1) >= 0.999 * variances)
    assert torch.all(saved.logit_opacities <= raw.logit_opacities)

    cfg_b = replace(cfg, output=tmp_path / "b" / "run")
    killer = Run(cfg_b, scene)

    def kill(event):
        if isinstance(event, StepEvent) and event.step == 70:
            raise KeyboardInterrupt

    killer.subscribe(kill)
    with pytest.raises(KeyboardInterrupt):
        killer.train()
    resumed = Run(cfg_b, scene).train(resume=True)
    for name, value in straight.gaussians.params().items():
        assert torch.equal(value, resumed.gaussians.params()[name]), name

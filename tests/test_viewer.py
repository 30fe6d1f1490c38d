"""splatlab.viewer: conversion and view-dependent colour, camera conventions, the training cameras,
the viewer thread's scheduling (fake browsers), `splatlab view`, and a real browser.

The browser test starts the viewer on a free localhost port and drives Debian's headless chromium
(software WebGL through SwiftShader) over the DevTools protocol (splatlab.viewer.headless). It
compares screenshots of the viewer with splatlab's renderer from the same camera and keeps them
(and chromium's log, and the measured figures) in test-artifacts/. Chromium comes from
scripts/install_test_browser.sh; set SPLATLAB_SKIP_BROWSER=1 to skip that test instead.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("viser", reason="the viewer needs viser: pip install 'viser>=1.1,<2'")

from splatlab.camera import Camera  # noqa: E402
from splatlab.gaussians import Gaussians  # noqa: E402
from splatlab.geometry import up_from_cameras  # noqa: E402
from splatlab.io import export_model, write_ply  # noqa: E402
from splatlab.render import RenderSettings, rasterize  # noqa: E402
from splatlab.sh import eval_sh, rgb_to_sh0  # noqa: E402
from splatlab.train.events import EndEvent, EvalEvent, MessageEvent, SnapshotEvent, StepEvent  # noqa: E402
from splatlab.viewer import (  # noqa: E402
    Viewer, ViewState, camera_from_view, float16_scale_for, load_training_cameras, splat_arrays, training_cameras,
    view_model, view_rgbs,
)
from splatlab.viewer.cameras import dataset_of_run, viser_pose  # noqa: E402
from splatlab.viewer.headless import HeadlessBrowser, find_chromium, psnr  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
SHARED = REPO.parent / "shared" / "data"
SH_C0 = 0.28209479177387814


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shiny_cube(n: int = 3000, seed: int = 0, sh_amplitude: float = 0.25) -> Gaussians:
    """Gaussians filling a cube, SH degree 3 with strong view-dependent terms, opacities 0.3..0.8
    (below the renderer's 0.99 cap) and sizes that cover several pixels at 800x600."""
    gen = torch.Generator().manual_seed(seed)
    rgb = torch.rand(n, 3, generator=gen) * 0.6 + 0.2
    return Gaussians(
        means=(torch.rand(n, 3, generator=gen) - 0.5) * 1.6,
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1),
        log_scales=torch.log(torch.rand(n, 3, generator=gen) * 0.05 + 0.03),
        logit_opacities=torch.logit(torch.rand(n, generator=gen) * 0.5 + 0.3),
        sh0=rgb_to_sh0(rgb).unsqueeze(1),
        shN=torch.randn(n, 15, 3, generator=gen) * sh_amplitude,
    )


def orbit_view(azimuth_deg: float, width: int = 800, height: int = 600, distance: float = 3.4,
               elevation: float = 0.45, fov_deg: float = 50.0) -> ViewState:
    """A browser-style camera state on a circle around the origin, +z up."""
    a = math.radians(azimuth_deg)
    eye = (distance * math.cos(a), distance * math.sin(a), distance * elevation)
    cam = Camera.look_at(eye, (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), fov_x=1.0, width=width, height=height)
    wxyz, position, _ = viser_pose(cam)
    return ViewState(tuple(position), tuple(wxyz), math.radians(fov_deg), width, height)


# ---- conversion and colour (no server) -------------------------------------------------------


def test_splat_arrays_matches_the_activations():
    gen = torch.Generator().manual_seed(1)
    g = Gaussians.random(300, sh_degree=1, generator=gen)
    g.quats = torch.randn(300, 4, generator=gen) * 3.0  # unnormalised, as raw parameters are
    g.log_scales = torch.randn(300, 3, generator=gen) - 3.0
    g.logit_opacities = torch.randn(300, generator=gen)
    g.sh0 = torch.randn(300, 1, 3, generator=gen)

    a = splat_arrays(g)
    assert len(a) == a.total == 300 and a.dropped_nonfinite == 0 and a.sh_degree == 1
    assert a.centers.dtype == np.float32 and a.centers.shape == (300, 3)
    np.testing.assert_allclose(a.centers, g.means.numpy())
    # Sigma = R S S^T R^T with R from the normalised quaternion (w, x, y, z), written out here.
    q = torch.nn.functional.normalize(g.quats.double(), dim=-1).numpy()
    w, x, y, z = q.T
    R = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(-1, 3, 3)  # fmt: skip
    S = np.exp(g.log_scales.double().numpy())
    sigma = np.einsum("nij,nj,nkj->nik", R, S**2, R)
    scale = np.trace(sigma, axis1=1, axis2=2)[:, None, None]  # float32 cancellation is relative to this
    assert (np.abs(a.covariances - sigma) <= 1e-5 * scale).all()
    np.testing.assert_allclose(a.rgbs, np.clip(0.5 + SH_C0 * g.sh0[:, 0].numpy(), 0, 1), atol=1e-6)
    np.testing.assert_allclose(a.opacities[:, 0], torch.sigmoid(g.logit_opacities).numpy(), atol=1e-6)
    assert torch.equal(a.sh, torch.cat([g.sh0, g.shN], 1))

    # The float16 scale k: positions x k, covariances x k^2 ...
    k = float16_scale_for(a.sigma_median)
    assert k == 2.0 ** round(-math.log2(a.sigma_median))
    b = splat_arrays(g, scale=k)
    np.testing.assert_allclose(b.centers, a.centers * k, rtol=1e-6)
    assert (np.abs(b.covariances / (k * k) - sigma) <= 1e-5 * scale).all()

    # ... which keeps small Gaussians (sigma ~ 2.5e-3 here) out of float16's subnormal range.
    def f16_error(c):  # worst per-Gaussian error of the float16 round trip, relative to its trace
        diff = np.abs(c.astype(np.float16).astype(np.float64) - c).max(axis=(1, 2))
        return (diff / np.trace(c, axis1=1, axis2=2)).max()

    g.log_scales = g.log_scales - 3.0
    a = splat_arrays(g)
    b = splat_arrays(g, scale=float16_scale_for(a.sigma_median))
    assert f16_error(b.covariances) < 1e-3 < f16_error(a.covariances)


def test_splat_arrays_drops_nonfinite_and_subsamples():
    g = Gaussians.random(1000, sh_degree=2, generator=torch.Generator().manual_seed(2))
    g.means[5, 0] = float("nan")
    g.log_scales[7, 1] = float("inf")
    g.shN[9, 3, 2] = float("nan")  # a broken higher SH coefficient would poison the colour
    a = splat_arrays(g)
    assert a.total == 1000 and a.dropped_nonfinite == 3 and len(a) == 997
    assert np.isfinite(a.covariances).all() and np.isfinite(a.centers).all() and torch.isfinite(a.sh).all()
    b = splat_arrays(g, max_gaussians=100)
    c = splat_arrays(g, max_gaussians=100)
    assert len(b) == 100 and np.array_equal(b.centers, c.centers)  # seeded: stable between updates
    g.log_scales[0] = 20.0  # huge Gaussians are clamped so no covariance term overflows float16
    assert np.isfinite(splat_arrays(g).covariances.astype(np.float16)).all()


def test_view_rgbs_is_the_renderers_colour_for_the_camera_position():
    g = shiny_cube(500, seed=3)
    a = splat_arrays(g, scale=8.0)  # directions do not depend on the float16 scale
    for eye in ([3.0, 0.5, 1.0], [-2.0, 2.0, -1.0]):
        campos = torch.tensor(eye)
        dirs = torch.nn.functional.normalize(g.means - campos, dim=-1)
        expected = eval_sh(3, g.sh, dirs).clamp(0, 1).numpy()  # the renderer's formula (reference.py)
        np.testing.assert_allclose(view_rgbs(a, np.array(eye)), expected, atol=2e-6)
        low = eval_sh(1, g.sh, dirs).clamp(0, 1).numpy()
        np.testing.assert_allclose(view_rgbs(a, np.array(eye), degree=1), low, atol=2e-6)
    # The colour really depends on the view, and no camera / degree 0 is the DC colour.
    assert np.abs(view_rgbs(a, np.array([3.0, 0, 0])) - view_rgbs(a, np.array([-3.0, 0, 0]))).mean() > 0.05
    assert view_rgbs(a, None) is a.rgbs and view_rgbs(a, np.array([3.0, 0, 0]), degree=0) is a.rgbs


# ---- cameras ---------------------------------------------------------------------------------------


def test_camera_from_view_follows_viser_conventions():
    # A viser camera at +x looking at the origin with +z up (OpenCV axes: +y down), fov vertical.
    eye, fov, w, h = np.array([4.0, 0.0, 0.0]), math.radians(60), 640, 480
    forward, up = -eye / np.linalg.norm(eye), np.array([0.0, 0.0, 1.0])
    right = np.cross(forward, up)
    rot = np.stack([right, np.cross(forward, right), forward], axis=1)  # columns: camera x, y, z in world
    from splatlab.geometry import rotmat_to_quat

    wxyz = rotmat_to_quat(torch.from_numpy(rot)).numpy()
    cam = camera_from_view(ViewState(tuple(eye), tuple(wxyz), fov, w, h))
    assert cam.fy == pytest.approx((h / 2) / math.tan(fov / 2)) and cam.fx == cam.fy
    assert (cam.cx, cam.cy) == (w / 2, h / 2)

    def project(p):
        x = cam.viewmat.numpy() @ np.append(p, 1.0)
        return cam.fx * x[0] / x[2] + cam.cx, cam.fy * x[1] / x[2] + cam.cy

    assert project([0.0, 0.0, 0.0]) == pytest.approx((w / 2, h / 2))
    u, v = project([0.0, 0.0, 1.0])  # world up is up in the image ...
    assert u == pytest.approx(w / 2) and v < h / 2 - 50
    u, v = project([0.0, 1.0, 0.0])  # ... and +y is to the right when looking down -x with +z up
    assert u > w / 2 + 50 and v == pytest.approx(h / 2)
    # Another pixel size keeps the field of view; viser_pose is the inverse mapping.
    half = camera_from_view(ViewState(tuple(eye), tuple(wxyz), fov, w, h), 320, 240)
    assert half.fy == pytest.approx(cam.fy / 2)
    wxyz2, pos2, fov2 = viser_pose(cam)
    again = camera_from_view(ViewState(tuple(pos2), tuple(wxyz2), fov2, w, h))
    torch.testing.assert_close(again.viewmat, cam.viewmat, atol=1e-9, rtol=0)


def _views_around(n: int, up=(0.0, 0.0, 1.0), size=(48, 32)):
    from splatlab.data import View

    views = []
    for i in range(n):
        a = 2 * math.pi * i / n
        eye = torch.tensor([3 * math.cos(a), 3 * math.sin(a), 1.0], dtype=torch.float64)
        up_t = torch.tensor(up, dtype=torch.float64)
        # Tilt the whole capture: "up" of the rig is `up`, the cameras look at the origin.
        from splatlab.geometry import rotation_to_z_up

        tilt = rotation_to_z_up(up_t).T  # +z -> up
        cam = Camera.look_at((tilt @ eye).tolist(), (0.0, 0.0, 0.0), up_t.tolist(), fov_x=1.0, width=size[0],
                             height=size[1], name=f"v{i:02d}")
        image = torch.full((size[1], size[0], 3), 40 * i % 255, dtype=torch.uint8)
        views.append(View(camera=cam, image=image, name=f"v{i:02d}"))
    return views


def test_training_cameras_give_up_target_and_first_view():
    up = np.array([0.0, 0.6, 0.8])  # a capture whose world frame is tilted: up is not an axis
    tc = training_cameras(list(reversed(_views_around(12, up=tuple(up)))), Path("somewhere"))
    assert tc.names[0] == "v00" and len(tc) == 12  # sorted by name
    np.testing.assert_allclose(tc.up, up, atol=1e-6)
    np.testing.assert_allclose(tc.target, 0.0, atol=1e-6)
    position, target, fov = tc.start_pose()
    np.testing.assert_allclose(position, tc.cameras[0].position.numpy(), atol=1e-9)
    assert fov == pytest.approx(2 * math.atan(16 / tc.cameras[0].fy))
    assert tc.spread == pytest.approx(math.sqrt(10.0), rel=1e-6)
    thumb = tc.thumbnail(3)
    assert thumb.shape == (32, 48, 3) and abs(int(thumb.mean()) - 120) <= 2  # image 3 is all 120s


def test_dataset_of_run_resolves_relative_paths(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (tmp_path / "runs" / "data").mkdir()
    (run / "config.json").write_text(json.dumps({"data": {"path": "data", "downscale": 2}}))
    monkeypatch.chdir(tmp_path)  # "data" does not exist here: found next to the run folder
    path, options = dataset_of_run(run)
    assert path == run.parent / "data" and options["downscale"] == 2
    (tmp_path / "data").mkdir()  # now it exists from the current folder, where `train` ran
    assert dataset_of_run(run)[0] == Path("data")
    assert dataset_of_run(tmp_path) == (None, {})  # no config.json
    (run / "config.json").write_text("{not json")
    with pytest.warns(RuntimeWarning, match="config.json"):
        assert dataset_of_run(run) == (None, {})


@pytest.mark.skipif(not (SHARED / "statue_colmap").is_dir(), reason="../shared/data/statue_colmap not present")
def test_a_colmap_capture_is_shown_upright():
    """COLMAP's world frame is arbitrary: the statue's cameras' up is ~17 degrees off every axis."""
    tc = load_training_cameras(SHARED / "statue_colmap", {"downscale": 4})
    expected = up_from_cameras(torch.stack([c.c2w for c in tc.cameras])).numpy()
    np.testing.assert_allclose(tc.up, expected)
    assert min(math.degrees(math.acos(min(1.0, abs(float(tc.up[i]))))) for i in range(3)) > 10
    viewer = Viewer(Gaussians.random(100, sh_degree=0), port=free_port(), cameras=tc)
    try:
        assert viewer.framing.up_name == "cameras"
        np.testing.assert_allclose(viewer.server.initial_camera.up, tc.up)
        np.testing.assert_allclose(viewer.server.initial_camera.position, tc.cameras[0].position.numpy())
        assert viewer.state.background == (0, 0, 0)  # COLMAP images: trained over black
        assert len(viewer.camera_panel.frustums) == len(tc)
    finally:
        viewer.close()


# ---- the viewer thread, with fake browsers ---------------------------------------------------------


class FakeHandle:
    """What ClientView uses of a viser GaussianSplatHandle."""

    def __init__(self, rgbs, visible, scale) -> None:
        self.rgbs, self.visible, self.scale = rgbs, visible, scale
        self.color_sets = 0

    def set_gaussians(self, centers, covariances, rgbs, opacities) -> None:
        self.__dict__["rgbs"] = rgbs  # a model push, not a colour push

    def __setattr__(self, name, value) -> None:
        if name == "rgbs" and "rgbs" in self.__dict__:
            self.__dict__["color_sets"] = self.__dict__.get("color_sets", 0) + 1
        super().__setattr__(name, value)


class FakeBrowser:
    """A viser ClientHandle stand-in: a scene that records what it is sent, and a movable camera."""

    def __init__(self, client_id: int) -> None:
        self.client_id = client_id
        self.splats = None
        self.backgrounds: list[np.ndarray] = []
        self._camera_callbacks = []
        outer = self

        class Scene:
            def add_gaussian_splats(self, name, centers, covariances, rgbs, opacities, scale, visible):
                outer.splats = FakeHandle(rgbs, visible, scale)
                return outer.splats

            def set_background_image(self, image, format="png", jpeg_quality=None, depth=None):
                outer.backgrounds.append(image)

        class CameraApi:
            def on_update(self, fn):
                outer._camera_callbacks.append(fn)
                return fn

        self.scene, self.camera = Scene(), CameraApi()

    @contextlib.contextmanager
    def atomic(self):
        yield

    def move(self, view: ViewState) -> None:
        cam = type("Cam", (), dict(position=view.position, wxyz=view.wxyz, fov=view.fov,
                                   image_width=view.width, image_height=view.height))
        for fn in self._camera_callbacks:
            fn(cam)

    @property
    def showing_still(self) -> bool:
        return bool(self.backgrounds) and self.backgrounds[-1].shape[0] > 4


def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_each_browser_gets_colours_for_its_camera_then_the_exact_render():
    model = shiny_cube(1500, seed=4)
    viewer = Viewer(model, port=free_port(), still_render=True, still_delay=0.3, color_interval=0.2,
                    background=(1.0, 1.0, 1.0))
    a, b = FakeBrowser(101), FakeBrowser(102)
    try:
        for browser, azimuth in ((a, 0.0), (b, 120.0)):
            viewer._on_connect(browser)
            browser.move(orbit_view(azimuth, 160, 120))
        assert viewer.flush()
        arrays = viewer.model.arrays
        for browser, azimuth in ((a, 0.0), (b, 120.0)):  # each sees the SH for its own position
            expected = view_rgbs(arrays, np.array(orbit_view(azimuth).position))
            np.testing.assert_allclose(browser.splats.rgbs, expected, atol=1e-6)
            assert browser.backgrounds[0].shape == (4, 4, 3) and (browser.backgrounds[0] == 255).all()

        # Both rest: each gets splatlab's render of its own view, and its splats are hidden.
        wait_until(lambda: a.showing_still and b.showing_still, what="the exact renders")
        for browser, azimuth in ((a, 0.0), (b, 120.0)):
            view = orbit_view(azimuth, 160, 120)
            with torch.no_grad():
                ref = rasterize(model, camera_from_view(view), RenderSettings(background=(1.0, 1.0, 1.0))).image
            assert psnr(browser.backgrounds[-1], (ref.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()) > 50
            assert browser.splats.visible is False

        # A drags for 1.2 s: throttled colour pushes while it moves, the splats come back at
        # once, and the last colours are for where it stopped.
        pushes_before, b_pushes, t0 = a.splats.color_sets, b.splats.color_sets, time.monotonic()
        for i in range(1, 41):
            a.move(orbit_view(i * 2.0, 160, 120))
            time.sleep(0.03)
            if i == 2:
                wait_until(lambda: a.splats.visible, timeout=5, what="the splats to come back")
        moving = time.monotonic() - t0
        assert viewer.flush()
        np.testing.assert_allclose(a.splats.rgbs, view_rgbs(arrays, np.array(orbit_view(80.0).position)), atol=1e-6)
        pushes = a.splats.color_sets - pushes_before
        assert 2 <= pushes <= 2 + math.ceil(moving / 0.2), pushes
        assert b.splats.color_sets == b_pushes and b.showing_still  # B did not move: untouched
        wait_until(lambda: a.showing_still, what="A's exact render after it stopped")

        # DC colour only: every browser's colours and exact images are redone.
        stills = viewer.display.num_still_renders
        viewer.view_dependent = False
        assert viewer.flush()
        np.testing.assert_allclose(a.splats.rgbs, arrays.rgbs)
        wait_until(lambda: viewer.display.num_still_renders >= stills + 2, what="exact renders without SH")
        # Points mode: no exact images; splats hidden; the background is solid again.
        viewer.show_points = True
        wait_until(lambda: not a.showing_still and not b.showing_still, timeout=10, what="points mode")
        assert a.splats.visible is False and viewer.points.handle is not None
        assert viewer.last_error is None, viewer.last_error
    finally:
        viewer.close()


def test_an_exact_render_outrun_by_the_camera_is_dropped(monkeypatch):
    import splatlab.viewer.display as display

    started, release = threading.Event(), threading.Event()
    real = display.render_still

    def slow_render(*args, **kwargs):
        started.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(display, "render_still", slow_render)
    viewer = Viewer(shiny_cube(300), port=free_port(), still_render=True, still_delay=0.05)
    browser = FakeBrowser(7)
    try:
        viewer._on_connect(browser)
        browser.move(orbit_view(0.0, 64, 48))
        assert started.wait(10)
        browser.move(orbit_view(30.0, 64, 48))  # moves while the first view is being rendered
        release.set()
        wait_until(lambda: browser.showing_still, what="the render of the second view")
        key = viewer.clients[7].still_key
        assert key[0] == viewer.clients[7].version  # the first view's image was never shown
        assert sum(bg.shape[0] > 4 for bg in browser.backgrounds) == 1
    finally:
        release.set()
        viewer.close()


def test_an_empty_model_shows_the_background_then_a_model_arrives():
    viewer = Viewer(Gaussians.empty(sh_degree=3), port=free_port(), still_delay=0.05, background=(0.0, 0.0, 1.0))
    browser = FakeBrowser(3)
    try:
        viewer._on_connect(browser)
        browser.move(orbit_view(10.0, 64, 48))
        wait_until(lambda: browser.showing_still, what="the exact render of nothing")
        assert (browser.backgrounds[-1] == (0, 0, 255)).all()  # just the background
        viewer.update(shiny_cube(100), force=True)
        assert viewer.flush() and viewer.model.arrays.total == 100
        wait_until(lambda: browser.showing_still and (browser.backgrounds[-1] != (0, 0, 255)).any(), what="the model")
        assert viewer.last_error is None, viewer.last_error
    finally:
        viewer.close()


# ---- following a training run ---------------------------------------------------------------------


class FakeRun:
    """What Viewer.attach may use of a run: subscribe() and live_gaussians()."""

    def __init__(self, gaussians: Gaussians) -> None:
        self.gaussians = gaussians
        self.subscribers = []
        self.live_calls = 0

    def subscribe(self, fn) -> None:
        self.subscribers.append(fn)

    def live_gaussians(self):
        self.live_calls += 1
        return self.gaussians.detach()

    def emit(self, event) -> None:
        for fn in self.subscribers:
            fn(event)


class FakeTrainer:
    """Today's Trainer as the viewer sees it: subscribe() and `params`, no live_gaussians()."""

    def __init__(self, params: Gaussians) -> None:
        self.params = params
        self.subscribers = []

    def subscribe(self, fn) -> None:
        self.subscribers.append(fn)

    def emit(self, event) -> None:
        for fn in self.subscribers:
            fn(event)


def test_attach_follows_events_throttled_without_blocking_training(tmp_path):
    g0 = Gaussians.random(500, sh_degree=0, generator=torch.Generator().manual_seed(3))
    viewer = Viewer(port=free_port(), min_interval=0.6)
    try:
        slow = threading.Event()
        real_push = viewer.display.push_model

        def slow_push(gaussians):  # a slow browser link: 0.2 s per model push
            slow.set()
            time.sleep(0.2)
            real_push(gaussians)

        viewer.display.push_model = slow_push
        run = FakeRun(g0)
        callback = viewer.attach(run, every=2)
        assert run.subscribers == [callback] and viewer.still_render is False  # training has the CPU

        # 60 StepEvents over ~1.5 s, with densification growing the model: 30 model stashes.
        worst = 0.0
        t_start = time.monotonic()
        for i in range(1, 61):
            n = 500 + 10 * i
            run.gaussians = Gaussians.random(n, sh_degree=0, generator=torch.Generator().manual_seed(i))
            event = StepEvent(step=10 * i, total=600, loss=1.0 / i, psnr=20.0 + i / 10, num_gaussians=n,
                              its_per_sec=100.0, elapsed=i / 10)
            t0 = time.perf_counter()
            run.emit(event)
            worst = max(worst, time.perf_counter() - t0)
            time.sleep(0.025)
        elapsed = time.monotonic() - t_start
        assert run.live_calls == 30  # every 2nd StepEvent, on the training thread (O(1) views)
        assert slow.is_set(), "the viewer thread never pushed a model"
        assert worst < 0.05, f"a training callback took {worst * 1e3:.1f} ms: training waited on the viewer"
        assert 1 <= viewer.display.num_pushes <= 1 + math.ceil(elapsed / 0.6), viewer.display.num_pushes

        # A snapshot and the end of training: the newest model always arrives (trailing edge).
        snap = Gaussians.random(123, sh_degree=0, generator=torch.Generator().manual_seed(99))
        run.emit(SnapshotEvent(step=600, gaussians=snap, ply_path=None))
        assert viewer.flush(timeout=10)
        assert viewer.model.arrays.total == 123 and viewer.last_pushed_step == 600
        run.emit(EvalEvent(step=600, metrics={"psnr": 25.5, "ssim": 0.9, "lpips": None}))
        run.emit(MessageEvent("opacity reset", level="info"))
        assert viewer.flush(timeout=10) and "opacity reset" in viewer.gui.info.content
        run.gaussians = g0
        pushes = viewer.display.num_pushes
        run.emit(EndEvent(step=600, reason="completed", output=tmp_path))
        assert viewer.flush(timeout=10)
        assert viewer.display.num_pushes == pushes + 1 and viewer.model.arrays.total == 500
        info = viewer.gui.info.content
        for text in ("Gaussians:** 500", "Step:** 600 / 600", "PSNR (test):** 25.5", "finished at step 600"):
            assert text in info, info
        assert viewer.still_render is True  # training is over: exact renders are back on
        assert viewer.last_error is None, viewer.last_error
    finally:
        viewer.close()
    run.emit(StepEvent(1, 1, 0.0, 0.0, 1, 0.0, 0.0))  # after close: a silent no-op


def test_attach_falls_back_to_a_trainers_params():
    trainer = FakeTrainer(Gaussians.random(77, sh_degree=0, generator=torch.Generator().manual_seed(5)))
    with Viewer(port=free_port(), min_interval=0.0) as viewer:
        viewer.attach(trainer)
        trainer.emit(StepEvent(step=5, total=10, loss=0.1, psnr=20.0, num_gaussians=77, its_per_sec=0.0, elapsed=1.0))
        assert viewer.flush(timeout=10)
        assert viewer.model.arrays.total == 77 and viewer.last_error is None


# ---- view_model and `splatlab view` ---------------------------------------------------------------


def test_view_model_reads_any_format_and_passes_read_errors_through(tmp_path, capsys):
    from splatlab.io import read_model

    missing = tmp_path / "nope.ply"
    with pytest.raises(Exception, match=re.escape(str(missing))):
        view_model(missing, port=free_port(), block=False)
    broken = tmp_path / "broken.ply"
    broken.write_bytes(b"ply\nformat ascii 1.0\nend_header\n")
    with pytest.raises(Exception) as expected:
        read_model(broken)
    with pytest.raises(type(expected.value)) as got:  # the reader's error, unchanged
        view_model(broken, port=free_port(), block=False)
    assert str(got.value) == str(expected.value)

    model = shiny_cube(200, seed=6)
    glb = export_model(tmp_path / "model.glb", model)
    viewer = view_model(glb, port=free_port(), block=False)
    try:
        assert viewer.display.num_pushes == 1 and viewer.model.arrays.total == 200
        assert viewer.model.arrays.sh_degree == 3  # glTF keeps the SH
        assert viewer.url in capsys.readouterr().out
        with urllib.request.urlopen(viewer.url, timeout=10) as r:  # the client page is served
            assert r.status == 200 and b"<html" in r.read(4096).lower()
        # No cameras: +z up, and the first view frames the model from above one side.
        cam = viewer.server.initial_camera
        assert viewer.camera_panel is None and viewer.framing.up_name == "+z"
        assert np.allclose(cam.look_at, 0.0, atol=0.15) and cam.position[2] > cam.look_at[2]
        viewer.gui.up.value = "-y"
        assert cam.position[1] < cam.look_at[1] - 0.1
    finally:
        viewer.close()
    with pytest.raises(ValueError, match="needs the training cameras"):
        view_model(glb, port=free_port(), up_direction="cameras", block=False)


@pytest.mark.skipif(not (SHARED / "lego_400").is_dir(), reason="../shared/data/lego_400 not present")
def test_view_model_of_a_run_folder_shows_its_training_cameras(tmp_path):
    run = tmp_path / "run"
    (run / "point_cloud" / "iteration_7").mkdir(parents=True)
    write_ply(run / "point_cloud" / "iteration_7" / "point_cloud.ply", shiny_cube(300))
    (run / "config.json").write_text(json.dumps({"data": {"path": str(SHARED / "lego_400")}}))
    viewer = view_model(run, port=free_port(), block=False)
    try:
        tc = viewer.cameras
        assert tc is not None and len(tc) == 100 and tc.names[0] == "train/r_0"
        assert np.degrees(np.arccos(tc.up[2])) < 10  # Blender's world is z-up
        np.testing.assert_allclose(viewer.server.initial_camera.position, tc.cameras[0].position.numpy())
        np.testing.assert_allclose(viewer.server.initial_camera.look_at, 0.0, atol=1e-6)  # what the cameras circle
        assert viewer.state.background == (255, 255, 255)  # lego's RGBA images are composited over white
        assert len(viewer.camera_panel.frustums) == 100
        viewer.camera_panel.select(3)  # sorted by name: r_0, r_1, r_10, r_11, ...
        assert "train/r_11" in viewer.camera_panel.label.content
        assert viewer.camera_panel.image.visible and viewer.camera_panel.goto.visible
        viewer.camera_panel.show.value = False
        assert not any(f.visible for f in viewer.camera_panel.frustums)
    finally:
        viewer.close()
    # A run whose dataset is gone still opens, without cameras, with a warning that says so.
    (run / "config.json").write_text(json.dumps({"data": {"path": str(tmp_path / "gone")}}))
    with pytest.warns(RuntimeWarning, match="cannot load the training cameras"):
        viewer = view_model(run, port=free_port(), block=False)
    viewer.close()
    assert viewer.cameras is None


def test_splatlab_view_arguments_and_errors(tmp_path, capsys):
    from splatlab.cli import main

    model = write_ply(tmp_path / "m.ply", shiny_cube(50))
    assert main(["view", str(model), "--max-gaussians", "0"]) == 2
    assert main(["view", str(model), "--background", "2", "0", "0"]) == 2
    assert "error: --background must be three numbers in [0, 1]" in capsys.readouterr().err
    assert main(["view", str(tmp_path / "none.ply")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none.ply" in err
    assert main(["view", str(model), "--up", "cameras", "--port", str(free_port())]) == 1
    assert "pass --data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["view", str(model), "--up", "sideways"])
    assert exit_info.value.code == 2


def _wait_for_line(log: Path, pattern: str, proc: subprocess.Popen, timeout: float) -> re.Match:
    """The first match of `pattern` in the child's log, waiting for it to appear."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found
        assert proc.poll() is None, f"splatlab view exited with {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {pattern!r} within {timeout:g} s:\n{log.read_text()}"
        time.sleep(0.1)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_splatlab_view_serves_until_interrupted(tmp_path, sig):
    """Ctrl-C (or SIGTERM) stops `splatlab view`: it prints "stopped" and exits 0.

    The child starts with SIGINT ignored, as a shell starts a background job (`cmd &`): Python
    then installs no Ctrl-C handler of its own, and the viewer once kept serving through
    SIGINT in CI runs launched that way. It writes to a file, not a pipe (a full, unread pipe
    would block its prints); if it does not stop, SIGABRT makes faulthandler dump every
    thread's stack into the failure."""
    model = export_model(tmp_path / "m.splat", shiny_cube(100))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONFAULTHANDLER": "1", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "view.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "splatlab.cli", "view", str(model), "--port", str(free_port())],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                preexec_fn=_ignore_sigint)
    try:
        url = _wait_for_line(log, r"http://[\w.:\-]+", proc, timeout=120).group(0)
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200
        proc.send_signal(sig)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            proc.wait(timeout=10)
            pytest.fail(f"splatlab view did not stop within 30 s of {sig.name}; its log and stacks:\n{log.read_text()}")
        assert code == 0 and "stopped" in log.read_text(), log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- a real browser ------------------------------------------------------------------------------


def _stable_screenshot(page: HeadlessBrowser, timeout: float = 60.0) -> np.ndarray:
    """A screenshot once two in a row, 1 s apart, agree and show something (software WebGL draws
    in seconds, and the canvas is one flat colour until the splats arrive)."""
    previous, deadline = None, time.monotonic() + timeout
    while True:
        time.sleep(1.0)
        shot = page.screenshot()
        if previous is not None and psnr(shot, previous) > 45 and int(shot.max()) - int(shot.min()) > 30:
            return shot
        assert time.monotonic() < deadline, "the viewer's picture did not settle"
        previous = shot


def _reference(model: Gaussians, view: ViewState, shape, background=(1.0, 1.0, 1.0), sh_degree=None) -> np.ndarray:
    cam = camera_from_view(view, shape[1], shape[0])
    with torch.no_grad():
        image = rasterize(model, cam, RenderSettings(background=background, sh_degree=sh_degree)).image
    return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def _set_view(client, position, look_at, up, fov) -> None:
    with client.atomic():
        client.camera.fov = fov
        client.camera.position = position
        client.camera.look_at = look_at
        client.camera.up_direction = up


def _reports(view: ViewState, position, look_at, fov) -> bool:
    """The browser's camera is at `position`, looks at `look_at` and has vertical fov `fov`."""
    forward = camera_from_view(view).c2w.numpy()[:3, 2]
    expected = np.subtract(look_at, position) / np.linalg.norm(np.subtract(look_at, position))
    return (np.allclose(view.position, position, atol=1e-6) and np.allclose(forward, expected, atol=1e-6)
            and abs(view.fov - fov) < 1e-6)


def test_browser_shows_view_dependent_colour_matching_splatlab_render():
    if os.environ.get("SPLATLAB_SKIP_BROWSER") == "1":
        pytest.skip("SPLATLAB_SKIP_BROWSER=1")
    chromium = find_chromium()
    if chromium is None:
        pytest.fail("chromium not found (looked at $SPLATLAB_CHROMIUM, /usr/bin/chromium, PATH): run "
                    "scripts/install_test_browser.sh, or set SPLATLAB_SKIP_BROWSER=1 to skip")
    from PIL import Image

    ARTIFACTS.mkdir(exist_ok=True)
    model = shiny_cube()
    cameras = training_cameras(_views_around(8), Path("synthetic"), background=(1.0, 1.0, 1.0))
    viewer = Viewer(model, port=free_port(), cameras=cameras, still_render=False)
    figures = {}
    try:
        with HeadlessBrowser(chromium, 800, 600, log=ARTIFACTS / "chromium.log") as page:
            page.goto(viewer.url)
            wait_until(lambda: any(c.view is not None for c in viewer.clients.values()), 60, "the browser")
            client = next(iter(viewer.clients.values()))
            # The first view is the first training camera's position, looking at the cameras' target
            # (the browser reports viser's default camera first, then the initial one it was sent).
            first = cameras.cameras[0].position.numpy()
            wait_until(lambda: np.allclose(client.view.position, first, atol=1e-6), 30, "the first view")
            text = page.evaluate("document.body.innerText") or ""
            assert "3,000" in text and "Training cameras" in text, text[:500]

            # "Go to camera" puts the browser exactly at a training camera (pose and vertical fov).
            viewer.camera_panel.go_to(client.client, 5)
            target = cameras.cameras[5]

            def at_target() -> bool:  # the browser applies position, look-at, up and fov one by one
                got = camera_from_view(client.view, target.width, target.height)
                return torch.allclose(got.viewmat, target.viewmat, atol=1e-5) and abs(got.fy / target.fy - 1) < 1e-4

            wait_until(at_target, 30, "the browser to reach training camera 5")

            viewer.camera_panel.show.value = False  # the comparison is about the splats
            pose = ((2.5, -2.0, 1.2), (0.0, 0.0, 0.0), math.radians(50))
            _set_view(client.client, pose[0], pose[1], (0.0, 0.0, 1.0), pose[2])
            wait_until(lambda: _reports(client.view, *pose), 30, "the camera")
            assert viewer.flush()
            page.hide_overlays()
            view = client.view

            # 1. Splats with colours for this camera vs. splatlab's renderer from the same camera.
            shot = _stable_screenshot(page)
            ref = _reference(model, view, shot.shape)
            dc_ref = _reference(model, view, shot.shape, sh_degree=0)
            figures["splats_sh_psnr"] = psnr(shot, ref)
            figures["render_sh_vs_dc_psnr"] = psnr(ref, dc_ref)  # how much the SH change the picture
            Image.fromarray(shot).save(ARTIFACTS / "viewer_splats.png")
            Image.fromarray(ref).save(ARTIFACTS / "viewer_reference.png")
            # 2. The DC colour only (what the viewer showed before): clearly further from the render.
            viewer.view_dependent = False
            assert viewer.flush()
            shot_dc = _stable_screenshot(page)
            figures["splats_dc_psnr"] = psnr(shot_dc, ref)
            viewer.view_dependent = True
            # 3. Exact when still: splatlab's own render, through JPEG.
            viewer.still_render = True
            assert viewer.wait_for_still(client.id, timeout=60)
            shot_still = _stable_screenshot(page)
            figures["still_psnr"] = psnr(shot_still, ref)
            Image.fromarray(shot_still).save(ARTIFACTS / "viewer_still.png")
            figures["still_render_s"] = viewer.display.still_cost

            # 4. A drag (viser's orbit control): frames drawn, colour pushes on the way, and the
            # last colours made for where the camera stopped.
            viewer.still_render = False
            pushes = viewer.display.num_color_pushes
            figures["drag_fps"] = page.drag(300, 300, 520, 330, steps=40, seconds=4.0)
            figures["drag_color_pushes"] = viewer.display.num_color_pushes - pushes
            figures["color_push_s"] = viewer.display.color_cost
            assert viewer.flush()
            assert not np.allclose(client.view.position, view.position)
            assert client.colors_key == viewer.state.colors_key(client)
            assert viewer.last_error is None, viewer.last_error
    finally:
        viewer.close()
        (ARTIFACTS / "viewer_metrics.json").write_text(json.dumps(figures, indent=2))
    print("\nviewer figures:", json.dumps(figures))
    assert figures["splats_sh_psnr"] >= 25.0, figures
    assert figures["render_sh_vs_dc_psnr"] < 25.0, figures  # the model's SH matter ...
    assert figures["splats_dc_psnr"] < figures["splats_sh_psnr"] - 5.0, figures  # ... and the viewer shows them
    assert figures["still_psnr"] >= 35.0, figures
    assert figures["drag_fps"] > 0.5 and figures["drag_color_pushes"] >= 2, figures


def test_splatlab_view_of_a_run_shows_what_its_evaluation_rendered_over(tmp_path, monkeypatch):
    import splatlab.viewer
    from splatlab.cli import main

    run = tmp_path / "run"
    (run / "point_cloud" / "iteration_7").mkdir(parents=True)
    write_ply(run / "point_cloud" / "iteration_7" / "point_cloud.ply", shiny_cube(30))
    (run / "metrics.json").write_text(json.dumps([{"psnr": 20.0, "background": [0.3, 0.4, 0.5]}]))
    seen = {}
    monkeypatch.setattr(splatlab.viewer, "view_model", lambda model, **kw: seen.update(kw))
    assert main(["view", str(run)]) == 0
    assert seen["background"] == (0.3, 0.4, 0.5)  # the colour learned behind a masked subject
    assert main(["view", str(run), "--background", "1", "1", "1"]) == 0 and seen["background"] == (1.0, 1.0, 1.0)
    (run / "metrics.json").write_text(json.dumps([{"psnr": 20.0}]))  # an older run: the viewer's own default
    assert main(["view", str(run)]) == 0 and seen["background"] is None

"""splatlab.viewer: conversion to viser's splats, throttled live updates, and a real browser render.

The browser test starts the viewer on a free localhost port, drives Debian's headless chromium
(software WebGL through SwiftShader) over the DevTools protocol until the splats are drawn,
and keeps the screenshots (and chromium's log) in test-artifacts/. Chromium comes from
scripts/install_test_browser.sh; set SPLATLAB_SKIP_BROWSER=1 to skip that test instead.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("viser", reason="the viewer needs viser: pip install 'viser>=1.1,<2'")

from splatlab.gaussians import Gaussians  # noqa: E402
from splatlab.io import write_ply  # noqa: E402
from splatlab.train.events import EndEvent, EvalEvent, SnapshotEvent, StepEvent  # noqa: E402
from splatlab.viewer import Viewer, float16_scale_for, splat_arrays, view_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
SH_C0 = 0.28209479177387814

# Flags for a headless chromium that reaches nothing but localhost, with software WebGL.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--window-size=800,600",
    "--hide-scrollbars",
    "--mute-audio",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def coloured_clusters(n_per: int = 600, seed: int = 0) -> Gaussians:
    """Three opaque blobs: red at -x, green at +x, yellow above (+z); small isotropic Gaussians."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-0.6, 0.0, 0.0], [0.6, 0.0, 0.0], [0.0, 0.0, 0.6]])
    colours = torch.tensor([[0.95, 0.05, 0.05], [0.05, 0.95, 0.05], [0.95, 0.95, 0.05]])
    means = (centres.repeat_interleave(n_per, 0) + 0.18 * torch.randn(3 * n_per, 3, generator=gen))
    rgb = colours.repeat_interleave(n_per, 0)
    n = means.shape[0]
    return Gaussians(
        means=means,
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1),
        log_scales=torch.log(torch.full((n, 3), 0.05)),
        logit_opacities=torch.full((n,), math.log(0.9 / 0.1)),
        sh0=((rgb - 0.5) / SH_C0).unsqueeze(1),
        shN=torch.zeros(n, 0, 3),
    )


# ---- conversion (no server) --------------------------------------------------------------------


def test_splat_arrays_matches_the_activations():
    gen = torch.Generator().manual_seed(1)
    g = Gaussians.random(300, sh_degree=1, generator=gen)
    g.quats = torch.randn(300, 4, generator=gen) * 3.0  # unnormalised, as raw parameters are
    g.log_scales = torch.randn(300, 3, generator=gen) - 3.0
    g.logit_opacities = torch.randn(300, generator=gen)
    g.sh0 = torch.randn(300, 1, 3, generator=gen)

    a = splat_arrays(g)
    assert len(a) == a.total == 300 and a.dropped_nonfinite == 0
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
    assert a.opacities.shape == (300, 1)
    np.testing.assert_allclose(a.opacities[:, 0], torch.sigmoid(g.logit_opacities).numpy(), atol=1e-6)

    # The float16 scale k: positions x k, covariances x k^2.
    k = float16_scale_for(a.sigma_median)
    assert k == 2.0 ** round(-math.log2(a.sigma_median))
    b = splat_arrays(g, scale=k)
    np.testing.assert_allclose(b.centers, a.centers * k, rtol=1e-6)
    assert (np.abs(b.covariances / (k * k) - sigma) <= 1e-5 * scale).all()

    # ...which keeps small Gaussians (sigma ~ 2.5e-3 here) out of float16's subnormal range.
    def f16_error(c):  # worst per-Gaussian error of the float16 round trip, relative to its trace
        diff = np.abs(c.astype(np.float16).astype(np.float64) - c).max(axis=(1, 2))
        return (diff / np.trace(c, axis1=1, axis2=2)).max()

    g.log_scales = g.log_scales - 3.0
    a = splat_arrays(g)
    b = splat_arrays(g, scale=float16_scale_for(a.sigma_median))
    assert f16_error(b.covariances) < 1e-3 < f16_error(a.covariances)


def test_splat_arrays_drops_nonfinite_and_subsamples():
    g = Gaussians.random(1000, sh_degree=0, generator=torch.Generator().manual_seed(2))
    g.means[5, 0] = float("nan")
    g.log_scales[7, 1] = float("inf")
    a = splat_arrays(g)
    assert a.total == 1000 and a.dropped_nonfinite == 2 and len(a) == 998
    assert np.isfinite(a.covariances).all() and np.isfinite(a.centers).all()
    b = splat_arrays(g, max_gaussians=100)
    c = splat_arrays(g, max_gaussians=100)
    assert len(b) == 100 and np.array_equal(b.centers, c.centers)  # seeded: stable between updates
    # Huge Gaussians are clamped so no covariance term overflows float16.
    g.log_scales[0] = 20.0
    assert np.isfinite(splat_arrays(g).covariances.astype(np.float16)).all()


# ---- live updates without a browser ----------------------------------------------------------


class FakeTrainer:
    """What Viewer.attach uses of a Trainer: subscribe() and the live `params`."""

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
        real_push = viewer._push_model

        def slow_push(gaussians):  # a slow browser link: 0.2 s per model push
            slow.set()
            time.sleep(0.2)
            real_push(gaussians)

        viewer._push_model = slow_push
        trainer = FakeTrainer(g0)
        callback = viewer.attach(trainer, every=2)
        assert trainer.subscribers == [callback]

        # 60 StepEvents over ~1.5 s, with densification growing the model: 30 model stashes.
        worst = 0.0
        t_start = time.monotonic()
        for i in range(1, 61):
            n = 500 + 10 * i
            trainer.params = Gaussians.random(n, sh_degree=0, generator=torch.Generator().manual_seed(i))
            event = StepEvent(step=10 * i, total=600, loss=1.0 / i, psnr=20.0 + i / 10, num_gaussians=n,
                              its_per_sec=100.0, elapsed=i / 10)
            t0 = time.perf_counter()
            trainer.emit(event)
            worst = max(worst, time.perf_counter() - t0)
            time.sleep(0.025)
        elapsed = time.monotonic() - t_start
        assert slow.is_set(), "the viewer thread never pushed a model"
        assert worst < 0.05, f"a trainer callback took {worst * 1e3:.1f} ms: training waited on the viewer"
        # Throttled: one push at once, then at most one per min_interval (0.6 s).
        assert 1 <= viewer.num_pushes <= 1 + math.ceil(elapsed / 0.6), viewer.num_pushes

        # A snapshot and the end of training: the newest model always arrives (trailing edge).
        snap = Gaussians.random(123, sh_degree=0, generator=torch.Generator().manual_seed(99))
        trainer.emit(SnapshotEvent(step=600, gaussians=snap, ply_path=None))
        assert viewer.flush(timeout=10)
        assert viewer._arrays.total == 123 and viewer.last_pushed_step == 600
        trainer.emit(EvalEvent(step=600, metrics={"psnr": 25.5, "ssim": 0.9, "lpips": None}))
        trainer.params = g0
        pushes = viewer.num_pushes
        trainer.emit(EndEvent(step=600, reason="completed", output=tmp_path))
        assert viewer.flush(timeout=10)
        assert viewer.num_pushes == pushes + 1 and viewer._arrays.total == 500
        info = viewer._gui_info.content
        for text in ("Gaussians:** 500", "Step:** 600 / 600", "PSNR (test):** 25.5", "finished at step 600"):
            assert text in info, info
        assert viewer.last_error is None, viewer.last_error
    finally:
        viewer.close()
    trainer.emit(StepEvent(1, 1, 0.0, 0.0, 1, 0.0, 0.0))  # after close: a silent no-op


def test_view_model_serves_a_ply_and_passes_read_errors_through(tmp_path, capsys):
    missing = tmp_path / "nope.ply"
    from splatlab.io import read_ply

    with pytest.raises(Exception) as expected:
        read_ply(missing)
    with pytest.raises(type(expected.value)) as got:
        view_model(missing, port=free_port(), block=False)
    assert str(got.value) == str(expected.value)

    path = write_ply(tmp_path / "model.ply", coloured_clusters(50))
    viewer = view_model(path, port=free_port(), block=False)
    try:
        assert viewer.num_pushes == 1 and viewer._arrays.total == 150
        assert viewer.url in capsys.readouterr().out
        with urllib.request.urlopen(viewer.url, timeout=10) as r:  # the client page is served
            assert r.status == 200 and b"<html" in r.read(4096).lower()
        # The camera starts framing the model; changing the up direction re-frames it.
        cam = viewer.server.initial_camera
        assert np.allclose(cam.look_at, [0.0, 0.0, 0.2], atol=0.15) and cam.position[2] > cam.look_at[2]
        viewer._gui_up.value = "-y"
        assert cam.position[1] < cam.look_at[1] - 0.1
        viewer.show_points = True
        assert viewer._points is not None and viewer._splats.visible is False
    finally:
        viewer.close()


# ---- a real browser ------------------------------------------------------------------------------


def find_chromium() -> str | None:
    for candidate in (os.environ.get("SPLATLAB_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page (synchronous websocket)."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=10)
        self.next_id = 0

    def call(self, method: str, timeout: float = 20.0, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        self.ws.close()


def colour_counts(png: bytes) -> dict[str, int]:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int32)  # [H, W, 3]
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return {
        "red": int(((r > 150) & (g < 90) & (b < 90)).sum()),
        "green": int(((g > 150) & (r < 90) & (b < 90)).sum()),
        "yellow": int(((r > 150) & (g > 150) & (b < 90)).sum()),
        "distinct": len(np.unique(img.reshape(-1, 3), axis=0)),
    }


def test_browser_renders_the_splats():
    if os.environ.get("SPLATLAB_SKIP_BROWSER") == "1":
        pytest.skip("SPLATLAB_SKIP_BROWSER=1")
    chromium = find_chromium()
    if chromium is None:
        pytest.fail(
            "chromium not found (looked at $SPLATLAB_CHROMIUM, /usr/bin/chromium, PATH): run "
            "scripts/install_test_browser.sh to install Debian's chromium, or set SPLATLAB_SKIP_BROWSER=1 to skip"
        )
    ARTIFACTS.mkdir(exist_ok=True)
    model = coloured_clusters()
    viewer = Viewer(model, port=free_port())
    profile = Path(tempfile.mkdtemp(prefix="splatlab-chromium-"))
    log = open(ARTIFACTS / "chromium.log", "wb")  # chromium's own messages, for debugging
    proc = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    devtools = None
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 20
        while not (active.exists() and len(active.read_text().split()) >= 2):
            assert proc.poll() is None, f"chromium exited with {proc.returncode}; see {log.name}"
            assert time.monotonic() < deadline, f"chromium did not open its DevTools port; see {log.name}"
            time.sleep(0.1)
        cdp_port = int(active.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{cdp_port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        devtools = DevTools(pages[0]["webSocketDebuggerUrl"])
        devtools.call("Page.enable")
        devtools.call("Emulation.setDeviceMetricsOverride", width=800, height=600, deviceScaleFactor=1, mobile=False)
        devtools.call("Page.navigate", url=viewer.url)

        def wait_for_colours(timeout: float) -> tuple[bytes, dict]:
            """Poll screenshots until all three splat colours show (software WebGL takes seconds)."""
            png, counts = b"", {}
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                time.sleep(1.0)
                png = devtools.screenshot()
                counts = colour_counts(png)
                if min(counts["red"], counts["green"], counts["yellow"]) > 1500:
                    time.sleep(1.0)  # let the fade-in animation finish for the kept screenshot
                    png = devtools.screenshot()
                    return png, colour_counts(png)
            return png, counts

        png, counts = wait_for_colours(30)
        (ARTIFACTS / "viewer.png").write_bytes(png)

        assert devtools.evaluate("document.querySelectorAll('canvas').length") >= 1, "no canvas on the page"
        text = devtools.evaluate("document.body.innerText") or ""
        assert "1,800" in text, f"the GUI does not show the number of Gaussians: {text[:500]!r}"
        # Many pixels in each splat colour (the axes gizmo has a few dozen red/green ones), and the
        # smooth falloff of Gaussians gives many distinct colours.
        for colour in ("red", "green", "yellow"):
            assert counts[colour] > 1500, f"too few {colour} pixels: {counts} (see {ARTIFACTS / 'viewer.png'})"
        assert counts["distinct"] > 500, counts

        # "Show as points": the splats are hidden and flat-coloured points drawn instead.
        viewer.show_points = True
        assert viewer._splats.visible is False and viewer._points.visible
        png, counts = wait_for_colours(10)
        (ARTIFACTS / "viewer_points.png").write_bytes(png)
        for colour in ("red", "green", "yellow"):
            assert counts[colour] > 1500, f"points mode: too few {colour} pixels: {counts}"
    finally:
        if devtools is not None:
            devtools.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        viewer.close()
        shutil.rmtree(profile, ignore_errors=True)

"""A local web viewer for Gaussians, built on viser (https://viser.studio, version 1.x).

The splats are rendered in the browser by viser's WebGL Gaussian-splat renderer; Python only
converts our raw parameters and ships them over viser's websocket. What viser expects
(`SceneApi.add_gaussian_splats` / `GaussianSplatHandle.set_gaussians`):

    centers      [N, 3]     float32   world positions                    (our `means`)
    covariances  [N, 3, 3]  float32   Sigma = R S S^T R^T                (quats, exp(log_scales))
    rgbs         [N, 3]     in [0, 1] clamp(0.5 + SH_C0 * sh0, 0, 1)     (DC term only)
    opacities    [N, 1]     in [0, 1] sigmoid(logit_opacities)

viser packs each Gaussian into 32 bytes on the wire: float32 centre, the 6 upper-triangular
covariance terms as float16, RGBA as 4 x uint8. So a model costs 32 MB per million Gaussians
per update (already "half precision"; there is nothing smaller to ask for), and higher SH
bands are not shown (view-dependent colour is lost; the DC colour is what you see).

float16 covariances: the normal float16 range is about 6e-5 .. 6.5e4, so the variances of small
Gaussians (sigma ~ 1e-3 in a metre-scale scene) would fall into float16's subnormal range and
lose precision. The viewer therefore stores the splats scaled by a power of two `k` chosen so the
median Gaussian has sigma ~ 1 (variances ~ 1, the middle of float16's range), and sets viser's
node `scale` to 1/k, which the client applies to centres and covariances alike. The scene is
displayed in its own world units. Very flat Gaussians (thin axis below ~2% of the long axis)
still lose their thickness to float16's 11-bit mantissa: that is viser's format.

Large models: above `max_gaussians` (default 1,000,000 = 32 MB per update) a seeded uniform
random subset is shown, with a warning and a note in the GUI ("showing M of N").

Camera controls (viser's, in the browser): left-drag orbits, right-drag (or ctrl/shift-drag)
pans, the wheel zooms. To fly: W/A/S/D move forward/left/back/right, Q/E move down/up, the
arrow keys turn the camera (fixed speed of 2 world units per second, viser's setting).

Threading: `Viewer.update` and the trainer callback installed by `Viewer.attach` only stash the
latest model/stats under a lock and return; a background thread converts and pushes them to
viser at most once every `min_interval` seconds (always the newest one, never a backlog), so
training never waits on the browser.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
import time
import warnings
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import torch

from ..gaussians import Gaussians
from ..geometry import quat_scale_to_covar
from ..sh import SH_C0

DEFAULT_MAX_GAUSSIANS = 1_000_000
UP_DIRECTIONS = ("+z", "+y", "-y", "-z", "+x", "-x")
FLOAT16_SAFE_SIGMA = 200.0  # sigma (after the scale k) at which variances stay far below float16's max
_SPLATS_NODE = "/splats"
_POINTS_NODE = "/points"

ModelSource = Union[Gaussians, Callable[[], Optional[Gaussians]]]


# ---- conversion ------------------------------------------------------------------------------


@dataclass
class SplatArrays:
    """Our Gaussians as the numpy arrays viser's splat renderer takes (see module docstring)."""

    centers: np.ndarray  # [M, 3] float32
    covariances: np.ndarray  # [M, 3, 3] float32
    rgbs: np.ndarray  # [M, 3] float32 in [0, 1]
    opacities: np.ndarray  # [M, 1] float32 in [0, 1]
    sigma_median: float  # median over Gaussians of the middle axis' standard deviation (world units)
    total: int  # Gaussians in the model
    dropped_nonfinite: int  # Gaussians left out for NaN/Inf parameters
    scale: float = 1.0  # k: centres are world positions x k, covariances x k^2

    def __len__(self) -> int:
        return self.centers.shape[0]


def splat_arrays(
    gaussians: Gaussians,
    max_gaussians: Optional[int] = DEFAULT_MAX_GAUSSIANS,
    seed: int = 0,
    scale: float = 1.0,
) -> SplatArrays:
    """Convert raw parameters to viser's splat inputs, optionally subsampled and scaled.

    `scale` multiplies positions by k and covariances by k^2 (see the module docstring); the
    per-axis standard deviations are clamped to FLOAT16_SAFE_SIGMA / k first so no covariance
    term overflows float16. Gaussians with non-finite parameters are left out.
    """
    with torch.no_grad():
        means = gaussians.means.detach().to("cpu", torch.float32)  # [N, 3]
        quats = gaussians.quats.detach().to("cpu", torch.float32)  # [N, 4]
        log_scales = gaussians.log_scales.detach().to("cpu", torch.float32)  # [N, 3]
        logit_op = gaussians.logit_opacities.detach().to("cpu", torch.float32).reshape(-1)  # [N]
        sh0 = gaussians.sh0.detach().to("cpu", torch.float32).reshape(-1, 3)  # [N, 3]
        total = means.shape[0]
        # A sum is finite iff every term is (inf - inf = nan): one isfinite pass instead of five.
        row_sum = means.sum(-1) + quats.sum(-1) + log_scales.sum(-1) + logit_op + sh0.sum(-1)  # [N]
        finite = torch.isfinite(row_sum) & (quats.abs().sum(-1) > 0)  # [N]
        keep = finite.nonzero().squeeze(-1)  # [M]
        dropped = total - keep.numel()
        if max_gaussians is not None and keep.numel() > max_gaussians:
            gen = torch.Generator().manual_seed(seed)
            pick = torch.randperm(keep.numel(), generator=gen)[:max_gaussians].sort().values
            keep = keep[pick]
        if keep.numel() < total:
            means, quats, log_scales, logit_op, sh0 = (t[keep] for t in (means, quats, log_scales, logit_op, sh0))

        k = float(scale)
        sigmas = torch.exp(log_scales)  # [M, 3]
        sigma_median = float(sigmas.median(dim=-1).values.median()) if len(sigmas) else 1.0
        sigmas = (sigmas * k).clamp(max=FLOAT16_SAFE_SIGMA)  # [M, 3], in the scaled frame
        covariances = quat_scale_to_covar(quats, sigmas)  # [M, 3, 3] = R S S^T R^T
        rgbs = (0.5 + SH_C0 * sh0).clamp(0.0, 1.0)  # [M, 3]
        opacities = torch.sigmoid(logit_op).unsqueeze(-1)  # [M, 1]
        return SplatArrays(
            centers=(means * k).numpy(),
            covariances=covariances.numpy(),
            rgbs=rgbs.numpy(),
            opacities=opacities.numpy(),
            sigma_median=sigma_median,
            total=total,
            dropped_nonfinite=dropped,
            scale=k,
        )


def _sigma_median(gaussians: Gaussians, sample: int = 100_000) -> float:
    """Median over (up to `sample` of) the Gaussians of the middle axis' standard deviation."""
    log_scales = gaussians.log_scales.detach()
    if log_scales.shape[0] > sample:
        log_scales = log_scales[:: math.ceil(log_scales.shape[0] / sample)]
    log_scales = log_scales.to("cpu", torch.float32)
    log_scales = log_scales[torch.isfinite(log_scales).all(-1)]
    if log_scales.shape[0] == 0:
        return 1.0
    return float(torch.exp(log_scales.median(dim=-1).values.median()))


def float16_scale_for(sigma_median: float) -> float:
    """The power of two k that puts the median sigma near 1 (see the module docstring)."""
    if not math.isfinite(sigma_median) or sigma_median <= 0:
        return 1.0
    return float(2.0 ** round(-math.log2(sigma_median)))


def _scene_bounds(centers: np.ndarray) -> tuple[np.ndarray, float]:
    """Robust centre and radius of a point set: the 2..98 percentile box, ignoring outliers."""
    if len(centers) == 0:
        return np.zeros(3), 1.0
    lo, hi = np.percentile(centers, [2.0, 98.0], axis=0)
    centre = (lo + hi) / 2.0
    radius = float(np.linalg.norm(hi - lo) / 2.0)
    return centre.astype(np.float64), max(radius, 1e-6)


def _up_vector(up: str) -> np.ndarray:
    axis = {"x": 0, "y": 1, "z": 2}[up[1]]
    v = np.zeros(3)
    v[axis] = 1.0 if up[0] == "+" else -1.0
    return v


def _camera_pose(centre: np.ndarray, radius: float, up: str) -> tuple[np.ndarray, np.ndarray]:
    """A camera position looking at `centre` from above one side, framing a sphere of `radius`."""
    u = _up_vector(up)
    a = np.roll(np.abs(u), 1)  # an axis orthogonal to u
    b = np.cross(u, a)
    direction = a + b + 0.6 * u
    direction /= np.linalg.norm(direction)
    return centre + 1.9 * radius * direction, centre


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


# ---- the viewer ------------------------------------------------------------------------------


@dataclass
class _Pending:
    model: Optional[ModelSource] = None
    step: Optional[int] = None
    stats: Optional[Mapping[str, Any]] = None
    force: bool = False


class Viewer:
    """A viser server showing one set of Gaussians, replaceable while it runs.

        viewer = Viewer(gaussians, port=8080)      # serves http://127.0.0.1:8080
        viewer.update(new_gaussians, step=100, stats={"loss": 0.05})   # throttled, non-blocking
        viewer.attach(trainer)                     # follow a training run
        viewer.close()

    `port` is the first port tried: viser moves on to the next free one if it is taken; the
    `port` and `url` attributes tell the one in use. `min_interval` is the least time between
    two model pushes (seconds; stretched to twice the time a push takes, so converting a large
    model never takes more than a third of a core); `max_gaussians` caps what is sent (None: no
    cap).
    """

    def __init__(
        self,
        gaussians: Optional[Gaussians] = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        max_gaussians: Optional[int] = DEFAULT_MAX_GAUSSIANS,
        min_interval: float = 1.5,
        up_direction: str = "+z",
        dark_mode: bool = True,
        title: str = "splatlab",
    ) -> None:
        try:
            import viser
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the splatlab viewer needs viser: pip install 'viser>=1.1,<2'"
            ) from exc
        if up_direction not in UP_DIRECTIONS:
            raise ValueError(f"up_direction must be one of {UP_DIRECTIONS}, got {up_direction!r}")
        if max_gaussians is not None and max_gaussians <= 0:
            raise ValueError(f"max_gaussians must be positive or None, got {max_gaussians}")
        self.host = host
        self.max_gaussians = max_gaussians
        self.min_interval = float(min_interval)
        self.up_direction = up_direction

        # viser prints its own banner; callers print the URL themselves (see view_model).
        with contextlib.redirect_stdout(io.StringIO()):
            self._server = viser.ViserServer(host=host, port=port, label=title, verbose=False)
        self.port: int = self._server.get_port()
        self._server.gui.configure_theme(dark_mode=dark_mode, show_share_button=False, show_logo=False)
        self._server.scene.set_up_direction(up_direction)

        self._cond = threading.Condition()
        self._pending = _Pending()
        self._busy = False
        self._closed = False
        self._last_push = -math.inf  # time.monotonic() of the last model push
        self._push_cost = 0.0  # seconds the last model push took (conversion + queueing)
        self._last_stats = -math.inf
        self.num_pushes = 0  # model pushes done (for tests and diagnostics)
        self.last_pushed_step: Optional[int] = None
        self.last_error: Optional[BaseException] = None
        self._warned_subsample = False

        self._scene_lock = threading.RLock()  # viewer thread vs GUI callbacks (viser's thread pool)
        self._splats = None  # viser GaussianSplatHandle
        self._points = None  # viser PointCloudHandle, created when first shown
        self._arrays: Optional[SplatArrays] = None
        self._k = 1.0
        self._bounds: Optional[tuple[np.ndarray, float]] = None
        self._step: Optional[int] = None
        self._total_steps: Optional[int] = None
        self._stats: dict[str, Any] = {}
        self._status = ""
        self._build_gui()

        self._thread = threading.Thread(target=self._run, name="splatlab-viewer", daemon=True)
        self._thread.start()
        if gaussians is not None:
            self.update(gaussians, force=True)
            self.flush()

    # ---- public API ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = "localhost" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def server(self):
        """The underlying viser.ViserServer, for adding more scene nodes or GUI."""
        return self._server

    @property
    def show_points(self) -> bool:
        """Draw the Gaussians as points at their centres instead of splats (the GUI checkbox)."""
        return bool(self._gui_points.value)

    @show_points.setter
    def show_points(self, value: bool) -> None:
        self._gui_points.value = bool(value)  # runs the checkbox's callback

    def update(
        self,
        gaussians: Optional[ModelSource] = None,
        step: Optional[int] = None,
        stats: Optional[Mapping[str, Any]] = None,
        *,
        force: bool = False,
    ) -> None:
        """Replace the splats (and/or the step and stats shown); returns at once.

        `gaussians` may be a Gaussians or a zero-argument callable returning one (evaluated on the
        viewer's thread when the push happens), or None to update only the step/stats. `stats`
        (name -> number or text) are merged into those shown; a value of None removes one. Model
        pushes happen at most once every `min_interval` seconds (`force=True`: as soon as the
        viewer thread is free); a newer update replaces one still waiting.
        """
        with self._cond:
            if self._closed:
                return
            p = self._pending
            if gaussians is not None:
                p.model = gaussians
                p.force = p.force or force
            if step is not None:
                p.step = int(step)
            if stats is not None:
                p.stats = {**(p.stats or {}), **stats}
            self._cond.notify_all()

    def flush(self, timeout: Optional[float] = 30.0) -> bool:
        """Push whatever is waiting now, ignoring the throttle, and wait until it is sent.

        Returns False if `timeout` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._pending.model is not None:
                self._pending.force = True
            self._cond.notify_all()
            while not self._closed and (
                self._busy or self._pending.model is not None or self._pending.stats is not None
                or self._pending.step is not None
            ):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def attach(self, trainer, every: int = 1) -> Callable[[Any], None]:
        """Follow a Trainer: subscribe to its events and show its progress.

        SnapshotEvent -> its (detached, copied) Gaussians; every `every`-th StepEvent -> the
        trainer's live parameters (`trainer.params.detach()`, read on the viewer thread when the
        throttle lets a push through; values may be a step apart, never of mixed sizes);
        StepEvent -> step, loss, PSNR, it/s; EvalEvent -> test PSNR/SSIM; EndEvent -> the
        final model, pushed at once. The callback only stashes and returns: training never
        waits on the viewer. Returns the callback (Trainer has no unsubscribe; close() makes
        it a no-op).
        """
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        count = 0

        def live_params(trainer=trainer):
            params = getattr(trainer, "params", None)
            return None if params is None else params.detach()

        def on_event(event) -> None:
            nonlocal count
            if self._closed:
                return
            try:
                kind = type(event).__name__
                if kind == "StepEvent":
                    self._total_steps = getattr(event, "total", None)
                    stats = {"loss": event.loss, "PSNR (train)": event.psnr, "Gaussians": event.num_gaussians}
                    if event.its_per_sec:
                        stats["it/s"] = event.its_per_sec
                    count += 1
                    if count % every == 0:
                        # detach() only makes views: O(1) here, the copy happens on the viewer thread.
                        params = getattr(trainer, "params", None)
                        model = params.detach() if params is not None else None
                        self.update(model, step=event.step, stats=stats)
                    else:
                        self.update(None, step=event.step, stats=stats)
                elif kind == "SnapshotEvent":
                    self.update(event.gaussians, step=event.step)
                elif kind == "EvalEvent":
                    metrics = event.metrics or {}
                    stats = {f"{k.upper()} (test)": metrics[k] for k in ("psnr", "ssim", "lpips")
                             if isinstance(metrics.get(k), (int, float))}
                    self.update(None, step=event.step, stats=stats)
                elif kind == "EndEvent":
                    self._status = f"finished at step {event.step} ({event.reason})"
                    self.update(live_params, step=event.step, force=True)
            except Exception as exc:  # never break the training loop
                self.last_error = exc

        trainer.subscribe(on_event)
        return on_event

    def close(self) -> None:
        """Stop the background thread and the viser server."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=10.0)
        with contextlib.redirect_stdout(io.StringIO()):
            self._server.stop()

    def __enter__(self) -> "Viewer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- background thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    p = self._pending
                    model_wait = None
                    if p.model is not None:
                        # Never spend more than about a third of the time converting and sending.
                        interval = max(self.min_interval, 2.0 * self._push_cost)
                        model_wait = 0.0 if p.force else self._last_push + interval - now
                    info_wait = None
                    if p.stats is not None or p.step is not None:
                        info_wait = self._last_stats + 0.25 - now
                    waits = [w for w in (model_wait, info_wait) if w is not None]
                    if waits and min(waits) <= 0:
                        break
                    self._cond.wait(min(waits) if waits else None)
                model = None
                if model_wait is not None and model_wait <= 0:
                    model, p.model, p.force = p.model, None, False
                step, stats = p.step, p.stats
                p.step, p.stats = None, None
                self._busy = True
            try:
                if step is not None:
                    self._step = step
                if stats is not None:
                    self._stats.update(stats)
                    self._stats = {k: v for k, v in self._stats.items() if v is not None}
                if model is not None:
                    t0 = time.monotonic()
                    gaussians = model() if callable(model) else model
                    if gaussians is not None:
                        self._push_model(gaussians)
                        self.last_pushed_step = self._step
                    self._last_push = time.monotonic()
                    self._push_cost = self._last_push - t0
                self._refresh_info()
                self._last_stats = time.monotonic()
            except Exception as exc:  # keep serving; report on the next update
                self.last_error = exc
                warnings.warn(f"splatlab viewer: update failed: {exc!r}", RuntimeWarning, stacklevel=1)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _push_model(self, gaussians: Gaussians) -> None:
        if len(gaussians) == 0:
            arrays = splat_arrays(gaussians, self.max_gaussians, scale=self._k)
        else:
            # Choose the float16 scale k from the median sigma; keep the current one unless it
            # drifted by more than 4x (k changes rescale the whole buffer anyway).
            ideal = float16_scale_for(_sigma_median(gaussians))
            if self._arrays is None or abs(math.log2(ideal / self._k)) > 2:
                self._k = ideal
            arrays = splat_arrays(gaussians, self.max_gaussians, scale=self._k)
        if arrays.total > len(arrays) + arrays.dropped_nonfinite and not self._warned_subsample:
            self._warned_subsample = True
            warnings.warn(
                f"splatlab viewer: the model has {arrays.total:,} Gaussians; showing a random "
                f"{len(arrays):,} (max_gaussians={self.max_gaussians:,}, 32 bytes each per update)",
                RuntimeWarning,
                stacklevel=1,
            )
        server = self._server
        with self._scene_lock, server.atomic():
            self._arrays = arrays
            if self._splats is None:
                self._splats = server.scene.add_gaussian_splats(
                    _SPLATS_NODE, centers=arrays.centers, covariances=arrays.covariances,
                    rgbs=arrays.rgbs, opacities=arrays.opacities, scale=1.0 / arrays.scale,
                    visible=not self._gui_points.value,
                )
            else:
                self._splats.set_gaussians(arrays.centers, arrays.covariances, arrays.rgbs, arrays.opacities)
                if self._splats.scale != 1.0 / arrays.scale:
                    self._splats.scale = 1.0 / arrays.scale
            if self._gui_points.value:
                self._update_points()
        if self._bounds is None and len(arrays):  # frame the first non-empty model
            self._bounds = _scene_bounds(arrays.centers / arrays.scale)
            self._set_initial_camera()
        self.num_pushes += 1

    def _update_points(self) -> None:
        arrays = self._arrays
        if arrays is None:
            return
        size = self._point_size()
        points = (arrays.centers / arrays.scale).astype(np.float32)
        colors = (arrays.rgbs * 255.0).round().astype(np.uint8)
        # Re-adding a node with the same name replaces it: points and colours change together.
        self._points = self._server.scene.add_point_cloud(
            _POINTS_NODE, points=points, colors=colors, point_size=size, precision="float32",
            point_shape="circle", point_shading="flat",
        )

    def _point_size(self) -> float:
        sigma = self._arrays.sigma_median if self._arrays is not None and self._arrays.sigma_median > 0 else 0.01
        return 2.0 * sigma * float(self._gui_point_size.value)

    def _resize_points(self) -> None:
        if self._points is not None:
            self._points.point_size = self._point_size()

    def _set_initial_camera(self, move_clients: bool = False) -> None:
        if self._bounds is None:
            return
        centre, radius = self._bounds
        position, look_at = _camera_pose(centre, radius, self.up_direction)
        cam = self._server.initial_camera
        cam.position = tuple(position)
        cam.look_at = tuple(look_at)
        if radius * 5e-3 < cam.near:
            cam.near = radius * 5e-3
        if radius * 100.0 > cam.far:
            cam.far = radius * 100.0
        if move_clients:
            for client in self._server.get_clients().values():
                with client.atomic():
                    client.camera.look_at = tuple(look_at)
                    client.camera.position = tuple(position)

    # ---- GUI -----------------------------------------------------------------------------

    def _build_gui(self) -> None:
        gui = self._server.gui
        self._gui_info = gui.add_markdown("*waiting for a model*")
        with gui.add_folder("Display"):
            self._gui_points = gui.add_checkbox(
                "Show as points", False, hint="Draw each Gaussian as a point at its centre instead of a splat"
            )
            self._gui_point_size = gui.add_slider(
                "Point size", min=0.1, max=5.0, step=0.1, initial_value=1.0,
                hint="Point diameter, as a multiple of 2x the median Gaussian size", visible=False,
            )
            self._gui_up = gui.add_dropdown(
                "Up direction", UP_DIRECTIONS, initial_value=self.up_direction,
                hint="World axis that points up (COLMAP scenes are often -y)",
            )
            self._gui_frame = gui.add_button("Frame model", hint="Point the camera at the whole model")
        with gui.add_folder("Controls", expand_by_default=False):
            gui.add_markdown(
                "Orbit: left-drag. Pan: right-drag. Zoom: wheel.  \n"
                "Fly: **W A S D** move, **Q E** down/up, **arrow keys** turn."
            )

        @self._gui_points.on_update
        def _(_event) -> None:
            as_points = bool(self._gui_points.value)
            self._gui_point_size.visible = as_points
            with self._scene_lock, self._server.atomic():
                if as_points:
                    self._update_points()
                elif self._points is not None:
                    self._points.visible = False
                if self._splats is not None:
                    self._splats.visible = not as_points
                if self._points is not None and as_points:
                    self._points.visible = True

        @self._gui_point_size.on_update
        def _(_event) -> None:
            with self._scene_lock:
                self._resize_points()

        @self._gui_up.on_update
        def _(_event) -> None:
            self.up_direction = str(self._gui_up.value)
            self._server.scene.set_up_direction(self.up_direction)
            self._set_initial_camera(move_clients=True)

        @self._gui_frame.on_click
        def _(_event) -> None:
            self._set_initial_camera(move_clients=True)

    def _refresh_info(self) -> None:
        lines = []
        arrays = self._arrays
        if arrays is not None:
            shown = len(arrays)
            line = f"**Gaussians:** {arrays.total:,}"
            if shown < arrays.total:
                line += f" (showing {shown:,})"
            lines.append(line)
            if arrays.dropped_nonfinite:
                lines.append(f"**Non-finite, hidden:** {arrays.dropped_nonfinite:,}")
        else:
            lines.append("*waiting for a model*")
        if self._step is not None:
            total = f" / {self._total_steps:,}" if self._total_steps else ""
            lines.append(f"**Step:** {self._step:,}{total}")
        for key, value in self._stats.items():
            if key == "Gaussians" and arrays is not None:
                continue
            lines.append(f"**{key}:** {_format_value(value)}")
        if self._status:
            lines.append(f"*{self._status}*")
        content = "  \n".join(lines)
        if content != self._gui_info.content:
            self._gui_info.content = content


# ---- command-line entry ------------------------------------------------------------------------


def view_model(
    path: Union[str, Path],
    port: int = 8080,
    open_browser: bool = False,
    host: str = "127.0.0.1",
    *,
    max_gaussians: Optional[int] = DEFAULT_MAX_GAUSSIANS,
    up_direction: str = "+z",
    block: bool = True,
) -> Viewer:
    """Serve the Inria .ply at `path` in a browser viewer until Ctrl-C (`splatlab view MODEL`).

    Errors from `splatlab.io.read_ply` (missing file, wrong format) pass through unchanged.
    Prints the URL. With block=False, returns the running Viewer at once (caller closes it).
    """
    from ..io import read_ply

    gaussians = read_ply(path)
    viewer = Viewer(gaussians, host=host, port=port, max_gaussians=max_gaussians, up_direction=up_direction)
    print(f"splatlab viewer: {viewer.url}  ({len(gaussians):,} Gaussians from {path}); Ctrl-C to stop", flush=True)
    if open_browser:
        webbrowser.open(viewer.url)
    if not block:
        return viewer
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("splatlab viewer: stopped", flush=True)
    finally:
        viewer.close()
    return viewer

"""A local web viewer for Gaussians, built on viser (https://viser.studio, version 1.x).

How it shows view-dependent colour, and why (issue 15). Two renderers, both on by default:

- **Splats, coloured for the camera** (always): the browser draws the Gaussians with viser's
  WebGL splat renderer, which holds one RGB per Gaussian. The viewer evaluates the spherical
  harmonics for each browser's camera position (convert.view_rgbs: the renderer's formula) and
  pushes the colours again when the camera moves, throttled (at most every `color_interval`
  seconds, stretched to twice the time a push takes) with a trailing push once it stops. Orbiting
  stays as fluid as the browser's GPU allows: Python is not in the frame loop.
- **Exact when still** (`still_render`): once a camera has rested for `still_delay` seconds,
  splatlab's own renderer (splatlab.render.rasterize, cpu backend) draws that view at the canvas
  size and it replaces the splats as the background image, with its depth so that the camera
  frustums stay in front of or behind the surface as they should. This is what `splatlab render`
  gives, pixel for pixel, without viser's approximations (float16 covariances, 8-bit colour,
  splats below a size threshold dropped, no 0.99 alpha cap). The first camera movement brings the
  splats back.

Why both: a server-side render alone is not interactive on 2 CPU cores (0.5 to 2.6 s per 800x600
frame of a 100k-Gaussian lego model, measured under load), while the browser's splats follow the mouse and,
coloured for the camera, agree with `splatlab render` to about 39-41 dB PSNR (the DC colour alone:
24 dB on a model with strong SH). Together they move at browser speed and settle on the exact
image. While a training run is attached the exact render is off by default (it would take CPU
from training; the GUI turns it on) and the viewer's own maths run on one thread. Figures and
the commands that measured them: docs/viewer.md.

Threading: `update`, the camera callbacks and the training-event callback only stash what
changed under a lock and return; one background thread does the work (model pushes at most every
`min_interval` s, colour pushes, exact renders, the info panel), always on the newest state,
never a backlog, so training never waits on the browser.

Orientation: "up" and the first view come from the training cameras when they are known
(`cameras=`, see cameras.py); otherwise +z up and a view framing the model. The training cameras
are drawn as frustums; clicking one shows its image (gui.CameraPanel).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import signal
import threading
import time
import warnings
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch

from ..gaussians import Gaussians
from .cameras import TrainingCameras, ViewState
from .clients import ClientView
from .convert import DEFAULT_MAX_GAUSSIANS, ShownModel
from .display import Display
from .follow import training_subscriber
from .gui import RENDERERS, UP_DIRECTIONS, UP_FROM_CAMERAS, CameraPanel, build_gui, info_markdown
from .scene import Framing, PointsLayer
from .scheduler import Job, ViewerState, next_job

ModelSource = Union[Gaussians, Callable[[], Optional[Gaussians]]]


@dataclass
class ViewerOptions:
    """How the viewer shows a model. Keyword arguments of Viewer(...) override these fields."""

    max_gaussians: Optional[int] = DEFAULT_MAX_GAUSSIANS
    """Most Gaussians sent to the browsers (a seeded random subset above; None: no cap)."""
    min_interval: float = 1.5
    """Least seconds between two model pushes (stretched to twice the time a push takes)."""
    up_direction: Optional[str] = None
    """'cameras' (the training cameras' up), '+z', '+y', ...; None: 'cameras' when known, else '+z'."""
    background: Optional[tuple[float, float, float]] = None
    """RGB in [0, 1]; None: the training cameras' dataset's (black without alpha), else white."""
    still_render: Optional[bool] = None
    """Exact render when a camera rests; None: on, and off while a training run is attached."""
    view_dependent: bool = True
    """Colour from all SH degrees for the camera position (False: the DC colour only)."""
    color_interval: float = 0.1
    """Least seconds between two colour pushes to one browser (stretched to twice their cost)."""
    still_delay: float = 0.3
    """Seconds a camera must rest before its exact render."""
    still_max_pixels: int = 1_000_000
    """Largest exact render; a larger canvas gets a smaller image, stretched."""
    render_threads: Optional[int] = None
    """CPU threads of the exact render; None: all cores, one while a training run is attached."""
    dark_mode: bool = True
    title: str = "splatlab"

    def validate(self, cameras: Optional[TrainingCameras]) -> None:
        choices = self.up_choices(cameras)
        if self.up_direction is not None and self.up_direction not in choices:
            raise ValueError(f"up direction must be one of {', '.join(choices)}, got {self.up_direction!r}")
        if self.max_gaussians is not None and self.max_gaussians <= 0:
            raise ValueError(f"max_gaussians must be positive or None, got {self.max_gaussians}")
        if self.background is not None and (len(self.background) != 3 or not all(0 <= c <= 1 for c in self.background)):
            raise ValueError(f"background must be three numbers in [0, 1], got {self.background!r}")
        for name in ("min_interval", "color_interval", "still_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @staticmethod
    def up_choices(cameras: Optional[TrainingCameras]) -> tuple[str, ...]:
        return ((UP_FROM_CAMERAS,) if cameras is not None else ()) + UP_DIRECTIONS


class Viewer:
    """A viser server showing one set of Gaussians, replaceable while it runs.

        viewer = Viewer(gaussians, port=8080)      # serves http://127.0.0.1:8080
        viewer.update(new_gaussians, step=100, stats={"loss": 0.05})   # throttled, non-blocking
        viewer.attach(run)                         # follow a training run
        viewer.close()

    `port` is the first port tried (viser moves on to the next free one; `port`/`url` tell the one
    in use). `cameras`: the training cameras (orientation, first view, frustums). `options` (and
    keyword arguments naming its fields): see ViewerOptions.
    """

    def __init__(
        self,
        gaussians: Optional[Gaussians] = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        cameras: Optional[TrainingCameras] = None,
        options: Optional[ViewerOptions] = None,
        **overrides: Any,
    ) -> None:
        try:
            import viser
        except ImportError as exc:  # pragma: no cover - viser is a dependency of splatlab
            raise ImportError("the splatlab viewer needs viser: pip install 'viser>=1.1,<2'") from exc
        opts = dataclasses.replace(options or ViewerOptions(), **overrides)
        opts.validate(cameras)
        up = opts.up_direction or (UP_FROM_CAMERAS if cameras is not None else "+z")
        background = opts.background
        if background is None:
            background = (cameras.background or (0.0, 0.0, 0.0)) if cameras is not None else (1.0, 1.0, 1.0)
        self.host, self.options, self.cameras = host, opts, cameras
        self.state = ViewerState(min_interval=opts.min_interval, color_interval=opts.color_interval,
                                 still_delay=opts.still_delay, still_render=opts.still_render is not False,
                                 view_dependent=opts.view_dependent)
        with contextlib.redirect_stdout(io.StringIO()):  # viser prints a banner; view_model prints the URL
            self._server = viser.ViserServer(host=host, port=port, label=opts.title, verbose=False)
        self.port: int = self._server.get_port()
        self._server.gui.configure_theme(dark_mode=opts.dark_mode, show_share_button=False, show_logo=False)
        # Splats, frustum lines and the background image are unlit: no environment map to fetch and
        # decode (the client keeps its canvas faded out until one has loaded).
        self._server.scene.configure_environment_map(hdri=None)
        self._cond = threading.Condition()  # guards state, clients and the fields below
        self._clients: dict[int, ClientView] = {}
        self._closed = False
        self._info: dict[str, Any] = {"step": None, "stats": {}, "status": ""}
        self.total_steps: Optional[int] = None  # shown as "step / total" (a training run's plan)
        self._attached = False
        self.last_pushed_step: Optional[int] = None
        self.last_error: Optional[BaseException] = None

        self.gui = build_gui(self._server, up=up, up_choices=opts.up_choices(cameras), background=background,
                             still_render=self.state.still_render, view_dependent=opts.view_dependent)
        self.state.background = tuple(int(v) for v in self.gui.background.value)
        self.camera_panel = CameraPanel(self._server, cameras) if cameras is not None else None
        self.framing = Framing(self._server, cameras, up)
        self.framing.set_up(up)
        self.points = PointsLayer(self._server)
        self.display = Display(self.state, self._cond, self._clients, self.framing, self.points, opts.max_gaussians,
                               opts.still_max_pixels, lambda: self.camera_panel is not None and self.camera_panel.visible)
        self._wire_gui()
        self._server.on_client_connect(self._on_connect)
        self._server.on_client_disconnect(self._on_disconnect)
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
    def model(self) -> Optional[ShownModel]:
        """The model shown now (its viser arrays and the exact-render copy)."""
        return self.display.model

    @property
    def clients(self) -> dict[int, ClientView]:
        """The connected browsers (client id -> ClientView)."""
        with self._cond:
            return dict(self._clients)

    @property
    def show_points(self) -> bool:
        """Draw the Gaussians as points at their centres instead of splats (the GUI checkbox)."""
        return self.state.show_points

    @show_points.setter
    def show_points(self, value: bool) -> None:
        self.gui.points.value = bool(value)  # runs the checkbox's callback

    @property
    def still_render(self) -> bool:
        """Exact render when the camera rests (the GUI's "Renderer")."""
        return self.state.still_render

    @still_render.setter
    def still_render(self, value: bool) -> None:
        self.gui.renderer.value = RENDERERS[1] if value else RENDERERS[0]  # runs the dropdown's callback

    @property
    def view_dependent(self) -> bool:
        return self.state.view_dependent

    @view_dependent.setter
    def view_dependent(self, value: bool) -> None:
        self.gui.view_dependent.value = bool(value)

    def update(self, gaussians: Optional[ModelSource] = None, step: Optional[int] = None,
               stats: Optional[Mapping[str, Any]] = None, *, force: bool = False) -> None:
        """Replace the model (and/or the step and stats shown); returns at once.

        `gaussians` may be a Gaussians or a zero-argument callable returning one (called on the
        viewer thread when the push happens), or None to update only the step/stats. `stats`
        (name -> number or text) are merged into those shown; a value of None removes one. Model
        pushes happen at most once every `min_interval` seconds (`force=True`: as soon as the
        viewer thread is free); a newer update replaces one still waiting.
        """
        with self._cond:
            if self._closed:
                return
            p = self.state.pending
            if gaussians is not None:
                p.model, p.force = gaussians, p.force or force
            if step is not None:
                p.step = step
            if stats is not None:
                p.stats = {**(p.stats or {}), **stats}
            self._cond.notify_all()

    def set_status(self, text: str) -> None:
        """The line in italics under the numbers in the panel."""
        with self._cond:
            self._info["status"] = text
        self.update(None, stats={})

    def flush(self, timeout: Optional[float] = 30.0) -> bool:
        """Do whatever is waiting (model, colours, info) now, ignoring the throttles, and wait until
        it is handed to viser. Exact renders are not waited for. False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self.state.flush_requests += 1
            self._cond.notify_all()
            try:
                while not self._closed and (self.state.busy or self.state.has_urgent_work(self._clients)):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
            finally:
                self.state.flush_requests -= 1
                self._cond.notify_all()  # the viewer thread may be waiting with work set aside for the flush
        return True

    def wait_for_still(self, client_id: int, timeout: float = 30.0) -> bool:
        """Wait until browser `client_id` shows the exact render of its current view."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                c = self._clients.get(client_id)
                if c is not None and c.still_key == (c.version, self.state.gen):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return False

    def attach(self, run, every: int = 1) -> Callable[[Any], None]:
        """Follow a training run: subscribe to its events and show its progress (see follow.py).

        Relies only on `run.subscribe(fn)` and `run.live_gaussians()` (today's Trainer: its
        `params`). The callback only stashes and returns: training never waits on the viewer.
        Returns the callback (close() makes it a no-op).
        """
        callback = training_subscriber(self, run, every)
        self._attached = True
        if self.options.still_render is None:
            self.still_render = False  # the exact render would take CPU from training
        run.subscribe(callback)
        return callback

    def training_ended(self) -> None:
        """Called by the training subscriber at EndEvent: the CPU is free for exact renders again."""
        self._attached = False
        if self.options.still_render is None:
            self.still_render = True

    @property
    def closed(self) -> bool:
        return self._closed

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

    # ---- browsers ------------------------------------------------------------------------

    def _on_connect(self, client) -> None:
        view = ClientView(client)

        @client.camera.on_update
        def _(camera) -> None:
            state = ViewState.of(camera)
            with self._cond:
                if view.on_camera(state, time.monotonic()):
                    self._cond.notify_all()

        with self._cond:
            self._clients[view.id] = view
            self._cond.notify_all()

    def _on_disconnect(self, client) -> None:
        with self._cond:
            self._clients.pop(client.client_id, None)

    # ---- the viewer thread ---------------------------------------------------------------

    def _run(self) -> None:
        # This thread's torch ops (SH colours) use one core: torch's thread count is per thread,
        # and an OpenMP team that cannot get both cores (training holds them) runs ~40x slower.
        torch.set_num_threads(1)
        while True:
            with self._cond:
                job = next_job(self.state, self._clients, self._cond, lambda: self._closed)
                if job is None:
                    return
            try:
                self._do(job)
            except Exception as exc:  # keep serving; report on the next update
                with self._cond:
                    gone = job.client is not None and job.client.id not in self._clients
                if gone:  # the tab closed while its job ran: nothing to report
                    continue
                self.last_error = exc
                if job.kind == "still" and job.client is not None:
                    job.client.still_failed = job.key  # not retried for this view
                warnings.warn(f"splatlab viewer: {job.kind} failed: {exc!r}", RuntimeWarning, stacklevel=1)
            finally:
                with self._cond:
                    self.state.busy = False
                    self._cond.notify_all()

    def _do(self, job: Job) -> None:
        bg = self.state.background
        if job.kind == "model":
            self._do_model(job)
        elif job.kind == "client_model":
            self.display.push_to_client(job.client)
        elif job.kind == "colors":
            self.display.push_colors(job.client)
        elif job.kind == "splats":
            job.client.show_splats(bg, splats_visible=not self.show_points)
        elif job.kind == "background":
            job.client.show_background(bg)
        elif job.kind == "still":
            threads = self.options.render_threads or (1 if self._attached else None)
            self.display.push_still(job.client, job.view, job.key, threads)
        if job.kind in ("model", "info"):
            self._refresh_info(job)

    def _do_model(self, job: Job) -> None:
        t0 = time.monotonic()
        gaussians = job.model() if callable(job.model) else job.model
        if gaussians is not None:
            self.display.push_model(gaussians)
            self.last_pushed_step = job.step if job.step is not None else self._info["step"]
        with self._cond:
            self.state.last_push = time.monotonic()
            self.state.push_cost = self.state.last_push - t0

    def _refresh_info(self, job: Job) -> None:
        info = self._info
        if job.step is not None:
            info["step"] = job.step
        if job.stats is not None:
            info["stats"] = {k: v for k, v in {**info["stats"], **job.stats}.items() if v is not None}
        a = self.display.model.arrays if self.display.model is not None else None
        content = info_markdown(
            a.total if a is not None else None, len(a) if a is not None else 0,
            a.dropped_nonfinite if a is not None else 0, info["step"], self.total_steps, info["stats"],
            info["status"],
        )
        if content != self.gui.info.content:
            self.gui.info.content = content

    # ---- GUI callbacks (viser's thread pool) -----------------------------------------------

    def _wire_gui(self) -> None:
        g = self.gui

        @g.points.on_update
        def _(_event) -> None:
            as_points = bool(g.points.value)
            g.point_size.visible = as_points
            with self._cond:
                self.state.show_points = as_points
                model, clients = self.display.model, list(self._clients.values())
            with self._server.atomic():
                if as_points and model is not None:
                    self.points.show(model.arrays)
                elif not as_points:
                    self.points.hide()
                for client in clients:
                    client.set_splats_visible(not as_points and not client.showing_still)
            self._set_state(invalidate=False)

        g.point_size.on_update(lambda _event: self.points.resize(g.point_size.value))
        g.up.on_update(lambda _event: (self.framing.set_up(str(g.up.value)), self.framing.apply(move_clients=True)))
        g.frame.on_click(lambda _event: self.framing.apply(move_clients=True))
        g.renderer.on_update(lambda _event: self._set_state(still_render=g.renderer.value == RENDERERS[1]))
        g.view_dependent.on_update(lambda _event: self._set_state(view_dependent=bool(g.view_dependent.value)))
        g.background.on_update(
            lambda _event: self._set_state(background=tuple(int(v) for v in g.background.value)))

    def _set_state(self, invalidate: bool = True, **changes) -> None:
        """Change settings; with `invalidate`, colours and exact images made before are redone."""
        with self._cond:
            for key, value in changes.items():
                setattr(self.state, key, value)
            if invalidate:
                self.state.gen += 1
            self._cond.notify_all()
# ---- command-line entry ------------------------------------------------------------------------


@contextlib.contextmanager
def _stop_on_signals():
    """Ctrl-C (SIGINT) and SIGTERM stop the server, as they stop `splatlab train`, even when the
    process started with SIGINT ignored: a shell starts a background job (`cmd &`) so, and
    Python then never installs its Ctrl-C handler, which left `kill -INT` without effect."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set on the main thread
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def view_model(
    path: Union[str, Path],
    port: int = 8080,
    open_browser: bool = False,
    host: str = "127.0.0.1",
    *,
    data: Optional[Union[str, Path]] = None,
    max_gaussians: Optional[int] = DEFAULT_MAX_GAUSSIANS,
    up_direction: Optional[str] = None,
    background: Optional[tuple[float, float, float]] = None,
    still_render: bool = True,
    show_cameras: bool = True,
    block: bool = True,
) -> Viewer:
    """Serve a model in a browser viewer until Ctrl-C (`splatlab view MODEL`).

    `path`: a model file of any format splatlab reads, or a `splatlab train` output folder.
    `data`: the dataset the model was trained on (default: the one the run's config.json names),
    for "up", the first view and the camera frustums. Errors from reading the model pass through
    unchanged; an explicit `data` that cannot be loaded is an error, a run's dataset that cannot
    be found only a warning. Prints the URL. With block=False, returns the running Viewer at once.
    """
    from ..cli import find_model
    from ..io import read_model
    from .cameras import dataset_of_run, load_training_cameras

    model_file, run = find_model(Path(path))
    gaussians = read_model(model_file)
    cameras = None
    run_data, data_options = dataset_of_run(run)  # the run's split and downscale apply to --data too
    if data is not None or run_data is not None:
        print(f"splatlab viewer: loading the training cameras from {data or run_data} ...", flush=True)
    if data is not None:
        cameras = load_training_cameras(Path(data), data_options)
    elif run_data is not None:
        try:
            cameras = load_training_cameras(run_data, data_options)
        except Exception as exc:  # the viewer still works without them
            warnings.warn(f"splatlab viewer: cannot load the training cameras from {run_data} "
                          f"(named in {run / 'config.json'}): {exc}; pass --data", RuntimeWarning, stacklevel=2)
    if up_direction == UP_FROM_CAMERAS and cameras is None:
        raise ValueError(f"up direction 'cameras' needs the training cameras, and none are known for {path}: "
                         "pass --data DATASET (or a training output folder whose dataset exists)")
    options = ViewerOptions(max_gaussians=max_gaussians, up_direction=up_direction, background=background,
                            still_render=still_render)
    viewer = Viewer(gaussians, host=host, port=port, cameras=cameras, options=options)
    # From here on Ctrl-C or SIGTERM stops the server cleanly, also one that arrives right after
    # the URL is printed (a busy machine may not have reached the wait loop yet).
    try:
        with _stop_on_signals():  # before the URL is printed: a Ctrl-C may follow at once
            if viewer.camera_panel is not None and not show_cameras:
                viewer.camera_panel.show.value = False
            where = f"; {len(cameras)} training cameras from {cameras.source}" if cameras is not None else ""
            print(f"splatlab viewer: {viewer.url}  ({len(gaussians):,} Gaussians from {model_file}{where}); "
                  "Ctrl-C to stop", flush=True)
            if open_browser:
                webbrowser.open(viewer.url)
            if not block:
                return viewer
            while True:
                time.sleep(1.0)
    except KeyboardInterrupt:
        print("splatlab viewer: stopped", flush=True)
    except BaseException:
        viewer.close()
        raise
    viewer.close()
    return viewer

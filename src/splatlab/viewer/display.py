"""What the browsers are shown, given a model: the viewer thread's work (see scheduler.py for when).

    Display.push_model(gaussians)     convert once, then every browser gets the splats coloured for
                                      its own camera; the points layer and the first view follow
    Display.push_to_client(client)    the same for one browser (a new one)
    Display.push_colors(client)       new colours for the camera position (SH, convert.view_rgbs)
    Display.push_still(client, ...)   the exact render of a resting camera (still.render_still)
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Callable, Mapping, Optional

import numpy as np

from ..gaussians import Gaussians
from .cameras import ViewState
from .clients import ClientView
from .convert import ShownModel, shown_model, view_rgbs
from .scene import Framing, PointsLayer
from .scheduler import ViewerState
from .still import render_still


class Display:
    """The shown model and the pushes to the browsers. Called on the viewer thread only; reads the
    shared ViewerState and the clients under `cond`."""

    def __init__(self, state: ViewerState, cond: threading.Condition, clients: Mapping[int, ClientView],
                 framing: Framing, points: PointsLayer, max_gaussians: Optional[int], still_max_pixels: int,
                 with_depth: Callable[[], bool]) -> None:
        self.state, self._cond, self._clients = state, cond, clients
        self.framing, self.points = framing, points
        self.max_gaussians, self.still_max_pixels = max_gaussians, still_max_pixels
        self._with_depth = with_depth
        self.model: Optional[ShownModel] = None
        self.num_pushes = self.num_color_pushes = self.num_still_renders = 0
        self.color_cost = 0.0  # seconds of the last colour push (SH evaluation + hand-over to viser)
        self.still_cost = 0.0  # seconds of the last exact render (render + encoding + hand-over)
        self._warned_subsample = False

    def push_model(self, gaussians: Gaussians) -> None:
        previous = self.model.arrays.scale if self.model is not None else None
        model = shown_model(gaussians, self.max_gaussians, previous)
        self._warn_subsample(model)
        with self._cond:
            self.model = model
            self.state.gen += 1
            self.state.has_model = True
            self.state.sh_degree = model.arrays.sh_degree
            clients = list(self._clients.values())
        for client in clients:
            self.push_to_client(client)
        if self.state.show_points:
            self.points.show(model.arrays)
        self.framing.set_model(model.arrays)
        self.num_pushes += 1

    def push_to_client(self, client: ClientView) -> None:
        if self.model is None:
            return
        rgbs, key = self._colors_for(client)
        if not client.showing_still:
            client.show_background(self.state.background)
        client.set_model(self.model.arrays, rgbs, key, visible=not (self.state.show_points or client.showing_still))

    def push_colors(self, client: ClientView) -> None:
        t0 = time.perf_counter()
        rgbs, key = self._colors_for(client)
        client.set_colors(rgbs, key, time.monotonic())
        self.color_cost = self.state.color_cost = time.perf_counter() - t0
        self.num_color_pushes += 1

    def push_still(self, client: ClientView, view: ViewState, key: tuple[int, int], num_threads: Optional[int]) -> None:
        t0 = time.perf_counter()
        frame = render_still(self.model.exact, view, self.state.background, view_dependent=self.state.view_dependent,
                             max_pixels=self.still_max_pixels, num_threads=num_threads, with_depth=self._with_depth())
        with self._cond:
            if (client.version, self.state.gen) != key or not self.state.still_render or self.state.show_points:
                return  # the camera, the model or a setting changed while rendering: drop the frame
        client.show_still(frame.image, frame.depth, key)
        self.still_cost = time.perf_counter() - t0
        self.num_still_renders += 1

    def _colors_for(self, client: ClientView) -> tuple[np.ndarray, tuple]:
        """The colours `client` should see now, and the key they are made for."""
        with self._cond:
            key = self.state.colors_key(client)
        _, degree, position = key
        return view_rgbs(self.model.arrays, None if position is None else np.asarray(position), degree), key

    def _warn_subsample(self, model: ShownModel) -> None:
        a = model.arrays
        if a.total > len(a) + a.dropped_nonfinite and not self._warned_subsample:
            self._warned_subsample = True
            warnings.warn(
                f"splatlab viewer: the model has {a.total:,} Gaussians; the browsers get a random {len(a):,} "
                f"(max_gaussians={self.max_gaussians:,}, 32 bytes each per update); the exact render uses "
                "all of them", RuntimeWarning, stacklevel=1,
            )

"""What the viewer thread does next, and when: one decision function over the viewer's state.

Kinds of work, most urgent first:

    splats        a browser showing an exact image moved its camera (or the mode changed): splats back
    background    a browser's solid background colour is out of date
    model         a new model is waiting: at most one push every max(min_interval, 2 x push cost) s
    client_model  a browser connected after the model was pushed
    colors        a browser's colours were made for another camera position (or setting): at most
                  every max(color_interval, 2 x colour-push cost) s per browser, so a long drag gets
                  regular updates and the last one follows the camera's final position
    still         a browser's camera has rested for still_delay s: render its view exactly
    info          new step / stats for the panel, at most 4 times a second

`next_job` is called with the condition's lock held and waits on it until something is due.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from .cameras import ViewState
from .clients import ClientView

INFO_INTERVAL = 0.25


@dataclass
class Pending:
    """The newest update not yet pushed (a newer one replaces it)."""

    model: Any = None  # Gaussians, or a callable returning one
    step: Optional[int] = None
    stats: Optional[Mapping[str, Any]] = None
    force: bool = False


@dataclass
class ViewerState:
    """Settings and bookkeeping shared by the viewer thread and the callbacks (under one lock)."""

    min_interval: float  # least seconds between model pushes
    color_interval: float  # least seconds between colour pushes to one browser
    still_delay: float  # seconds a camera rests before the exact render
    still_render: bool
    view_dependent: bool
    show_points: bool = False
    background: tuple[int, int, int] = (255, 255, 255)
    pending: Pending = field(default_factory=Pending)
    busy: bool = False
    gen: int = 0  # bumped by each model push and each change of what colours / exact images depend on
    has_model: bool = False
    sh_degree: int = 0
    last_push: float = -math.inf
    push_cost: float = 0.0
    color_cost: float = 0.0
    last_info: float = -math.inf
    flush_requests: int = 0

    def colors_key(self, client: ClientView) -> tuple:
        """What `client`'s colours must have been made for: (generation, SH degree, camera position)."""
        degree = self.sh_degree if self.view_dependent else 0
        position = client.view.position if (degree > 0 and client.view is not None) else None
        return (self.gen, degree, position)

    def has_urgent_work(self, clients: Mapping[int, ClientView]) -> bool:
        """Anything `flush` should wait for (all but exact renders)."""
        p = self.pending
        if p.model is not None or p.step is not None or p.stats is not None:
            return True
        return any(_client_job(self, c, flush=True, now=math.inf)[0] is not None for c in clients.values())


@dataclass
class Job:
    kind: str  # see the module docstring
    client: Optional[ClientView] = None
    model: Any = None
    step: Optional[int] = None
    stats: Optional[Mapping[str, Any]] = None
    view: Optional[ViewState] = None
    key: Optional[tuple[int, int]] = None


def _client_job(state: ViewerState, c: ClientView, flush: bool, now: float) -> tuple[Optional[str], float]:
    """(kind, due time) of the most urgent work for one browser; (None, inf) when there is none."""
    if c.showing_still and (not state.still_render or state.show_points or c.still_key[0] != c.version):
        return "splats", -math.inf
    if not c.showing_still and c.background_rgb != state.background:
        return "background", -math.inf
    if not state.has_model:
        return None, math.inf
    if c.splats is None:
        return "client_model", -math.inf
    if c.colors_key != state.colors_key(c):
        if flush:
            return "colors", -math.inf
        return "colors", c.colors_at + max(state.color_interval, 2.0 * state.color_cost)
    key = (c.version, state.gen)
    if (state.still_render and not state.show_points and c.view is not None and not flush
            and c.still_key != key and c.still_failed != key):
        return "still", c.changed_at + state.still_delay
    return None, math.inf


def next_job(state: ViewerState, clients: Mapping[int, ClientView], cond, closed: Callable[[], bool]) -> Optional[Job]:
    """Wait (on `cond`, whose lock the caller holds) for the next due job; None once closed."""
    while True:
        if closed():
            return None
        now = time.monotonic()
        flush = state.flush_requests > 0
        p = state.pending
        due: list[tuple[float, int, Job]] = []  # (due time, priority, job)
        for c in clients.values():
            kind, when = _client_job(state, c, flush, now)
            if kind is not None:
                prio = {"splats": 0, "background": 1, "client_model": 3, "colors": 4, "still": 5}[kind]
                due.append((when, prio, Job(kind, client=c, view=c.view, key=(c.version, state.gen))))
        if p.model is not None:
            interval = max(state.min_interval, 2.0 * state.push_cost)
            when = -math.inf if (p.force or flush) else state.last_push + interval
            due.append((when, 2, Job("model")))
        if p.step is not None or p.stats is not None:
            due.append((-math.inf if flush else state.last_info + INFO_INTERVAL, 6, Job("info")))
        ready = [d for d in due if d[0] <= now]
        if ready:
            job = min(ready, key=lambda d: d[1])[2]
            if job.kind in ("model", "info"):
                if job.kind == "model":
                    job.model, p.model, p.force = p.model, None, False
                job.step, job.stats, p.step, p.stats = p.step, p.stats, None, None
                state.last_info = now
            state.busy = True
            return job
        cond.wait(min(d[0] for d in due) - now if due else None)

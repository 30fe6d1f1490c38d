"""Following a training run: its typed events -> viewer updates.

The run is only asked for `subscribe(fn)` and, between snapshots, `live_gaussians()` (detached
current Gaussians or None); today's Trainer has no live_gaussians, so its `params` stand in.

    StepEvent      every `every`-th: the live parameters (fetched now, O(1) views, so their sizes
                   agree; their values may be a step apart), and step / loss / PSNR / it/s
    SnapshotEvent  its (detached, copied) Gaussians
    EvalEvent      the test metrics
    MessageEvent   the status line
    EndEvent       the final model, pushed at once; the exact render may use the CPU again
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..gaussians import Gaussians
from ..train.events import EndEvent, EvalEvent, MessageEvent, SnapshotEvent, StepEvent


def live_gaussians_of(run) -> Callable[[], Optional[Gaussians]]:
    """A zero-argument function returning the run's current Gaussians (detached) or None."""
    live = getattr(run, "live_gaussians", None)
    if callable(live):
        return live

    def from_params() -> Optional[Gaussians]:
        params = getattr(run, "params", None)
        return None if params is None else params.detach()

    return from_params


def training_subscriber(viewer, run, every: int = 1) -> Callable[[Any], None]:
    """The event callback that Viewer.attach subscribes. It only stashes and returns."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    live = live_gaussians_of(run)
    count = 0

    def on_event(event) -> None:
        nonlocal count
        if viewer.closed:
            return
        try:
            if isinstance(event, StepEvent):
                count += 1
                viewer.total_steps = event.total
                stats = {"loss": event.loss, "PSNR (train)": event.psnr, "Gaussians": event.num_gaussians}
                if event.its_per_sec:
                    stats["it/s"] = event.its_per_sec
                viewer.update(live() if count % every == 0 else None, step=event.step, stats=stats)
            elif isinstance(event, SnapshotEvent):
                viewer.update(event.gaussians, step=event.step)
            elif isinstance(event, EvalEvent):
                metrics = event.metrics or {}
                stats = {f"{k.upper()} (test)": metrics[k] for k in ("psnr", "ssim", "lpips")
                         if isinstance(metrics.get(k), (int, float))}
                viewer.update(None, step=event.step, stats=stats)
            elif isinstance(event, MessageEvent):
                viewer.set_status(event.text if event.level == "info" else f"{event.level}: {event.text}")
            elif isinstance(event, EndEvent):
                viewer.set_status(f"finished at step {event.step} ({event.reason})")
                viewer.update(live, step=event.step, force=True)  # read on the viewer thread
                viewer.training_ended()
        except Exception as exc:  # never break the training loop
            viewer.last_error = exc

    return on_event

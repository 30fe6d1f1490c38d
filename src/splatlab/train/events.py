"""What a training run reports, as typed events. Subscribers (progress bar, loggers, the live
viewer) receive these objects and dispatch on their type with isinstance, never on names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

from ..gaussians import Gaussians


@dataclass
class StepEvent:
    """Every few steps (and whenever densification did something)."""

    step: int  # iterations done
    total: int  # iterations planned (with a time budget: the current plan)
    loss: float
    psnr: float  # of the step's render against its target, over the pixels the loss counts
    num_gaussians: int
    its_per_sec: float  # 0 for events sent only to report messages
    elapsed: float  # seconds of training so far (resumed runs include earlier sessions)
    messages: list[str] = field(default_factory=list)  # densification events this step
    progress: float = 0.0  # fraction of the schedule done, in [0, 1]; never decreases


@dataclass
class EvalEvent:
    step: int
    metrics: dict


@dataclass
class SnapshotEvent:
    step: int
    gaussians: Gaussians  # detached copy
    ply_path: Optional[Path]


@dataclass
class EndEvent:
    step: int
    reason: str  # "completed" | "time budget"
    output: Path


@dataclass
class MessageEvent:
    """A line for the user: what the run chose, that it resumed, a warning."""

    text: str
    level: str = "info"  # "info" | "warning"


Event = Union[StepEvent, EvalEvent, SnapshotEvent, EndEvent, MessageEvent]
Subscriber = Callable[[Event], None]


class EventBus:
    """Subscribers in order; `emit` calls each with the event."""

    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> None:
        self.subscribers.append(fn)

    def emit(self, event: Event) -> None:
        for fn in self.subscribers:
            fn(event)

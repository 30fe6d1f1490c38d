"""Loggers: event subscribers for Run.subscribe (they never sit inside the loop's logic).

    JsonlLogger(path)        one JSON object per event line: always available, easy to plot
    TensorBoardLogger(dir)   scalars for TensorBoard, when the `tensorboard` package is installed
    default_loggers(output)  both where possible
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .events import EndEvent, EvalEvent, Event, SnapshotEvent, StepEvent


class JsonlLogger:
    """Appends each event to a JSON-lines file (steps every `every` events, all others)."""

    def __init__(self, path: Path, every: int = 1) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.every, self._count = max(1, every), 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepEvent):
            self._count += 1
            if self._count % self.every and not event.messages:
                return
            row = {"event": "step", "step": event.step, "total": event.total, "loss": event.loss,
                   "psnr": event.psnr, "num_gaussians": event.num_gaussians,
                   "its_per_sec": event.its_per_sec, "elapsed": event.elapsed, "messages": event.messages}
        elif isinstance(event, EvalEvent):
            row = {"event": "eval", "step": event.step,
                   **{k: v for k, v in event.metrics.items() if k != "per_image"}}
        elif isinstance(event, SnapshotEvent):
            row = {"event": "snapshot", "step": event.step, "ply": str(event.ply_path) if event.ply_path else None,
                   "num_gaussians": len(event.gaussians)}
        elif isinstance(event, EndEvent):
            row = {"event": "end", "step": event.step, "reason": event.reason}
        else:
            return
        row["time"] = time.time()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


class TensorBoardLogger:
    """Scalars (loss, PSNR, Gaussians, it/s, test metrics) for TensorBoard."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepEvent) and event.its_per_sec > 0:
            for key in ("loss", "psnr", "num_gaussians", "its_per_sec"):
                self.writer.add_scalar(f"train/{key}", getattr(event, key), event.step)
        elif isinstance(event, EvalEvent):
            for key in ("psnr", "ssim", "lpips"):
                if isinstance(event.metrics.get(key), float):
                    self.writer.add_scalar(f"test/{key}", event.metrics[key], event.step)
        elif isinstance(event, EndEvent):
            self.writer.flush()


def default_loggers(output: Path) -> list:
    """A JSONL log in `output/log.jsonl`, plus TensorBoard in `output/tensorboard` if installed."""
    loggers: list = [JsonlLogger(Path(output) / "log.jsonl")]
    try:
        loggers.append(TensorBoardLogger(Path(output) / "tensorboard"))
    except ImportError:
        pass  # tensorboard is optional: pip install tensorboard
    return loggers

"""The output folder of a training run: one object for everything a run writes.

    config.json                                the TrainConfig of the run
    checkpoints/latest.pt                      TrainState + budget + history (atomic, resumable)
    point_cloud/iteration_N/point_cloud.ply    Inria .ply snapshots and the final model
    metrics.json                               evaluations: means and per-image PSNR / SSIM
    renders/test/*.png                         render | ground truth (final evaluation)
    curve.png, history.json                    loss and PSNR against iterations and time
    log.jsonl                                  every event, one JSON object per line

Every file is written atomically: a run killed at any moment leaves the previous version
of each file intact, and `--resume` continues from the last checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import torch

from ..gaussians import Gaussians
from ..io import atomic_write, save_png, write_ply

CHECKPOINT_VERSION = 2


class RunFolderError(RuntimeError):
    """The output folder cannot be used as asked (exists, no checkpoint, unreadable)."""


class RunFolder:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # ---- paths -------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / "latest.pt"

    @property
    def log_path(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def renders_dir(self) -> Path:
        return self.path / "renders" / "test"

    def ply_path(self, step: int) -> Path:
        return self.path / "point_cloud" / f"iteration_{step}" / "point_cloud.ply"

    # ---- life cycle --------------------------------------------------------------------------

    def is_empty(self) -> bool:
        return not self.path.exists() or (self.path.is_dir() and not any(self.path.iterdir()))

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def check(self, resume: bool, force: bool) -> None:
        """Before anything is loaded: can a run start (or continue) here as asked?"""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"output {self.path} is a file, not a folder; choose another --output")
        if resume or force or self.is_empty():
            return
        hint = "--resume to continue it" if self.has_checkpoint() else "--resume to start it afresh (it has no checkpoint yet)"
        raise RunFolderError(
            f"output folder {self.path} already exists and is not empty; pass {hint}, "
            "--force to replace it, or choose another --output"
        )

    def prepare(self, resume: bool, force: bool) -> bool:
        """Create (or clear with `force`) the folder. Returns True when a checkpoint will be resumed."""
        self.check(resume, force)
        if force and not resume and self.path.exists():
            shutil.rmtree(self.path)
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        return resume and self.has_checkpoint()

    def saved_config(self) -> Optional[dict]:
        """The config a previous run here was started with (config.json), or None."""
        if not self.config_path.is_file():
            return None
        try:
            return json.loads(self.config_path.read_text())
        except (OSError, ValueError) as exc:
            raise RunFolderError(f"cannot read {self.config_path}: {exc}") from exc

    # ---- writing -----------------------------------------------------------------------------

    def write_config(self, config: dict) -> None:
        with atomic_write(self.config_path, "w") as f:
            json.dump(config, f, indent=2)

    def save_checkpoint(self, state: dict) -> Path:
        with atomic_write(self.checkpoint_path) as f:
            torch.save({"version": CHECKPOINT_VERSION, **state}, f)
        return self.checkpoint_path

    def load_checkpoint(self) -> dict:
        path = self.checkpoint_path
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
            raise RunFolderError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
            found = state.get("version") if isinstance(state, dict) else type(state).__name__
            raise RunFolderError(
                f"{path} is not a splatlab checkpoint of version {CHECKPOINT_VERSION} (found {found}); "
                "start afresh with --force"
            )
        return state

    def save_ply(self, step: int, gaussians: Gaussians) -> Path:
        path = self.ply_path(step)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_ply(path, gaussians)
        return path

    def save_render(self, index: int, name: str, image: torch.Tensor) -> Path:
        self.renders_dir.mkdir(parents=True, exist_ok=True)
        return save_png(self.renders_dir / f"{index:04d}_{_safe(name)}.png", image)

    def append_metrics(self, metrics: dict) -> None:
        """Add one evaluation to metrics.json (replacing an earlier one of the same step)."""
        runs = json.loads(self.metrics_path.read_text()) if self.metrics_path.exists() else []
        runs = [r for r in runs if r.get("step") != metrics.get("step")] + [metrics]
        with atomic_write(self.metrics_path, "w") as f:
            json.dump(runs, f, indent=2)

    def truncate_log(self, step: int) -> None:
        """Drop log lines of steps after `step` (what a resumed run will do again)."""
        if not self.log_path.exists():
            return
        kept = [line if line.endswith("\n") else line + "\n"
                for line in self.log_path.read_text().splitlines(keepends=True) if _keep_line(line, step)]
        with atomic_write(self.log_path, "w") as f:
            f.writelines(kept)

    def write_history(self, history: list[dict], title: str) -> None:
        with atomic_write(self.path / "history.json", "w") as f:
            json.dump(history, f)
        if history:
            _plot_curve(self.path / "curve.png", history, title)


def _keep_line(line: str, step: int) -> bool:
    """A log line to keep on resuming at `step`: whole (a kill can cut the last one), and of a
    step not after `step` (lines without a step, such as messages, are kept)."""
    try:
        row = json.loads(line)
    except ValueError:
        return False
    return isinstance(row, dict) and (row.get("step") is None or row["step"] <= step)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).stem)[:80]


def _plot_curve(path: Path, history: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax1 = plt.subplots(figsize=(7, 4), dpi=100)
    ax1.plot(steps, [h["loss"] for h in history], color="tab:red", lw=1)
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("training loss", color="tab:red")
    ax1.set_yscale("log")
    ax2 = ax1.twinx()
    ax2.plot(steps, [h["psnr"] for h in history], color="tab:blue", lw=1, alpha=0.7)
    ax2.set_ylabel("training-view PSNR (dB)", color="tab:blue")
    ax1.set_title(title)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
    plt.close(fig)

"""What a person watching a run sees: one progress bar and `info:` / `warning:` lines.

A subscriber like any other (train/events.py). The bar counts the schedule in percent, so that
re-planning a time budget never makes its total jump; its postfix shows the step, one speed
(iterations per second of training, evaluation and saving excluded), loss, PSNR and the
number of Gaussians.
"""

from __future__ import annotations

import sys
from typing import Optional

from .events import EndEvent, EvalEvent, Event, MessageEvent, StepEvent


class ConsoleReporter:
    def __init__(self, progress: bool = True, stream=None) -> None:
        self.progress = progress
        self.stream = stream or sys.stderr
        self.bar = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, MessageEvent):
            self.write(f"{event.level}: {event.text}")
        elif isinstance(event, StepEvent) and event.its_per_sec > 0:
            self._update(event)
        elif isinstance(event, EvalEvent):
            m = event.metrics
            self.write(f"info: step {event.step}: test PSNR {m.get('psnr', float('nan')):.2f} dB, "
                       f"SSIM {m.get('ssim', float('nan')):.4f} over {m.get('num_test_views', 0)} views"
                       + (f" ({m['pixels']})" if m.get("pixels") else ""))
        elif isinstance(event, EndEvent):
            self.close()

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def _update(self, event: StepEvent) -> None:
        if not self.progress:
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=100, desc="train", unit="%", dynamic_ncols=True, file=self.stream,
                            bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
        done = 100.0 * event.progress
        self.bar.set_postfix_str(
            f"step {event.step}/{event.total}, {event.its_per_sec:.2f} it/s, loss {event.loss:.4f}, "
            f"PSNR {event.psnr:.2f}, {event.num_gaussians} Gaussians", refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> Optional[None]:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

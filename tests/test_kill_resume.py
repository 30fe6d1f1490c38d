"""kill -9 at any moment, then --resume: the model ends bit-identical to an uninterrupted run.

The command is run as a user runs it (subprocesses). Kill times are drawn at random (the seed is
printed on failure), from the very start of the process (before the dataset has loaded and
before the first checkpoint) to the end of training.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from helpers import write_demo_blender
from splatlab.io import read_ply

ITERATIONS = 90
OPTIONS = ["--iterations", ITERATIONS, "--max-minutes", "None", "--checkpoint-every", 13, "--no-progress", "--init-num-random", 800,
           "--sh-degree", 1, "--sh-degree-interval", 30, "--save-at", ITERATIONS, "--eval-at", ITERATIONS,
           "--no-save-renders", "strategy:default", "--strategy.refine-start", 10, "--strategy.refine-every", 10,
           "--strategy.reset-every", 50, "--strategy.refine-stop", 70]


def command(data: Path, out: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "splatlab.cli", "train", str(data), "--output", str(out), *extra, *map(str, OPTIONS)]


def final_params(out: Path) -> dict[str, torch.Tensor]:
    return read_ply(out / "point_cloud" / f"iteration_{ITERATIONS}" / "point_cloud.ply").params()


def test_kill_9_at_random_moments_then_resume_is_bit_identical(tmp_path):
    data = write_demo_blender(tmp_path / "data", num_views=10, size=24)
    t0 = time.monotonic()
    subprocess.run(command(data, tmp_path / "straight"), check=True, capture_output=True)
    duration = time.monotonic() - t0
    reference = final_params(tmp_path / "straight")

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    out = tmp_path / "killed"
    # First kill anywhere in the first fifth of a run (loading, before any checkpoint), then
    # anywhere in the run; each time --resume continues (or starts afresh when no checkpoint).
    for kill_at, resume in ((rng.uniform(0.0, 0.2), False), (rng.uniform(0.2, 0.9), True)):
        proc = subprocess.Popen(command(data, out, *(["--resume"] if resume else [])),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(kill_at * duration)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = subprocess.run(command(data, out, "--resume"), capture_output=True, text=True)
    assert done.returncode == 0, f"seed {seed}: {done.stderr}"
    resumed = final_params(out)
    for name, value in reference.items():
        assert torch.equal(value, resumed[name]), f"seed {seed}: {name} differs after kill -9 and --resume"

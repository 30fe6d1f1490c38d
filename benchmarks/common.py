"""Shared pieces of the benchmarks: the standard random scene, timing, child processes, tables.

Each configuration of a benchmark runs in its own child process so that its peak memory
(`ru_maxrss`) is its own and so that one configuration's threads, caches and allocator state
do not leak into the next.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os

# As splatlab/__init__.py does, before torch loads its OpenMP runtime (torch is imported below,
# before splatlab): OpenMP workers that spin steal the cores the Numba kernels need.
_USER_OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")  # restored for another checkout's children
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
SH_C0 = 0.28209479177387814


# ---- a training run, as its own evaluation sees it ---------------------------------------------


def load_run(run: Path):
    """(Gaussians, output folder, scene, render settings) of a `splatlab train` output folder:
    the model, the dataset, split and masks its config.json names, and the settings (background
    included) its evaluation renders with. ValueError when `run` has no model or no config.json."""
    from splatlab import cli  # here, not at the top: other benchmarks run other checkouts' code

    try:
        gaussians, _ply, folder = cli._load_model(run)
    except cli.CLIError as e:  # no such folder, no model in it: the scripts' usage error
        raise ValueError(str(e)) from None
    saved = cli._config_of_run(folder)
    if saved is None:
        raise ValueError(f"{run}: not a `splatlab train` output folder (no config.json)")
    scene = cli.load_training_scene(saved, verbose=False, triangulate=False)
    settings = cli._settings_of_run(folder, "auto", cli._background_of_run(folder, scene))
    return gaussians, folder, scene, settings


# ---- the standard random scene ---------------------------------------------------------------


def standard_scene(n: int, resolution: int = 256, seed: int = 0, dtype=torch.float32):
    """The benchmark scene of issue 3: n random Gaussians in [-1, 1]^3 seen from z = -3.

    torch.manual_seed(seed), then in this order: means ~ U[-1, 1]^3; quats ~ N(0, 1);
    log_scales ~ U[-4.5, -3.5]; opacities ~ U[0.1, 0.9] (stored as logits); colours ~ U[0, 1]
    stored as SH degree 0 (sh0 = (rgb - 0.5) / C0, shN empty). Camera: identity rotation,
    world->camera translation z = +3, fx = fy = resolution, cx = cy = resolution / 2
    (256 px: f = 256; 800 px: f = 800), square image. Returns (Gaussians, Camera).
    """
    from splatlab import Camera, Gaussians

    torch.manual_seed(seed)
    means = torch.rand(n, 3) * 2 - 1
    quats = torch.randn(n, 4)
    log_scales = torch.rand(n, 3) - 4.5
    opacities = torch.rand(n) * 0.8 + 0.1
    rgb = torch.rand(n, 3)
    gaussians = Gaussians(
        means=means,
        quats=quats,
        log_scales=log_scales,
        logit_opacities=torch.log(opacities / (1 - opacities)),
        sh0=((rgb - 0.5) / SH_C0).unsqueeze(1),
        shN=torch.zeros(n, 0, 3),
    ).to(dtype=dtype)
    viewmat = torch.eye(4, dtype=torch.float64)
    viewmat[2, 3] = 3.0
    f = float(resolution)
    camera = Camera(f, f, resolution / 2, resolution / 2, viewmat, resolution, resolution)
    return gaussians, camera


def loss_weights(height: int, width: int, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    """The fixed random image w of loss = sum(image * w)."""
    return torch.rand(height, width, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---- timing and memory -----------------------------------------------------------------------


def median_ms(seconds: list[float]) -> float:
    return 1000.0 * statistics.median(seconds)


def time_calls(fn: Callable[[], None], repeats: int, warmup: int = 1, budget_s: float | None = None) -> list[float]:
    """Wall-clock seconds of `repeats` calls of fn after `warmup` untimed ones.

    With `budget_s`, fewer timed calls (at least one) when the last warm-up call shows that
    `repeats` of them would take longer than that.
    """
    last = 0.0
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        last = time.perf_counter() - t0
    if budget_s is not None and last > 0:
        repeats = max(1, min(repeats, int(budget_s // last)))
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def max_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2**20


def run_child(script: Path, config: dict, timeout: float, checkout: Path | None = None) -> dict:
    """Run `script --child JSON` in a fresh interpreter; return the JSON it prints last.

    With `checkout` (another clone of the repository, e.g. main for a before/after), the same
    script of that checkout runs with its own source tree (and its .venv's Python if it has one).
    Returns {"error": ...} instead of raising when the child fails or times out.
    """
    python, root, env = sys.executable, REPO, dict(os.environ)
    if checkout is not None:
        root = Path(checkout).resolve()
        script = root / Path(script).resolve().relative_to(REPO)
        if (root / ".venv" / "bin" / "python").exists():
            python = str(root / ".venv" / "bin" / "python")
        env["PYTHONPATH"] = str(root / "src")
        env.pop("OMP_WAIT_POLICY", None)  # that checkout runs with its own settings, not this one's
        if _USER_OMP_WAIT_POLICY is not None:
            env["OMP_WAIT_POLICY"] = _USER_OMP_WAIT_POLICY
    cmd = [python, str(script), "--child", json.dumps(config)]
    env.setdefault("PYTHONPATH", str(root / "src"))
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {res.returncode}: {' | '.join(tail)}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---- reporting -------------------------------------------------------------------------------


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import numba

        info["numba"] = numba.__version__
        info["numba_max_threads"] = numba.config.NUMBA_NUM_THREADS
    except ImportError:
        pass
    try:
        info["load_average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    return info


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        if v is None:
            return "–"
        if isinstance(v, float):
            if math.isnan(v):
                return "–"
            return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def replace_section(path: Path, begin: str, end: str, text: str, title: str) -> None:
    """Put `text` between the marker comments `begin`/`end` of `path`, or append a section."""
    content = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        _, tail = rest.split(end, 1)
        content = head + block + tail
    else:
        content = content.rstrip() + f"\n\n## {title}\n\n{block}\n"
    path.write_text(content)

"""`splatlab train --nproc N`: start N training processes on this machine and watch them.

Each process is the same command line again, with the variables torchrun would set (RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and its share of the
cores (OMP_NUM_THREADS, NUMBA_NUM_THREADS). When one exits with an error or is killed, the
others fail at their next collective (train/distributed.py); the launcher waits for them
for the collective timeout, then ends them, and names the first process that failed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from .distributed import threads_per_process

GRACE_S = 30.0  # beyond the collective timeout, before the survivors are terminated


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(rank: int, nproc: int, port: int) -> dict[str, str]:
    threads = str(threads_per_process(nproc))
    return {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": threads, "NUMBA_NUM_THREADS": threads}


def describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def launch(nproc: int, argv: list[str], timeout_s: float) -> int:
    """Run `splatlab <argv>` in `nproc` processes; 0 when all succeed, else the first failure's
    code (2 for a bad argument, 1 otherwise)."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "splatlab.cli", *argv], env=child_env(r, nproc, port))
             for r in range(nproc)]
    # Ctrl-C reaches every process of the terminal's group: the children stop cleanly (rank 0
    # checkpoints). A SIGTERM sent to the launcher alone (schedulers) is passed on.
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: [p.send_signal(signal.SIGTERM) for p in procs])}
    try:
        return _watch(procs, timeout_s)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _watch(procs: list[subprocess.Popen], timeout_s: float) -> int:
    failed = None  # (rank, code) of the first process that failed
    deadline = None
    while any(p.poll() is None for p in procs):
        if failed is None:
            failed = _first_failure(procs)
            if failed is not None:
                deadline = time.monotonic() + timeout_s + GRACE_S
        if deadline is not None and time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.1)
    failed = failed or _first_failure(procs)
    if failed is None:
        return 0
    if all(p.returncode == 130 for p in procs):  # Ctrl-C: every process stopped cleanly, rank 0 saved
        return 130
    rank, code = failed
    print(f"error: training process rank {rank} of {len(procs)} {describe(code)}; the others were stopped. "
          "The last checkpoint is intact: continue with splatlab train --resume --output DIR "
          "(with any --nproc)", file=sys.stderr)
    return 2 if code == 2 else 1


def _first_failure(procs: list[subprocess.Popen]):
    """(rank, code) of the process that failed first, as far as one can tell: one killed by a
    signal before one that exited with an error (those report the death of a peer)."""
    failed = [(r, p.returncode) for r, p in enumerate(procs) if p.returncode not in (None, 0)]
    return min(failed, key=lambda f: (f[1] >= 0, f[0])) if failed else None

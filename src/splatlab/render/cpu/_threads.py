"""Numba's thread pool for the CPU backend: started once, sized per call; zero-copy views."""

from __future__ import annotations

import contextlib
import os
import threading

import numba
import numpy as np
import torch


def _np(t: torch.Tensor) -> np.ndarray:
    """Zero-copy NumPy view of a detached, contiguous CPU tensor."""
    return t.detach().contiguous().numpy()


_pool_lock = threading.Lock()
_pool_started = False


def start_thread_pool() -> None:
    """Start Numba's thread pool, telling an OpenMP runtime to sleep rather than spin.

    PyTorch runs its own OpenMP pool. By default OpenMP workers spin for a while after each
    parallel region; with two pools in one process, the spinning workers of one steal the
    cores the other needs, which hurts most on small or busy machines.
    OMP_WAIT_POLICY=PASSIVE is read once, when the runtime Numba loads starts, so it is set
    only for that moment (unless the user chose a policy) and the environment is restored.
    Numba's own choice of threading layer (tbb, omp, workqueue) is left alone.
    """
    global _pool_started
    if _pool_started:
        return
    with _pool_lock:
        if _pool_started:
            return
        try:
            from numba.np.ufunc import parallel

            if not getattr(parallel, "_is_initialized", True):
                if "OMP_WAIT_POLICY" in os.environ:
                    parallel._launch_threads()
                else:
                    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
                    try:
                        parallel._launch_threads()
                    finally:
                        os.environ.pop("OMP_WAIT_POLICY", None)
        except (ImportError, AttributeError):  # a Numba without these internals: its defaults
            pass
        _pool_started = True


@contextlib.contextmanager
def numba_threads(n: int):
    """Run Numba's parallel loops on `n` threads (clamped to NUMBA_NUM_THREADS), then restore."""
    start_thread_pool()
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(previous)

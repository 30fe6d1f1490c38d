"""Peak resident memory of each process of `splatlab train` (issue 14: memory that scales).

    python benchmarks/bench_memory.py --nproc 2 -- DATA --iterations 30 --max-minutes None ...
    python benchmarks/bench_memory.py --nproc 2 --pixels -- DATA --downscale 1

Starts the processes as `splatlab train --nproc N` does (its environment: RANK, WORLD_SIZE,
threads per process; train/launch.py), waits for each with wait4 and prints its peak RSS
(ru_maxrss). With --nproc 1 it runs one plain process. Not a timing benchmark: it may run at
low priority on a busy machine. The splatlab it runs is the one `python -m splatlab.cli` finds
(set PYTHONPATH to measure another checkout).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from splatlab.train.launch import child_env, free_port


def peak_rss_mib(nproc: int, train_args: list[str]) -> list[float]:
    """Each process's peak RSS in MiB, in rank order; raises when one fails."""
    command = [sys.executable, "-m", "splatlab.cli", "train", *train_args]
    port = free_port()
    envs = [child_env(r, nproc, port) for r in range(nproc)] if nproc > 1 else [dict(os.environ)]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL) for env in envs]
    peaks = []
    for rank, proc in enumerate(procs):
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"rank {rank} of {nproc} exited with {proc.returncode}")
        peaks.append(usage.ru_maxrss / 1024.0)  # KiB on Linux
    return peaks


def pixels_held_mib(data: str, downscale: int, nproc: int) -> list[float]:
    """MiB of image, alpha and mask tensors each rank holds (LoadOptions.share)."""
    from splatlab.data import load_scene
    from splatlab.data.scene import ViewShare

    out = []
    for rank in range(nproc):
        scene = load_scene(data, downscale=downscale, verbose=False, share=ViewShare(rank, nproc))
        tensors = [t for v in scene.train + scene.test for t in (v.image, v.alpha, v.mask) if t is not None]
        out.append(sum(t.numel() * t.element_size() for t in tensors) / 2**20)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--pixels", action="store_true",
                        help="only print the MiB of pixels each rank loads (train_args: DATA [--downscale N])")
    parser.add_argument("train_args", nargs="+", help="arguments of splatlab train (after --)")
    args = parser.parse_args()
    if args.pixels:
        downscale = int(args.train_args[args.train_args.index("--downscale") + 1]) \
            if "--downscale" in args.train_args else 1
        held = pixels_held_mib(args.train_args[0], downscale, args.nproc)
        print(" ".join(f"rank {r}: {p:.1f} MiB of pixels" for r, p in enumerate(held)))
        return
    peaks = peak_rss_mib(args.nproc, args.train_args)
    print(" ".join(f"rank {r}: {p:.0f} MiB" for r, p in enumerate(peaks)))


if __name__ == "__main__":
    main()

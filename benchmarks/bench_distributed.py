"""Data-parallel training on one machine (issue 14): all-reduce cost, views/s, quality.

    python benchmarks/bench_distributed.py allreduce [--sizes 50000 200000 1000000 3000000]
    python benchmarks/bench_distributed.py throughput [--iterations 60] [--downscale 2] [--init 30000]
    python benchmarks/bench_distributed.py quality [--iterations 500] [--downscale 2] [--init 30000]
    python benchmarks/bench_distributed.py rules [--iterations 2000] [--batch 4]
    python benchmarks/bench_distributed.py all --json out.json

allreduce: 2 gloo processes (1 thread each) all-reduce the gradients of N Gaussians (SH degree 3:
59 floats each) as `Group.reduce_gradients` does (one all-reduce per tensor, all in flight),
packed into one flat buffer (kept between steps), and one blocking all-reduce per tensor;
milliseconds per step (median of 10 after 2 warm-ups), bytes per step.
throughput: `splatlab train` on lego_400 with 1 process x 2 threads, 1 process x 1 thread and
--nproc 2 (1 thread each): views per second while training (log.jsonl, from the first logged
step to the last: placing the initial Gaussians and compiling are left out).
quality: the same, a longer run, then validation PSNR at equal views seen (--nproc 2 vs 1 process).
rules: one process, batch 1 against batch B (`--batch`) under the gsplat and the Grendel
learning-rate rule, at equal views seen: which rule holds quality.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

LEGO = ROOT.parent / "shared" / "data" / "lego_400"
FLOATS_PER_GAUSSIAN = 3 + 4 + 3 + 1 + 3 + 45  # means, quats, log_scales, opacity, sh0, shN (degree 3)


def _allreduce_rank(rank: int, port: int, sizes: list[int], out: str) -> None:
    import torch
    import torch.distributed as dist

    from splatlab.gaussians import Gaussians
    from splatlab.train import distributed
    from splatlab.train.optim import as_parameters

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    distributed.set_threads(1)
    group = distributed.setup(distributed.Topology(rank, 2, rank, 2), "cpu", "gloo", 120.0)
    rows = []
    for n in sizes:
        params = as_parameters(Gaussians.random(n, sh_degree=3))
        for p in params.params().values():
            p.grad = torch.randn_like(p)
        state = type("S", (), {"params": params, "extras": {}})()

        grads = [p.grad for p in params.params().values()]
        flat = torch.empty(sum(g.numel() for g in grads))  # kept between steps

        def flat_buffer():  # pack, one all-reduce, unpack
            torch.cat([g.reshape(-1) for g in grads], out=flat)
            dist.all_reduce(flat)
            flat.mul_(0.5)
            for g, chunk in zip(grads, flat.split([g.numel() for g in grads])):
                g.copy_(chunk.view_as(g))

        def per_tensor():  # one blocking all-reduce after the other
            for g in grads:
                dist.all_reduce(g)
                g.mul_(0.5)

        row = {"gaussians": n, "bytes": n * FLOATS_PER_GAUSSIAN * 4}
        for name, fn in (("async_ms", lambda: group.reduce_gradients(state)), ("flat_ms", flat_buffer),
                         ("per_tensor_ms", per_tensor)):
            times = []
            for i in range(12):
                dist.barrier()
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            row[name] = 1000 * statistics.median(times[2:])
        row["agree_ms"] = 1000 * statistics.median(
            [_timed(lambda: group.agree(1.0, False)) for _ in range(50)][5:])
        rows.append(row)
        del params, state, grads, flat
    if rank == 0:
        Path(out).write_text(json.dumps(rows))
    distributed.teardown()


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def allreduce(sizes: list[int]) -> list[dict]:
    import tempfile

    import torch.multiprocessing as mp

    from splatlab.train.launch import free_port

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        mp.spawn(_allreduce_rank, args=(free_port(), sizes, str(out)), nprocs=2, join=True)
        rows = json.loads(out.read_text())
    for r in rows:
        r["GB_per_s"] = r["bytes"] / (r["async_ms"] / 1000) / 1e9
    return rows


def train(out: Path, iterations: int, nproc: int, threads: int, downscale: int, init: int,
          batch: int = 1, rule: str = "gsplat") -> dict:
    """One `splatlab train` on lego_400: views/s while training (from log.jsonl, placing the
    initial Gaussians left out), and the final validation metrics."""
    cmd = [sys.executable, "-m", "splatlab.cli", "train", str(LEGO), "--output", str(out), "--force",
           "--iterations", str(iterations), "--max-minutes", "None", "--eval-split", "val", "--no-progress",
           "--save-at", str(iterations), "--eval-at", str(iterations), "--no-save-renders",
           "--downscale", str(downscale), "--init-num-random", str(init)]
    if batch > 1:
        cmd += ["--batch-size", str(batch), "--batch-rule", rule]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    else:
        cmd += ["--render.num-threads", str(threads)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    m = json.loads((out / "metrics.json").read_text())[-1]
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"event": "step"' in line]
    first, last = steps[0], steps[-1]  # from the first logged step (after init and warm-up) to the end
    views_per_s = (last["step"] - first["step"]) * nproc * batch / (last["elapsed"] - first["elapsed"])
    return {"nproc": nproc, "threads_each": threads, "batch": batch, "rule": rule if batch > 1 else "-",
            "iterations": iterations, "train_s": m["elapsed_seconds"],
            "views_per_s": views_per_s, "wall_s": wall, "psnr": m["psnr"],
            "ssim": m["ssim"], "gaussians": m["num_gaussians"], "command": " ".join(cmd[1:])}


def compare(iterations: int, out: Path, downscale: int, init: int, single_thread: bool = False) -> list[dict]:
    cores = len(os.sched_getaffinity(0))
    rows = [train(out / "one", iterations, 1, cores, downscale, init)]
    if single_thread:  # t_v of one process on its share of the cores, for the speed-up model
        rows.append(train(out / "one_1thread", iterations, 1, max(1, cores // 2), downscale, init))
    return rows + [train(out / "nproc", iterations, 2, max(1, cores // 2), downscale, init)]


def rules(iterations: int, out: Path, downscale: int, init: int, batch: int) -> list[dict]:
    """Quality at equal views seen: one process with batch 1, and with `batch` views per step
    under each learning-rate rule (gsplat: sqrt(B) lr and linear momentum; Grendel: beta^B)."""
    cores = len(os.sched_getaffinity(0))
    rows = [train(out / "batch1", iterations, 1, cores, downscale, init)]
    for rule in ("gsplat", "grendel"):
        rows.append(train(out / f"batch{batch}_{rule}", iterations, 1, cores, downscale, init, batch, rule))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["allreduce", "throughput", "quality", "rules", "all"])
    parser.add_argument("--batch", type=int, default=4, help="rules: views per step compared with batch 1")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000, 1_000_000, 3_000_000])
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--downscale", type=int, default=2, help="lego_400 at 1/downscale (2: 200x200)")
    parser.add_argument("--init", type=int, default=30_000, help="initial Gaussians (--init-num-random)")
    parser.add_argument("--output", type=Path, default=ROOT / "outputs" / "bench_distributed")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results: dict = {"cores": len(os.sched_getaffinity(0)), "load_before": os.getloadavg()}
    if args.what in ("allreduce", "all"):
        results["allreduce"] = allreduce(args.sizes)
        for r in results["allreduce"]:
            print(f"{r['gaussians']:>9} Gaussians {r['bytes'] / 1e6:7.1f} MB  async {r['async_ms']:7.1f} ms "
                  f"({r['GB_per_s']:.2f} GB/s)  flat {r['flat_ms']:7.1f} ms  per tensor {r['per_tensor_ms']:7.1f} ms  "
                  f"step barrier {r['agree_ms']:.3f} ms")
    if args.what in ("throughput", "all"):
        results["throughput"] = compare(args.iterations or 60, args.output / "throughput", args.downscale, args.init,
                                        single_thread=True)
    if args.what in ("quality", "all"):
        results["quality"] = compare(args.iterations or 500, args.output / "quality", args.downscale, args.init)
    if args.what == "rules":  # not in "all": three trainings of 2,000 views
        results["rules"] = rules(args.iterations or 2000, args.output / "rules", args.downscale, args.init, args.batch)
    for key in ("throughput", "quality", "rules"):
        for r in results.get(key, []):
            print(f"{key}: {r['nproc']} proc x {r['threads_each']} threads, batch {r['batch']} ({r['rule']}): "
                  f"{r['views_per_s']:.2f} views/s, "
                  f"{r['iterations']} views in {r['train_s']:.0f} s, val PSNR {r['psnr']:.2f} dB, {r['gaussians']} Gaussians")
    results["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

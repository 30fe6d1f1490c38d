"""The training loss on CPU: fused SSIM against its PyTorch twin, and the OpenMP wait policy.

    python benchmarks/bench_loss.py                  # 400², 2 threads, 9 runs
    python benchmarks/bench_loss.py --res 256 --threads 1 2

For each thread count, two child processes: one imports splatlab first (OMP_WAIT_POLICY=PASSIVE
set before torch loads its OpenMP runtime, as the CLI runs), one imports torch first (OpenMP's
default: workers spin after each parallel region). Each reports the median wall time of
loss = 0.8 L1 + 0.2 (1 - SSIM) forward+backward with the fused SSIM and with the PyTorch twin
(losses._ssim_map_torch), and of an L1 forward+backward alone, all after a Numba kernel ran.
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

SRC = Path(__file__).resolve().parents[1] / "src"


def child(res: int, threads: int, repeats: int, torch_first: bool) -> dict:
    if torch_first:
        import torch  # noqa: F401  before splatlab: its OMP_WAIT_POLICY comes too late
    sys.path.insert(0, str(SRC))
    import torch

    from splatlab import losses

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(res, res, 3, generator=gen)
    render = (target + 0.1 * torch.randn(res, res, 3, generator=gen)).clamp(0, 1)

    def fused():
        x = render.clone().requires_grad_()
        torch.autograd.grad(losses.photometric_loss(x, target), x)

    def twin():
        x = render.clone().requires_grad_()
        ssim = losses._ssim_map_torch(x.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None]).mean()
        torch.autograd.grad(0.8 * losses.l1(x, target) + 0.2 * (1 - ssim), x)

    def l1():
        x = render.clone().requires_grad_()
        torch.autograd.grad(losses.l1(x, target), x)

    def median_ms(fn):
        fn()  # warm-up (and, for fused, the Numba kernels' first load)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return round(1000 * statistics.median(times), 2)

    return {"fused_ms": median_ms(fused), "twin_ms": median_ms(twin), "l1_after_numba_ms": median_ms(l1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--res", type=int, default=400)
    ap.add_argument("--threads", type=int, nargs="+", default=[2])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(**json.loads(args.child))))
        return 0
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    print(f"| threads | OpenMP wait policy | loss fwd+bwd, fused SSIM ms | loss fwd+bwd, PyTorch SSIM ms | "
          f"L1 fwd+bwd ms |\n|---|---|---|---|---|")  # fmt: skip
    for threads in args.threads:
        for torch_first, policy in ((False, "PASSIVE (splatlab first)"), (True, "default (torch first)")):
            config = {"res": args.res, "threads": threads, "repeats": args.repeats, "torch_first": torch_first}
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)], env=env,
                                 capture_output=True, text=True, check=True)  # fmt: skip
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {threads} | {policy} | {r['fused_ms']} | {r['twin_ms']} | {r['l1_after_numba_ms']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

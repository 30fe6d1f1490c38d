"""Where one CPU training step's time goes, stage by stage (issue 12).

    python benchmarks/profile_step.py                          # 64k and 200k Gaussians at 400², 2 threads
    python benchmarks/profile_step.py --src ../main/src        # the same for another checkout's code
    python benchmarks/profile_step.py --sizes 64k --repeats 9 --markdown
    python benchmarks/profile_step.py --ply point_cloud.ply    # a trained model, bench_render.py's view

One step as training runs it on the cpu backend: projection (ProjectGaussians), binning,
compositing forward (no depth channel where the code supports that, as training renders),
loss = 0.8 L1 + 0.2 (1 - SSIM) forward and backward, compositing backward, projection
backward, and the fused Adam step of train/optim.py on all six parameters. Each stage is
timed on its own (wall clock, or with --clock cpu the process's CPU time; median over
--repeats steps after two warm-up steps), by calling
the stages' autograd Functions in order and taking the backward one stage at a time with
torch.autograd.grad. Scene: benchmarks/common.py's standard random scene at SH degree 3
(shN random, small), float32, the target a fixed random image.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES = ["project fwd", "binning", "composite fwd", "loss+SSIM fwd+bwd", "composite bwd", "project bwd", "Adam",
          "total"]  # fmt: skip


def _import_stages():
    """(ProjectGaussians, CameraParams, bin_gaussians, CompositeTiles) in either code layout."""
    try:
        from splatlab.render.cpu.binning import bin_gaussians
        from splatlab.render.cpu.composite import CompositeTiles
        from splatlab.render.cpu.project import CameraParams, ProjectGaussians
    except ImportError:  # before issue 10: one autograd.py
        from splatlab.render.cpu.autograd import CameraParams, CompositeTiles, ProjectGaussians, bin_gaussians
    return ProjectGaussians, CameraParams, bin_gaussians, CompositeTiles


def _camera_params(CameraParams, camera, threads, sh_degree=3):
    import torch

    viewmat = camera.viewmat.to(torch.float32).double().contiguous().numpy()
    campos = camera.position.to(torch.float32).double().contiguous().numpy()
    return CameraParams(viewmat=viewmat, campos=campos, fx=camera.fx, fy=camera.fy, cx=camera.cx, cy=camera.cy,
                        width=camera.width, height=camera.height, near=0.01, far=1e10, eps2d=0.3,
                        antialiased=False, sh_degree=sh_degree, num_threads=threads)  # fmt: skip


def _scene(n: int, res: int, ply: str | None):
    """(raw parameter tensors, camera, SH degree, generator for the target image): the standard
    random scene at SH degree 3, or a trained model seen as bench_render.py --ply sees it."""
    import torch

    import common

    if ply:
        import bench_render

        g, camera = bench_render.load_ply_scene(ply, res)
        degree = round((g.shN.shape[1] + 1) ** 0.5) - 1
        return ([g.means, g.quats, g.log_scales, g.logit_opacities, g.sh0, g.shN], camera, degree,
                torch.Generator().manual_seed(2))  # fmt: skip
    base, camera = common.standard_scene(n, res)
    gen = torch.Generator().manual_seed(2)
    shN = 0.05 * torch.randn(n, 15, 3, generator=gen)
    return [base.means, base.quats, base.log_scales, base.logit_opacities, base.sh0, shN], camera, 3, gen


def profile(n: int, res: int, threads: int, repeats: int, clock=time.perf_counter, ply: str | None = None) -> dict:
    import torch

    from splatlab.losses import photometric_loss

    ProjectGaussians, CameraParams, bin_gaussians, CompositeTiles = _import_stages()
    no_depth = "render_depth" in inspect.signature(CompositeTiles.forward).parameters
    torch.set_num_threads(threads)
    raw, camera, degree, gen = _scene(n, res, ply)
    n = len(raw[0])
    params = [torch.nn.Parameter(t.detach().clone().contiguous()) for t in raw]
    optims = [torch.optim.Adam([p], lr=1e-3, fused=True) for p in params]
    target = torch.rand(res, res, 3, generator=gen)
    cam = _camera_params(CameraParams, camera, threads, degree)
    times = {k: [] for k in STAGES}

    def step(record: bool):
        marks = [clock()]
        means2d, conics, depths, opac, colors, radii, rect = ProjectGaussians.apply(*params, cam)
        marks.append(clock())
        binning = bin_gaussians(radii, rect, depths, res, res, threads)
        marks.append(clock())
        extra = (False,) if no_depth else ()
        image, _alpha, _depth = CompositeTiles.apply(means2d, conics, opac, colors, depths, binning, res, res,
                                                     (0.0, 0.0, 0.0), threads, False, *extra)  # fmt: skip
        marks.append(clock())
        loss = photometric_loss(image, target)
        (g_image,) = torch.autograd.grad(loss, image)
        marks.append(clock())
        screen = [means2d, conics, opac, colors, depths]
        g_screen = torch.autograd.grad(image, screen, g_image, allow_unused=True)
        marks.append(clock())
        g_screen = [torch.zeros_like(t) if g is None else g for t, g in zip(screen, g_screen)]
        grads = torch.autograd.grad(screen, params, g_screen)
        marks.append(clock())
        for p, g, opt in zip(params, grads, optims):
            p.grad = g
            opt.step()
        marks.append(clock())
        if record:
            for name, t0, t1 in zip(STAGES, marks, marks[1:]):
                times[name].append(t1 - t0)
            times["total"].append(marks[-1] - marks[0])
        return binning.num_intersections

    step(False)
    step(False)
    isect = 0
    for _ in range(repeats):
        isect = step(True)
    import splatlab

    return {"src": str(Path(splatlab.__file__).parents[1]), "scene": Path(ply).name if ply else "random",
            "n": n, "res": res, "threads": threads, "intersections": isect, "no_depth": no_depth,
            "ms": {k: round(1000 * statistics.median(v), 1) for k, v in times.items()}}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["64k", "200k"])
    ap.add_argument("--res", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--ply", default=None, help="a trained model instead of the random scene (one size: its own)")
    ap.add_argument("--src", default=str(HERE.parent / "src"), help="the splatlab source tree to profile")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall clock, or this process's CPU time (all threads; steadier on a busy machine)")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(Path(args.src).resolve()))
    import splatlab  # noqa: F401  first, as the CLI does: its import-time settings apply (OMP_WAIT_POLICY)
    rows = []
    for size in ["0"] if args.ply else args.sizes:  # a model has its own size
        n = int(float(size.rstrip("kK")) * 1000) if size[-1] in "kK" else int(size)
        clock = time.perf_counter if args.clock == "wall" else time.process_time
        r = profile(n, args.res, args.threads, args.repeats, clock, args.ply)
        r["clock"] = args.clock
        print(json.dumps(r), flush=True)
        rows.append(r)
    if args.markdown:
        print("| Gaussians | intersections | " + " | ".join(f"{s} ms" for s in STAGES) + " |")
        print("|---|---|" + "---|" * len(STAGES))
        for r in rows:
            name = f"{r['n'] // 1000}k" + (f" {r['scene']}" if args.ply else "")
            print(f"| {name} | {r['intersections']} | " + " | ".join(str(r["ms"][s]) for s in STAGES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

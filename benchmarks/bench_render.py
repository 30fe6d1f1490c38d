"""Rendering speed: backend="cpu" (Numba kernels) against "reference" (PyTorch) — issue 3.

    python benchmarks/bench_render.py                         # 10k, 100k, 1M Gaussians at 256 and 800 px
    python benchmarks/bench_render.py --quick                 # 10k and 100k at 256 px, fewer repeats
    python benchmarks/bench_render.py --sizes 100k --res 256  # one configuration
    python benchmarks/bench_render.py --write-docs docs/benchmarks.md   # also update the docs table
    python benchmarks/bench_render.py --ply point_cloud.ply   # a trained model instead of the random scene
    python benchmarks/bench_render.py --backend triton [...]  # GPU: triton vs gsplat (benchmarks/gpu/bench_render_gpu.py)
    python benchmarks/bench_render.py --quick --baseline ../main   # also main's cpu backend, same run, interleaved
    python benchmarks/bench_render.py --quick --no-depth      # as training renders: no depth channel

The scene is benchmarks/common.py's standard random scene (seed 0, SH degree 0, camera at
z = -3 with f = resolution), rendered in float32; the backward is that of
loss = sum(image * w) with w a fixed random image. For each configuration a fresh child
process reports the median forward time (autograd enabled, as in training) and the median
forward+backward time over several runs after warm-up, the peak resident memory added by
rendering (ru_maxrss after the runs minus ru_maxrss once the scene is built), and the number
of tile-Gaussian intersections. The cpu backend runs at each of --threads (Numba and torch
both set to that many threads); the reference runs with all cores. The reference is skipped
where it would take minutes per iteration (1M Gaussians, and 100k+ at 800 px) unless
--slow-reference is given. The reference's timed runs are cut (to at least one) when they
would take more than two minutes per phase.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import common  # noqa: E402

DOCS_BEGIN = "<!-- bench_render:begin -->"
DOCS_END = "<!-- bench_render:end -->"


def parse_count(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def human(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


# ---- child: one configuration ---------------------------------------------------------------


def load_ply_scene(path: str, resolution: int):
    """A trained model and a camera looking at it from outside its bulk (a heuristic view)."""
    import torch

    from splatlab import Camera

    try:
        from splatlab.io.ply import read_ply
    except ImportError as exc:  # the reader is optional for this benchmark
        raise SystemExit(f"--ply needs splatlab.io.ply.read_ply: {exc}")
    gaussians = read_ply(path).to(dtype=torch.float32)
    means = gaussians.means.double()
    centre = means.median(dim=0).values
    extent = float((means - centre).norm(dim=-1).quantile(0.9))
    eye = centre + torch.tensor([0.0, 0.0, -2.5 * extent], dtype=torch.float64)
    camera = Camera.look_at(eye.tolist(), centre.tolist(), up=(0.0, -1.0, 0.0),
                            fov_x=math.radians(50), width=resolution, height=resolution)  # fmt: skip
    return gaussians, camera


def child(config: dict) -> None:
    import torch

    from splatlab import RenderSettings, rasterize

    threads = config["threads"]
    torch.set_num_threads(threads)
    if config.get("ply"):
        gaussians, camera = load_ply_scene(config["ply"], config["res"])
    else:
        gaussians, camera = common.standard_scene(config["n"], config["res"])
    gaussians.requires_grad_()
    weights = common.loss_weights(camera.height, camera.width)
    settings = RenderSettings(backend=config["backend"], num_threads=threads,
                              render_depth=config.get("render_depth", True))
    params = list(gaussians.params().values())
    # Load the backend's code (Numba's cached kernels) on a tiny scene first, so that the memory
    # measured below is the rendering's, not the one-off cost of loading compiled code.
    tiny, tiny_camera = common.standard_scene(100, 32)
    rasterize(tiny.requires_grad_(), tiny_camera, settings).image.sum().backward()
    rss_setup = common.max_rss_mb()

    def forward():
        rasterize(gaussians, camera, settings)

    def forward_backward():
        out = rasterize(gaussians, camera, settings)
        (out.image * weights).sum().backward()
        for p in params:
            p.grad = None

    warmup, budget = config["warmup"], config.get("budget_s")
    fwd = common.time_calls(forward, config["repeats"], warmup=warmup, budget_s=budget)
    fwd_bwd = common.time_calls(forward_backward, config["repeats"], warmup=warmup, budget_s=budget)
    with torch.no_grad():
        out = rasterize(gaussians, camera, settings)
    print(json.dumps({
        "fwd_ms": common.median_ms(fwd),
        "fwd_bwd_ms": common.median_ms(fwd_bwd),
        "fwd_runs_ms": [round(1000 * t, 2) for t in fwd],
        "fwd_bwd_runs_ms": [round(1000 * t, 2) for t in fwd_bwd],
        "rss_setup_mb": rss_setup,
        "rss_peak_mb": common.max_rss_mb(),
        "intersections": out.num_intersections,
        "gaussians": len(gaussians),
    }))  # fmt: skip


# ---- parent: the grid -----------------------------------------------------------------------


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--backend" in argv[:-1] and argv[argv.index("--backend") + 1] == "triton":  # GPU: benchmarks/gpu/
        i = argv.index("--backend")
        sys.path.insert(0, str(HERE / "gpu"))
        import bench_render_gpu

        return bench_render_gpu.main(argv[:i] + argv[i + 2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10k and 100k at 256 px, 3 runs each")
    ap.add_argument("--sizes", nargs="+", default=None, help="Gaussian counts, e.g. 10k 100k 1M")
    ap.add_argument("--res", nargs="+", type=int, default=None, help="square image sizes, e.g. 256 800")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts for the cpu backend")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per configuration (median reported)")
    ap.add_argument("--no-reference", action="store_true", help="only the cpu backend")
    ap.add_argument("--slow-reference", action="store_true", help="also run the reference where it is slow")
    ap.add_argument("--ply", default=None, help="render a trained model (.ply) instead of the random scene")
    ap.add_argument("--baseline", default=None, metavar="DIR",
                    help="another checkout (e.g. ../main): its cpu backend runs too, interleaved with this one")
    ap.add_argument("--no-depth", action="store_true", help="render without the depth channel, as training does")
    ap.add_argument("--write-docs", default=None, metavar="PATH", help="update the table in this markdown file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0

    sizes = [parse_count(s) for s in (args.sizes or (["10k", "100k"] if args.quick else ["10k", "100k", "1M"]))]
    resolutions = args.res or ([256] if args.quick else [256, 800])
    if args.ply:
        sizes = [0]  # the model decides
    repeats = args.repeats or (3 if args.quick else 5)
    cores = os.cpu_count() or 1
    info = common.machine_info()
    print(f"# bench_render  {info['date']}  {info['cpu']}  cores={cores}  load={info.get('load_average', '?')}",
          file=sys.stderr)  # fmt: skip

    headers = ["Gaussians", "image", "intersections", "backend", "threads", "forward ms", "fwd+bwd ms",
               "peak RSS +MB", "ref/cpu fwd", "ref/cpu fwd+bwd"]  # fmt: skip
    rows, notes, results = [], [], []
    for res in resolutions:
        for n in sizes:
            label = human(n) if not args.ply else Path(args.ply).name
            runs = [(b, t) for t in args.threads for b in (["cpu", "baseline"] if args.baseline else ["cpu"])]
            slow = n >= 1_000_000 or (res >= 800 and n >= 100_000)
            if not args.no_reference:
                if slow and not args.slow_reference and not args.ply:
                    notes.append(f"reference skipped at {label} Gaussians, {res} px (too slow per iteration here; "
                                 "--slow-reference runs it)")  # fmt: skip
                else:
                    runs.append(("reference", cores))
            measured = {}
            for backend, threads in runs:
                config = {"n": n, "res": res, "backend": "cpu" if backend == "baseline" else backend,
                          "threads": threads, "ply": args.ply, "render_depth": not args.no_depth,
                          "repeats": max(1, repeats if backend != "reference" else min(repeats, 3)),
                          "warmup": 2 if backend != "reference" else 1,
                          "budget_s": None if backend != "reference" else 120.0}  # fmt: skip
                print(f"  {label:>6} @ {res} px  {backend:9s} x{threads} ...", end="", flush=True, file=sys.stderr)
                r = common.run_child(Path(__file__), config, timeout=1800 if backend == "reference" else 900,
                                     checkout=args.baseline if backend == "baseline" else None)
                print(f" {r.get('fwd_ms', float('nan')):.1f} / {r.get('fwd_bwd_ms', float('nan')):.1f} ms"
                      if "error" not in r else f" {r['error']}", file=sys.stderr)  # fmt: skip
                measured[(backend, threads)] = r
                results.append({**config, **r, "label": backend})
            ref = measured.get(("reference", cores), {})
            for (backend, threads), r in measured.items():
                if "error" in r:
                    rows.append([label, f"{res}²", None, backend, threads, None, None, None, None, None])
                    notes.append(f"{backend} x{threads} at {label}, {res} px failed: {r['error']}")
                    continue
                ratio_f = ratio_fb = None
                if backend in ("cpu", "baseline") and "fwd_ms" in ref:
                    ratio_f = ref["fwd_ms"] / r["fwd_ms"]
                    ratio_fb = ref["fwd_bwd_ms"] / r["fwd_bwd_ms"]
                rows.append([
                    label if not args.ply else f"{label} ({r['gaussians']})", f"{res}²", r["intersections"],
                    f"cpu ({args.baseline})" if backend == "baseline" else backend, threads, r["fwd_ms"], r["fwd_bwd_ms"], r["rss_peak_mb"] - r["rss_setup_mb"],
                    ratio_f, ratio_fb,
                ])  # fmt: skip

    command = "python benchmarks/bench_render.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    table = common.markdown_table(headers, rows)
    text = "\n".join([
        f"Command: `{command}`  ",
        f"Date: {info['date']} · CPU: {info['cpu']} · cores (os.cpu_count): {cores} · "
        f"torch {info['torch']} · numba {info.get('numba', '?')} · load average at start: "
        f"{info.get('load_average', '?')}",
        "",
        table,
        "",
        *[f"- {note}" for note in notes],
        "- ref/cpu: the reference's median time divided by this row's (same scene, same run).",
        "- peak RSS +MB: growth of the child process's peak resident memory during the timed runs.",
    ])  # fmt: skip
    print(text)
    if args.write_docs:
        common.replace_section(Path(args.write_docs), DOCS_BEGIN, DOCS_END, text, "Rendering (issue 3)")
        print(f"updated {args.write_docs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rendering speed on a GPU: backend="triton" against gsplat 1.5.3's CUDA rasterizer (issue 13).

    python benchmarks/bench_render.py --backend triton                 # same as running this file
    python benchmarks/gpu/bench_render_gpu.py                          # 100k and 1M at 256² and 800²
    python benchmarks/gpu/bench_render_gpu.py --ply model.ply          # also a trained model
    python benchmarks/gpu/bench_render_gpu.py --sweep                  # also CHUNK x warps at 1M, 800²
    python benchmarks/gpu/bench_render_gpu.py --dry-run                # the harness on CPU (interpreter)

Same scene and loss as benchmarks/bench_render.py (common.standard_scene, float32, loss =
sum(image * w)), in one run for both renderers so that the rows compare. Both render RGB only
(the trainer's setting; gsplat's render_mode="RGB", ours render_depth=False), with the same
near/far planes, low-pass filter, background and SH degree; gsplat with packed=False (the
default of its simple_trainer). Each configuration runs in a fresh child process: the first
call is timed alone (Triton's JIT compile or gsplat's extension load; cached afterwards), then
the median of --repeats forward passes (autograd on, as in training) and forward+backward passes
after warm-up, wall clock with torch.cuda.synchronize(); the peak GPU memory the render adds
(torch.cuda.max_memory_allocated over the scene's own); the tile-Gaussian pairs each renderer
composited; and the largest pixel difference between the two renderers' images.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent / "src"))

import common  # noqa: E402

BACKGROUND = (0.0, 0.0, 0.0)
GSPLAT_VERSION = "1.5.3"


# ---- child: one configuration ------------------------------------------------------------------


def _renderer(backend: str, camera, device, chunk: int | None, warps: int | None):
    """A function gaussians -> (image [H, W, 3], pairs composited) for the backend."""
    import torch

    from splatlab import RenderSettings, rasterize
    from splatlab.constants import EPS2D, FAR_PLANE, NEAR_PLANE

    if backend == "triton":
        from splatlab.render.triton import autograd as triton_autograd

        if chunk:
            triton_autograd.CHUNK = chunk
        if warps:
            triton_autograd.COMPOSITE_WARPS = warps
        settings = RenderSettings(backend="triton", background=BACKGROUND, render_depth=False)

        def render(g):
            out = rasterize(g, camera, settings)
            return out.image, out.num_intersections

        return render
    from gsplat import rasterization

    viewmat = camera.viewmat.to(device=device, dtype=torch.float32)[None]  # [1, 4, 4]
    ks = camera.K.to(device=device, dtype=torch.float32)[None]  # [1, 3, 3]
    bg = torch.tensor(BACKGROUND, device=device)[None]  # [1, 3]

    def render(g):
        colors = torch.cat([g.sh0, g.shN], dim=1)  # [N, K, 3]
        image, _alpha, meta = rasterization(
            g.means, g.quats, torch.exp(g.log_scales), torch.sigmoid(g.logit_opacities), colors, viewmat, ks,
            camera.width, camera.height, near_plane=NEAR_PLANE, far_plane=FAR_PLANE, eps2d=EPS2D,
            sh_degree=g.sh_degree, packed=False, backgrounds=bg, render_mode="RGB",
        )  # fmt: skip
        return image[0], int(meta["flatten_ids"].numel())

    return render


def child(config: dict) -> None:
    import torch

    device = torch.device(config["device"])
    if config.get("ply"):
        import bench_render

        gaussians, camera = bench_render.load_ply_scene(config["ply"], config["res"])
    else:
        gaussians, camera = common.standard_scene(config["n"], config["res"])
    gaussians = gaussians.to(device).requires_grad_()
    weights = common.loss_weights(camera.height, camera.width).to(device)
    params = list(gaussians.params().values())
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    render = _renderer(config["backend"], camera, device, config.get("chunk"), config.get("warps"))

    def forward():
        render(gaussians)
        sync()

    def forward_backward():
        image, _ = render(gaussians)
        (image * weights).sum().backward()
        for p in params:
            p.grad = None
        sync()

    t0 = time.perf_counter()
    forward_backward()  # compiles (Triton) or loads (gsplat) the kernels
    first_s = time.perf_counter() - t0
    base = torch.cuda.memory_allocated(device) if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    fwd = common.time_calls(forward, config["repeats"], warmup=config["warmup"])
    fwd_bwd = common.time_calls(forward_backward, config["repeats"], warmup=config["warmup"])
    peak_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if cuda else None
    with torch.no_grad():
        image, pairs = render(gaussians)
    if config.get("image_path"):
        torch.save(image.detach().float().cpu(), config["image_path"])
    print(json.dumps({
        "first_call_s": round(first_s, 2), "fwd_ms": common.median_ms(fwd), "fwd_bwd_ms": common.median_ms(fwd_bwd),
        "fwd_bwd_runs_ms": [round(1000 * t, 2) for t in fwd_bwd], "peak_mb": peak_mb, "pairs": pairs,
        "gaussians": len(gaussians),
    }))  # fmt: skip


# ---- parent: the grid ----------------------------------------------------------------------------


def _image_diff(a_path: str, b_path: str) -> float | None:
    import torch

    if not (os.path.exists(a_path) and os.path.exists(b_path)):
        return None
    a, b = torch.load(a_path), torch.load(b_path)
    return float((a - b).abs().max()) if a.shape == b.shape else None


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (CPU, Triton interpreter)"


def _configs(args) -> list[dict]:
    """The scenes, most important first (the targets are at the largest image), in case the
    time budget runs out."""
    sizes = [common_count(s) for s in args.sizes]
    res = sorted(args.res, reverse=True)
    scenes = [{"n": n, "res": res[0], "ply": None} for n in sizes]
    scenes += [{"n": 0, "res": args.ply_res, "ply": ply} for ply in args.ply]
    scenes += [{"n": n, "res": r, "ply": None} for r in res[1:] for n in sizes]
    return scenes


def common_count(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def _label(scene: dict, r: dict) -> str:
    if scene["ply"]:
        return f"{Path(scene['ply']).name} ({r.get('gaussians', '?')})"
    n = scene["n"]
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def run_grid(args, device: str, tmp: str) -> tuple[list, list, list]:
    """Every scene with triton and (when importable) gsplat; rows for the table, notes, raw results."""
    have_gsplat = device == "cuda" and importlib.util.find_spec("gsplat") is not None and not args.no_gsplat
    rows, notes, results = [], [], []
    if not have_gsplat:
        why = "left out (--no-gsplat)" if args.no_gsplat else "not importable here"
        notes.append(f"gsplat {GSPLAT_VERSION} {why}: its rows are missing (not measured)")
    for i, scene in enumerate(_configs(args)):
        measured = {}
        for backend in ["triton"] + (["gsplat"] if have_gsplat else []):
            if _time_left(args) < 20:
                notes.append(f"{backend} at {scene['ply'] or scene['n']}, {scene['res']} px: not measured "
                             "(the run's time budget, --deadline-s, was spent)")  # fmt: skip
                continue
            config = {**scene, "backend": backend, "device": device, "repeats": args.repeats, "warmup": args.warmup,
                      "image_path": os.path.join(tmp, f"{i}_{backend}.pt")}  # fmt: skip
            print(f"  {scene['ply'] or scene['n']} @ {scene['res']} px  {backend:7s} ...", end="", flush=True,
                  file=sys.stderr)  # fmt: skip
            r = common.run_child(Path(__file__), config, timeout=min(args.child_timeout, _time_left(args)))
            print(f" {r.get('fwd_bwd_ms', float('nan')):.2f} ms" if "error" not in r else f" {r['error']}",
                  file=sys.stderr)  # fmt: skip
            measured[backend] = r
            results.append({**config, **r})
        diff = _image_diff(os.path.join(tmp, f"{i}_triton.pt"), os.path.join(tmp, f"{i}_gsplat.pt"))
        ref = measured.get("gsplat", {})
        for backend, r in measured.items():
            label = _label(scene, r)
            if "error" in r:
                rows.append([label, f"{scene['res']}²", backend] + [None] * 7)
                notes.append(f"{backend} at {label}, {scene['res']} px failed: {r['error']}")
                continue
            ratio = r["fwd_bwd_ms"] / ref["fwd_bwd_ms"] if backend == "triton" and "fwd_bwd_ms" in ref else None
            rows.append([label, f"{scene['res']}²", backend, r["pairs"], r["first_call_s"], r["fwd_ms"],
                         r["fwd_bwd_ms"], r["peak_mb"], ratio, diff if backend == "triton" else None])  # fmt: skip
    return rows, notes, results


def _time_left(args) -> float:
    return float("inf") if args.deadline_s is None else args.deadline_s - (time.monotonic() - _STARTED)


_STARTED = time.monotonic()


def run_sweep(args, device: str) -> list:
    """Compositing CHUNK x warps for triton at 1M Gaussians, the largest image (tuning data)."""
    n, res = common_count(args.sweep_size), max(args.res)
    rows = []
    for chunk in (4, 8, 16):
        for warps in (4, 8):
            if _time_left(args) < 20:
                rows.append([n, f"{res}²", chunk, warps, None, None, "not measured (time budget)"])
                continue
            config = {"n": n, "res": res, "ply": None, "backend": "triton", "device": device, "chunk": chunk,
                      "warps": warps, "repeats": args.repeats, "warmup": args.warmup}  # fmt: skip
            r = common.run_child(Path(__file__), config, timeout=min(args.child_timeout, _time_left(args)))
            rows.append([n, f"{res}²", chunk, warps, r.get("fwd_ms"), r.get("fwd_bwd_ms"), r.get("error", "")])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="*", default=["100k", "1M"],
                    help="Gaussian counts of the random scene (none: only --ply models)")
    ap.add_argument("--res", nargs="+", type=int, default=[256, 800], help="square image sizes")
    ap.add_argument("--ply", nargs="*", default=[], help="trained models (.ply) rendered too")
    ap.add_argument("--ply-res", type=int, default=800, help="image size for the trained models")
    ap.add_argument("--repeats", type=int, default=10, help="timed runs per configuration (median reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-gsplat", action="store_true", help="triton rows only (e.g. gsplat's build is not ready)")
    ap.add_argument("--sweep", action="store_true", help="also time CHUNK x warps of the compositing kernels")
    ap.add_argument("--sweep-size", default="1M", help="Gaussians of the random scene the sweep renders")
    ap.add_argument("--child-timeout", type=float, default=300.0)
    ap.add_argument("--deadline-s", type=float, default=None,
                    help="stop starting configurations after this many seconds (rows left are 'not measured')")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown tables here")
    ap.add_argument("--json", type=Path, default=None, help="write the raw results here")
    ap.add_argument("--dry-run", action="store_true",
                    help="check the harness on CPU: tiny scenes through the Triton interpreter")  # fmt: skip
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    import torch

    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # inherited by the children
        args.sizes = ["300"] if args.sizes else []
        args.res, args.repeats, args.warmup, args.ply_res, args.sweep_size = [32], 1, 0, 32, "300"
        device = "cpu"
    elif not torch.cuda.is_available():
        print("error: no CUDA GPU here; --dry-run checks the harness on the CPU", file=sys.stderr)
        return 1
    else:
        device = "cuda"
    info = common.machine_info()
    import triton

    header = (f"Date: {info['date']} · GPU: {_gpu_name()} · torch {info['torch']} · triton {triton.__version__} · "
              f"CPU: {info['cpu']} ({info['cores']} cores)")  # fmt: skip
    print(f"# bench_render_gpu  {header}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        rows, notes, results = run_grid(args, device, tmp)
    headers = ["Gaussians", "image", "renderer", "pairs", "first call s", "forward ms", "fwd+bwd ms", "peak GPU MB",
               "triton/gsplat fwd+bwd", "max abs Δ image vs gsplat"]  # fmt: skip
    command = "python benchmarks/gpu/bench_render_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv)
    parts = [f"Command: `{command.strip()}`  ", header, "", common.markdown_table(headers, rows), "",
             *[f"- {note}" for note in notes],
             "- first call: the first forward+backward, with Triton's JIT compile (or gsplat's extension load).",
             "- triton/gsplat: this row's median forward+backward time over gsplat's (below 1 = triton faster).",
             "- pairs: tile-Gaussian pairs composited (both renderers cull tiles where alpha < 1/255 differently)."]
    if args.sweep:
        sweep = run_sweep(args, device)
        parts += ["", "Compositing tuning (triton, CHUNK pairs at a time x warps per tile):", "",
                  common.markdown_table(["Gaussians", "image", "CHUNK", "warps", "forward ms", "fwd+bwd ms", "error"],
                                        sweep)]  # fmt: skip
    text = "\n".join(parts)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compressed formats on a trained model: bytes per Gaussian and round-trip PSNR — issue 15.

    python benchmarks/bench_formats.py RUN [RUN ...] [--views 8] [--json out.json]

RUN is a `splatlab train` output folder (its latest point cloud, and the dataset its config.json
names) or a model file with --data DATA. For each format the model is written by splatlab and
  - read back by splatlab ("splatlab" column), and
  - converted by PlayCanvas splat-transform (.tools/, scripts/install_test_tools.sh) to an Inria
    .ply, which splatlab reads ("via splat-transform" column);
each decoded model is rendered by splatlab from the first --views held-out cameras of the dataset
and compared with the original model's render (PSNR over the image, the dataset's background).
Bytes per Gaussian count every file of the format (SOG: the .sog zip). For comparison,
splat-transform also writes each format from the Inria .ply (its defaults: SPZ v4, SOG with its
k-means on the CPU, only with --st-sog: minutes for 20k Gaussians on 2 cores) and splatlab reads
that file. Prints a markdown table.
Issue 15's bars at SH degree 3: SPZ <= 40 B/Gaussian, SOG <= 20, each round trip through
splat-transform >= 30 dB.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402

from splatlab.cli import find_model  # noqa: E402
from splatlab.edit import RunDataset, load_dataset, run_dataset  # noqa: E402
from splatlab.io import export_model, read_model, read_ply  # noqa: E402
from splatlab.render import RenderSettings, rasterize  # noqa: E402

SPLAT_TRANSFORM = HERE.parent / ".tools" / "node_modules" / ".bin" / "splat-transform"
FORMATS = {"ply": ".ply", "spz": ".spz", "sog": ".sog", "compressed.ply": ".compressed.ply"}


def _views(model: Path, data: Path | None, count: int):
    model_file, run = find_model(model)
    dataset = RunDataset(data) if data is not None else run_dataset(run)
    if dataset is None:
        raise SystemExit(f"{model}: no dataset for the cameras; pass --data DATA")
    scene = load_dataset(dataset)
    bg = tuple(scene.background) if scene.background is not None else (0.0, 0.0, 0.0)
    return model_file, [v.camera for v in scene.test[:count]], bg


def _psnr(renders: list[torch.Tensor], g, cameras, settings) -> float:
    """Mean PSNR of `g`'s renders against `renders` (the original model's)."""
    values = []
    for ref, cam in zip(renders, cameras):
        with torch.no_grad():
            img = rasterize(g, cam, settings).image
        mse = float(((img - ref) ** 2).mean())
        values.append(10 * math.log10(1.0 / max(mse, 1e-12)))
    return sum(values) / len(values)


def _size(path: Path) -> int:
    return path.stat().st_size


def _splat_transform(*args) -> bool:
    if not SPLAT_TRANSFORM.exists():
        return False
    r = subprocess.run([str(SPLAT_TRANSFORM), "-q", "-w", *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"splat-transform {' '.join(map(str, args))} failed:\n{r.stderr}")
    return True


def _via_splat_transform(path: Path, out: Path):
    """splatlab's file converted by splat-transform to an Inria .ply, read by splatlab."""
    return read_ply(out) if _splat_transform(path, out) else None


def _from_splat_transform(ply: Path, fmt: str, out: Path, sog: bool):
    """(splat-transform's own file of `fmt` from the Inria .ply, read by splatlab; its size)."""
    if fmt == "sog" and not sog:  # its k-means over a 65536-entry palette on a CPU takes minutes
        return None, None
    options = ["-g", "cpu"] if fmt == "sog" else []  # no WebGPU device here
    if not _splat_transform(*options, ply, out):
        return None, None
    return read_model(out), out.stat().st_size


def bench_model(model: Path, data: Path | None, count: int, st_sog: bool = False) -> list[dict]:
    model_file, cameras, bg = _views(model, data, count)
    g = read_model(model_file)
    settings = RenderSettings(backend="cpu", background=bg)
    with torch.no_grad():
        renders = [rasterize(g, cam, settings).image for cam in cameras]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, suffix in FORMATS.items():
            path = Path(tmp) / f"model{suffix}"
            t0 = time.perf_counter()
            export_model(path, g, fmt)
            t_write = time.perf_counter() - t0
            t0 = time.perf_counter()
            back = read_model(path)
            t_read = time.perf_counter() - t0
            theirs = _via_splat_transform(path, Path(tmp) / f"st_{fmt}.ply") if fmt != "ply" else None
            written, st_size = (None, None) if fmt == "ply" else _from_splat_transform(
                Path(tmp) / "model.ply", fmt, Path(tmp) / f"by_st{suffix}", st_sog)
            rows.append({
                "model": str(model), "format": fmt, "gaussians": len(g), "sh_degree": g.sh_degree,
                "bytes_per_gaussian": _size(path) / len(g),
                "psnr_splatlab": _psnr(renders, back, cameras, settings),
                "psnr_splat_transform": None if theirs is None else _psnr(renders, theirs, cameras, settings),
                "st_bytes_per_gaussian": None if st_size is None else st_size / len(g),
                "psnr_st_written": None if written is None else _psnr(renders, written, cameras, settings),
                "write_s": t_write, "read_s": t_read, "views": len(cameras),
            })
            print(f"  {fmt}: {rows[-1]['bytes_per_gaussian']:.1f} B/Gaussian", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    def db(v):
        return "n/a" if v is None else ("lossless" if v >= 100 else f"{v:.2f}")

    def num(v):
        return "n/a" if v is None else f"{v:.1f}"

    lines = ["| model | Gaussians (SH) | format | bytes/Gaussian | PSNR splatlab round trip (dB) "
             "| PSNR via splat-transform (dB) | splat-transform's file: bytes/Gaussian, PSNR read by splatlab "
             "| write s | read s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {Path(r['model']).name} | {r['gaussians']} ({r['sh_degree']}) | {r['format']} "
                     f"| {r['bytes_per_gaussian']:.1f} | {db(r['psnr_splatlab'])} | {db(r['psnr_splat_transform'])} "
                     f"| {num(r['st_bytes_per_gaussian'])}, {db(r['psnr_st_written'])} "
                     f"| {r['write_s']:.1f} | {r['read_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="training output folders or model files")
    ap.add_argument("--data", type=Path, default=None, help="dataset for the cameras (default: the run's)")
    ap.add_argument("--views", type=int, default=8, help="held-out views to render")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--st-sog", action="store_true", help="also let splat-transform write SOG (slow on a CPU)")
    args = ap.parse_args()
    rows = [r for m in args.models for r in bench_model(m, args.data, args.views, args.st_sog)]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

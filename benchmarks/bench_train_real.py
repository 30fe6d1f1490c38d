"""Quality on real captures against wall-clock budgets, on the defaults, side by side with a
baseline checkout (the round-1 code) measured in the same run of this script.

    python benchmarks/bench_train_real.py --budgets 5 15 --baseline ../baseline-checkout
    python benchmarks/bench_train_real.py --scenes statue fox --budgets 15 --pictures docs/real

Each (scene, budget, code) is one `splatlab train DATA --max-minutes B` in a child process,
one after the other (runs compete for the same cores otherwise), with the code's own
defaults. The row reports the run's own final evaluation (metrics.json): test PSNR/SSIM over
the pixels it says it counts, the Gaussian count, the iterations and the training resolution.
The baseline's code writes caches into its dataset folder, so it gets a temporary copy of it;
the code under test reads ../shared/data directly (it never writes there).

Presets (scene name -> dataset and flags): statue (masks, the default), statue-nomasks
(--masks off: the whole frame, sky included), fox, lego (val split). The script prints a
markdown table; --json keeps the rows, --pictures copies one render | ground truth image per
(scene, budget) of the code under test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
PRESETS = {
    "statue": ("statue_colmap", []),
    "statue-nomasks": ("statue_colmap", ["--masks", "off"]),
    "fox": ("fox", []),
    "lego": ("lego_400", ["--eval-split", "val"]),
}
BASELINE_FLAGS = {"statue-nomasks": None, "lego": ["--eval-split", "val"]}  # None: no such option then


def run_one(src: Path, data: Path, flags: list[str], minutes: float, out: Path, threads: int | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "splatlab.cli", "train", str(data), "--max-minutes", str(minutes),
           "--output", str(out), "--force", "--no-progress", *flags]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60 * minutes + 1800)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    metrics = json.loads((out / "metrics.json").read_text())[-1]
    renders = sorted((out / "renders" / "test").glob("*.png"))
    size = Image.open(renders[0]).size if renders else (0, 0)
    return {"psnr": metrics["psnr"], "ssim": metrics["ssim"], "psnr_exposure": metrics.get("psnr_exposure"),
            "pixels": metrics.get("pixels", "all pixels (round 1)"), "gaussians": metrics["num_gaussians"],
            "iterations": metrics["step"], "resolution": f"{size[0] // 2}x{size[1]}", "wall_s": round(wall),
            "command": " ".join(cmd[2:]), "renders": [str(p) for p in renders]}


def baseline_copy(name: str, tmp: Path) -> Path:
    """A writable copy of a dataset for code that writes caches into it."""
    target = tmp / name
    if not target.exists():
        shutil.copytree(DATA / name, target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", nargs="+", default=["statue", "statue-nomasks", "fox"], choices=list(PRESETS))
    parser.add_argument("--budgets", type=float, nargs="+", default=[5.0, 15.0, 60.0])
    parser.add_argument("--baseline", type=Path, default=None, help="a checkout of the code to compare with")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, default=REPO / "outputs" / "bench_real")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--pictures", type=Path, default=None, help="copy one render|truth image per row here")
    args = parser.parse_args()
    codes = [("this", REPO / "src")] + ([("baseline", args.baseline.resolve() / "src")] if args.baseline else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
        for scene in args.scenes:
            folder, flags = PRESETS[scene]
            for minutes in args.budgets:
                for code, src in codes:
                    if code == "baseline" and BASELINE_FLAGS.get(scene, flags) is None:
                        continue
                    data = DATA / folder if code == "this" else baseline_copy(folder, Path(tmp))
                    use = flags if code == "this" else BASELINE_FLAGS.get(scene, flags)
                    out = args.output / f"{scene}_{minutes:g}min_{code}"
                    row = {"scene": scene, "minutes": minutes, "code": code,
                           **run_one(src, data, use, minutes, out, args.threads)}
                    rows.append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "renders"}), flush=True)
                    if args.pictures and code == "this" and row.get("renders"):
                        args.pictures.mkdir(parents=True, exist_ok=True)
                        Image.open(row["renders"][0]).convert("RGB").save(
                            args.pictures / f"{scene}_{minutes:g}min.jpg", quality=88)
    print(f"\n{os.cpu_count()} cores; each row one `splatlab train DATA --max-minutes B` on its code's defaults\n")
    print("| scene | budget (min) | code | test PSNR (dB) | SSIM | PSNR-exp | pixels | Gaussians | iterations | resolution |")
    print("|---|---:|---|---:|---:|---:|---|---:|---:|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['scene']} | {r['minutes']:g} | {r['code']} | failed: {r['error']} ||||||")
            continue
        exp = f"{r['psnr_exposure']:.2f}" if r.get("psnr_exposure") is not None else "-"
        print(f"| {r['scene']} | {r['minutes']:g} | {r['code']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {exp} | "
              f"{r['pixels']} | {r['gaussians']} | {r['iterations']} | {r['resolution']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

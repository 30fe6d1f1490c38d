"""Floater removal on a trained model, measured on its held-out views — issue 16.

    python benchmarks/bench_edit_floaters.py RUN                    # density and visibility, default settings
    python benchmarks/bench_edit_floaters.py RUN --json out.json    # also write the rows as JSON
    python benchmarks/bench_edit_floaters.py RUN --reaches 1 2 --min-views 2 3 5

RUN is a `splatlab train` output folder: its latest point_cloud/iteration_*/point_cloud.ply is
the model, and its config.json names the dataset (with the downscale, test split and SH degree
it was trained with). The test views are rendered exactly as the trainer evaluates them
(metrics.evaluate_views, the dataset's background or black, every SH band the model has), before
and after `splatlab edit --floaters density|visibility` (splatlab.edit.edit_gaussians with the
training cameras), and a table gives the Gaussians removed and the mean PSNR / SSIM before and
after (and, for datasets with masks, the mean PSNR over the masked-in pixels only). Issue 16's bar: floater removal must not lower the held-out PSNR by more than 0.1 dB.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))


from splatlab.cli import find_model  # noqa: E402
from splatlab.edit import EditConfig, edit_gaussians, load_dataset, run_dataset  # noqa: E402
from splatlab.io import read_model  # noqa: E402
from splatlab.metrics import evaluate_views, psnr  # noqa: E402
from splatlab.render import RenderSettings  # noqa: E402


def _evaluate(gaussians, scene, settings) -> tuple[float, float, float | None]:
    """Mean test PSNR and SSIM as the trainer reports them, and the mean PSNR inside the masks."""
    masked = []

    def inside_mask(i, view, image):
        if view.mask is not None and view.mask.any():
            m = view.mask.bool()
            masked.append(psnr(image[m], view.image_float()[m]))

    result = evaluate_views(gaussians, scene.test, settings, on_image=inside_mask)
    return result["psnr"], result["ssim"], (sum(masked) / len(masked) if masked else None)


def _configs(args) -> list[tuple[str, EditConfig]]:
    configs = []
    for reach in args.reaches:
        for fraction in args.cluster_fractions:
            configs.append((f"density (k={args.neighbours}, reach {reach:g}, clusters < {100 * fraction:g}%)",
                            EditConfig(floaters="density", floater_neighbours=args.neighbours, floater_reach=reach,
                                       floater_cluster_fraction=fraction)))
    for views in args.min_views:
        configs.append((f"visibility (seen by >= {views} cameras)",
                        EditConfig(floaters="visibility", floater_min_views=views)))
    return configs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a `splatlab train` output folder")
    parser.add_argument("--data", type=Path, default=None, help="the dataset (default: from config.json)")
    parser.add_argument("--neighbours", type=int, default=EditConfig.floater_neighbours)
    parser.add_argument("--reaches", type=float, nargs="+", default=[EditConfig.floater_reach])
    parser.add_argument("--cluster-fractions", type=float, nargs="+", default=[EditConfig.floater_cluster_fraction])
    parser.add_argument("--min-views", type=int, nargs="+", default=[EditConfig.floater_min_views])
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)

    model_file, run = find_model(args.run)
    dataset = run_dataset(run)
    if args.data is not None:
        dataset = replace(dataset, path=args.data) if dataset else None
    if dataset is None:
        parser.error(f"{args.run}: no config.json naming a dataset; pass a training run folder (or --data)")
    scene = load_dataset(dataset)
    if not scene.test:
        parser.error(f"{dataset.path} has no test views")
    config = json.loads((run / "config.json").read_text())
    settings = RenderSettings(background=tuple(scene.background or (0.0, 0.0, 0.0)))
    gaussians = read_model(model_file)
    cameras = [v.camera for v in scene.train]
    print(f"model {model_file}: {len(gaussians):,} Gaussians, SH degree {gaussians.sh_degree}; dataset "
          f"{dataset.path} (downscale {dataset.downscale}): {len(scene.train)} train / {len(scene.test)} test views; "
          f"trained {config.get('iterations')} iterations")
    base_psnr, base_ssim, base_masked = _evaluate(gaussians, scene, settings)
    rows = []
    for name, cfg in _configs(args):
        t0 = time.perf_counter()
        result = edit_gaussians(gaussians, cfg, cameras=cameras)
        seconds = time.perf_counter() - t0
        after_psnr, after_ssim, after_masked = _evaluate(result.gaussians, scene, settings)
        removed = len(gaussians) - len(result.gaussians)
        rows.append({"method": name, "gaussians": len(gaussians), "removed": removed,
                     "psnr_before": base_psnr, "psnr_after": after_psnr, "ssim_before": base_ssim,
                     "ssim_after": after_ssim, "masked_psnr_before": base_masked, "masked_psnr_after": after_masked,
                     "edit_seconds": seconds, "summary": result.summary.line()})
    print()
    has_masks = base_masked is not None
    print("| method | Gaussians removed | test PSNR before | after | change | SSIM before | after |"
          + (" PSNR in masks before | after |" if has_masks else ""))
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if has_masks else ""))
    for r in rows:
        pct = 100.0 * r["removed"] / max(r["gaussians"], 1)
        print(f"| {r['method']} | {r['removed']:,} of {r['gaussians']:,} ({pct:.1f}%) | {r['psnr_before']:.3f} | "
              f"{r['psnr_after']:.3f} | {r['psnr_after'] - r['psnr_before']:+.3f} dB | {r['ssim_before']:.4f} | "
              f"{r['ssim_after']:.4f} |"
              + (f" {r['masked_psnr_before']:.3f} | {r['masked_psnr_after']:.3f} |" if has_masks else ""))
    if args.json:
        args.json.write_text(json.dumps({"run": str(run), "model": str(model_file), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

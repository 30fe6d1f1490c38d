"""Would near-camera pruning help this model? Gaussians close to a training camera, and what
removing them does to the held-out views (issue 11, "no floaters").

    python benchmarks/diag_near_camera.py RUN [RUN ...]
    python benchmarks/diag_near_camera.py RUN --fractions 0.1 0.2 0.3

RUN is a `splatlab train` output folder (its config.json names the dataset, split and masks).
A Gaussian is *near* a training camera when its centre projects inside that camera's image at a
depth below `fraction` times the camera's distance to the model's median centre: the
Gaussians a near-camera prune rule would remove. For each fraction the table gives how many
there are, their summed opacity, and the test views' mean PSNR (the trainer's evaluation:
masked pixels where the run used masks) with them removed, next to the model as it is.
"""

from __future__ import annotations

import argparse
import sys
import zlib  # noqa: F401  (before pycolmap: its bundled zlib must not be the first one loaded)
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

import common  # noqa: E402
from splatlab.metrics import evaluate_views  # noqa: E402


def nearest_relative_depth(means: torch.Tensor, cameras) -> torch.Tensor:
    """[N] the smallest depth / (camera distance to the median centre) over the cameras that
    see each centre inside their image (inf where none does)."""
    centre = means.median(0).values  # [3]
    out = torch.full((len(means),), float("inf"))
    for cam in cameras:
        u, v, z = cam.project(means).unbind(-1)  # [N] each: pixel coordinates, depth
        inside = (z > 0) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
        dist = float((cam.position.float() - centre).norm())
        out = torch.minimum(out, torch.where(inside, z / dist, torch.full_like(z, float("inf"))))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.2, 0.3, 0.5])
    args = ap.parse_args(argv)
    print("| run | Gaussians | fraction | near | their opacity sum | test PSNR as is | without them |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for run in args.runs:
        try:
            gaussians, folder, scene, settings = common.load_run(run)
        except ValueError as e:
            ap.error(str(e))
        rel = nearest_relative_depth(gaussians.means.detach().float(), [v.camera for v in scene.train])
        opacity = gaussians.opacities.detach()
        base = evaluate_views(gaussians, scene.test, settings)["psnr"]
        for fraction in args.fractions:
            near = rel < fraction
            without = evaluate_views(gaussians[~near], scene.test, settings)["psnr"] if near.any() else base
            print(f"| {folder.name} | {len(gaussians):,} | {fraction:g} | {int(near.sum()):,} | "
                  f"{float(opacity[near].sum()):.1f} | {base:.3f} | {without:.3f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

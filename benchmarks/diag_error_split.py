"""Where is a trained model's held-out error? Per test view: the mask's interior against its edge,
colour against geometry, and alignment (issue 11: the statue's plain PSNR).

    python benchmarks/diag_error_split.py RUN [RUN ...] [--edge 3] [--shift 4]

RUN is a `splatlab train` output folder (its config.json names the dataset, split and masks);
the views are rendered as the run's own evaluation renders them. For each test view the table
gives PSNR over
- all: the pixels the evaluation counts (the mask where the run used masks, else the frame);
- interior: those pixels with the mask eroded by --edge pixels (the frame's border likewise);
- edge: the band the erosion removed, and its share of the view's squared error;
- interior, affine: the interior after the least-squares affine colour map from render to photo,
  fitted and measured on the same pixels. An upper bound on what any per-photo colour transform
  (exposure, white balance) could give; a large gain says the view's error is its colour;
- best shift: the integer shift of the render, within +-`--shift` px, that gives the interior's
  lowest error (0,0: the render is not misaligned).
"""

from __future__ import annotations

import argparse
import math
import sys
import zlib  # noqa: F401  (before pycolmap: its bundled zlib must not be the first one loaded)
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402
from splatlab.metrics import apply_affine_colour, fit_affine_colour, psnr_masked  # noqa: E402
from splatlab.render import rasterize  # noqa: E402


def erode(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """[H, W] bool: `mask` without the pixels within `pixels` of its outside or of the frame's edge."""
    outside = F.pad((~mask).float()[None, None], (pixels,) * 4, value=1.0)
    near_outside = F.max_pool2d(outside, 2 * pixels + 1, stride=1)[0, 0] > 0
    return mask & ~near_outside


def sse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return float(((a.double() - b.double()) ** 2)[mask].sum())


def best_shift(image: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, radius: int) -> tuple[int, int]:
    """The (dx, dy) within +-radius whose shifted render has the lowest mean error on `mask`."""
    h, w = mask.shape
    r = radius
    core = mask[r:h - r, r:w - r]
    target = gt[r:h - r, r:w - r]
    best, arg = math.inf, (0, 0)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            moved = image[r + dy:h - r + dy, r + dx:w - r + dx]
            err = sse(moved, target, core)
            if err < best - 1e-9:
                best, arg = err, (dx, dy)
    return arg


def split_view(image: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None, edge: int, radius: int) -> dict:
    """The row of one view; image, gt [H, W, 3] in [0, 1], mask [H, W] bool or None."""
    counted = torch.ones(image.shape[:2], dtype=torch.bool) if mask is None else mask.bool().cpu()
    interior = erode(counted, edge)
    band = counted & ~interior
    total = sse(image, gt, counted)
    m = fit_affine_colour(image, gt, interior)  # [4, 3]
    mapped = apply_affine_colour(image, m).clamp(0, 1)
    return {"all": psnr_masked(image, gt, counted), "interior": psnr_masked(image, gt, interior),
            "edge": psnr_masked(image, gt, band) if band.any() else float("nan"),
            "edge_share": sse(image, gt, band) / total if total > 0 else 0.0,
            "affine": psnr_masked(mapped, gt, interior), "shift": best_shift(image, gt, interior, radius)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--edge", type=int, default=3, help="width of the mask's edge band, in pixels")
    ap.add_argument("--shift", type=int, default=4, help="search radius of the alignment check, in pixels")
    args = ap.parse_args(argv)
    if args.edge < 1 or args.shift < 0:
        ap.error("--edge must be >= 1 and --shift >= 0")
    print("| run | view | all | interior | edge | edge's share of the error | interior, affine colour | best shift |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for run in args.runs:
        try:
            gaussians, folder, scene, settings = common.load_run(run)
        except ValueError as e:
            ap.error(str(e))
        for view in scene.test:
            with torch.no_grad():
                image = rasterize(gaussians, view.camera, settings).image.clamp(0, 1).cpu()
            row = split_view(image, view.image_float(None).cpu(), view.mask, args.edge, args.shift)
            print(f"| {folder.name} | {view.name} | {row['all']:.2f} | {row['interior']:.2f} | {row['edge']:.2f} | "
                  f"{100 * row['edge_share']:.0f}% | {row['affine']:.2f} | {row['shift'][0]},{row['shift'][1]} |",
                  flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

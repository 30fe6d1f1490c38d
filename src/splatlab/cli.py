"""The `splatlab` command."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch


def _demo(args) -> int:
    from PIL import Image

    from . import Camera, Gaussians, RenderSettings, rasterize

    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A coloured helix of Gaussians, rendered from a camera on an orbit.
    t = torch.linspace(0, 6 * math.pi, 3000)
    points = torch.stack([torch.cos(t), torch.sin(t), t / (3 * math.pi) - 1], -1)
    colors = torch.stack([0.5 + 0.5 * torch.cos(t), 0.5 + 0.5 * torch.sin(t), torch.full_like(t, 0.8)], -1)
    g = Gaussians.from_points(points, colors, sh_degree=0, init_opacity=0.8)
    cam = Camera.look_at((3.5, -3.5, 1.5), (0, 0, 0), width=256, height=256)
    img = rasterize(g, cam, RenderSettings(background=(1, 1, 1))).image
    path = out_dir / "helix.png"
    Image.fromarray((img.clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(path)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="splatlab", description="3D Gaussian Splatting in Python")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="render a built-in scene (no download)")
    demo.add_argument("--output", default="outputs/demo", help="output folder (default: %(default)s)")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

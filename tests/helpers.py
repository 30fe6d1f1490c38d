"""Small scene builders shared by the tests."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from splatlab import Camera, Gaussians

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def camera_at_origin(width=16, height=16, f=20.0, cx=None, cy=None, dtype=torch.float64) -> Camera:
    """Camera at the world origin looking down +z (world = camera frame)."""
    cx = width / 2 if cx is None else cx
    cy = height / 2 if cy is None else cy
    return Camera(f, f, cx, cy, torch.eye(4, dtype=dtype), width, height)


def make_gaussians(means, log_scale=-2.0, opacity=0.8, rgb=(1.0, 0.0, 0.0), sh_degree=0, dtype=torch.float64):
    """Isotropic Gaussians at `means` [N, 3] with one scale, opacity and colour."""
    means = torch.as_tensor(means, dtype=dtype).reshape(-1, 3)
    n = means.shape[0]
    k = (sh_degree + 1) ** 2
    rgb = torch.as_tensor(rgb, dtype=dtype).expand(n, 3)
    return Gaussians(
        means=means.clone(),
        quats=torch.tensor([1.0, 0, 0, 0], dtype=dtype).repeat(n, 1),
        log_scales=torch.full((n, 3), float(log_scale), dtype=dtype),
        logit_opacities=torch.full((n,), math.log(opacity / (1 - opacity)), dtype=dtype),
        sh0=((rgb - 0.5) / 0.28209479177387814).unsqueeze(1).clone(),
        shN=torch.zeros(n, k - 1, 3, dtype=dtype),
    )


def random_scene(
    n: int,
    sh_degree: int = 3,
    seed: int = 0,
    dtype=torch.float64,
    spread: float = 1.0,
    log_scale_range=(-3.0, -2.0),
    opacity_range=(0.1, 0.9),
    depth: float = 4.0,
) -> Gaussians:
    """Random anisotropic Gaussians in a box in front of a camera at the origin looking down +z."""
    g = torch.Generator().manual_seed(seed)
    k = (sh_degree + 1) ** 2
    means = (torch.rand(n, 3, generator=g, dtype=dtype) * 2 - 1) * spread
    means[:, 2] += depth
    lo, hi = log_scale_range
    opac = opacity_range[0] + (opacity_range[1] - opacity_range[0]) * torch.rand(n, generator=g, dtype=dtype)
    return Gaussians(
        means=means,
        quats=torch.randn(n, 4, generator=g, dtype=dtype),
        log_scales=lo + (hi - lo) * torch.rand(n, 3, generator=g, dtype=dtype),
        logit_opacities=torch.log(opac / (1 - opac)),
        sh0=torch.randn(n, 1, 3, generator=g, dtype=dtype) * 0.5,
        shN=torch.randn(n, k - 1, 3, generator=g, dtype=dtype) * 0.2,
    )


def write_demo_blender(root: Path, num_views: int = 12, size: int = 32, test_every: int = 4) -> Path:
    """A tiny Blender-layout dataset (RGBA PNGs + transforms_*.json) of the ray-cast demo scene."""
    import json

    import numpy as np
    from PIL import Image

    from splatlab.demo_scene import make_demo_scene

    scene = make_demo_scene(num_views=num_views, size=size, test_every=test_every)
    for split, views in (("train", scene.train), ("test", scene.test)):
        frames = []
        for i, view in enumerate(views):
            (root / split).mkdir(parents=True, exist_ok=True)
            rgba = np.concatenate([view.image.numpy(), np.full((size, size, 1), 255, np.uint8)], axis=-1)
            Image.fromarray(rgba).save(root / split / f"r_{i}.png")
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": view.camera.to_opengl_c2w().tolist()})
        fov = 2 * math.atan(0.5 * size / views[0].camera.fx)
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": fov, "frames": frames}))
    return root

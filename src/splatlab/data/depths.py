"""Inverse-depth priors for depth regularisation, in the layout of the 3DGS repository.

3DGS (graphdeco-inria/gaussian-splatting, the 2024 depth-regularisation release) reads, for
image `a/b.jpg`, a 16-bit PNG `depths/b.png` holding a monocular inverse depth (e.g. Depth
Anything V2) as value / 2^16, resized to the training resolution, and aligns it to the SfM
scale with `sparse/0/depth_params.json`: {"b": {"scale": s, "offset": o, "med_scale": m}},
inverse depth = value * s + o; an image whose s is below 0.2 m or above 5 m is unreliable.
Without depth_params.json, we fit s and o per image to the inverse depths of the SfM points
the image observed (least squares), which is what that file's script computes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from .images import DatasetError, warn

MIN_POINTS_FOR_FIT = 20  # fewer SfM points than this: no reliable scale for an image's depth map


def read_inverse_depth_png(path: Path, width: int, height: int) -> np.ndarray:
    """[H, W] float32 value / 2^16 of a 16-bit PNG, resized (bilinear) to width x height."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im, dtype=np.float32)
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable depth image ({exc})") from exc
    if arr.ndim == 3:
        arr = arr[..., 0]
    arr = arr / float(2**16)
    if arr.shape != (height, width):
        arr = np.asarray(Image.fromarray(arr, mode="F").resize((width, height), Image.Resampling.BILINEAR))
    return np.maximum(arr, 0.0)


def _fit_scale_offset(raw: np.ndarray, u: np.ndarray, v: np.ndarray, inv_z: np.ndarray) -> Optional[tuple[float, float]]:
    if len(inv_z) < MIN_POINTS_FOR_FIT:
        return None
    x = raw[v, u]
    a = np.stack([x, np.ones_like(x)], axis=1)
    (scale, offset), *_ = np.linalg.lstsq(a, inv_z, rcond=None)
    return (float(scale), float(offset)) if scale > 0 else None


def attach_depth_maps(root: Path, model_dir: Path, views: list, points: Optional[torch.Tensor]) -> None:
    """Set view.inv_depth from `root/depths/` when the folder exists (see the module doc).

    Views without a map (or without a reliable scale) train without one; a warning names them.
    """
    folder = root / "depths"
    if not folder.is_dir():
        return
    params_path = model_dir / "depth_params.json"
    params = json.loads(params_path.read_text()) if params_path.is_file() else None
    med = float(np.median([p["scale"] for p in params.values()])) if params else None
    missing, unreliable = [], []
    views = [v for v in views if v.loaded]  # the others' depth is another process's to load
    for view in views:
        stem = Path(view.name).stem
        path = folder / f"{stem}.png"
        if not path.is_file():
            missing.append(view.name)
            continue
        raw = read_inverse_depth_png(path, view.width, view.height)
        scale_offset = None
        if params is not None and stem in params:
            p = params[stem]
            if 0.2 * med <= p["scale"] <= 5 * med and p["scale"] > 0:
                scale_offset = (p["scale"], p["offset"])
        elif points is not None and view.point_ids is not None:
            uvz = view.camera.project(points[view.point_ids].double())
            u, v, z = uvz[:, 0].numpy(), uvz[:, 1].numpy(), uvz[:, 2].numpy()
            ok = (z > 0) & (u >= 0) & (v >= 0) & (u < view.width) & (v < view.height)
            scale_offset = _fit_scale_offset(raw, u[ok].astype(int), v[ok].astype(int), 1.0 / z[ok])
        if scale_offset is None:
            unreliable.append(view.name)
            continue
        view.inv_depth = torch.from_numpy(np.maximum(raw * scale_offset[0] + scale_offset[1], 0.0).astype(np.float32))
    if missing:
        warn(f"{folder}: no depth map for {len(missing)} of {len(views)} images ({', '.join(missing[:5])}"
             f"{', ...' if len(missing) > 5 else ''}): those train without depth")
    if unreliable:
        warn(f"{folder}: no reliable scale for the depth maps of {len(unreliable)} images "
             f"({', '.join(unreliable[:5])}{', ...' if len(unreliable) > 5 else ''}): those train without depth")

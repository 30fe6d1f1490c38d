"""Tiny generated datasets for tests/test_data.py (written into pytest's tmp_path).

Everything is synthetic and small (a few 40x30 images) so the tests run in milliseconds. Poses are
made with `Camera.look_at` around the origin; image content is seeded noise so resizing can be
checked. The COLMAP model is written by hand in the classic text format (cameras.txt, images.txt,
points3D.txt) rather than with pycolmap, so the reader is tested against the documented format.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from splatlab.camera import Camera

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def shared_dataset(name: str) -> Path | None:
    """``../shared/data/<name>`` relative to the repository root, or None when absent."""
    path = SHARED_DATA / name
    return path if path.is_dir() else None


def ring_cameras(n: int, width: int = 40, height: int = 30, radius: float = 4.0, fov_deg: float = 50.0):
    """`n` cameras on a tilted ring around the origin, all looking at it."""
    cams = []
    for i in range(n):
        a = 2 * math.pi * i / n
        eye = (radius * math.cos(a), radius * math.sin(a), 1.5 + 0.3 * math.sin(3 * a))
        cams.append(Camera.look_at(eye, (0.0, 0.0, 0.0), fov_x=math.radians(fov_deg), width=width, height=height))
    return cams


def noise_image(seed: int, width: int, height: int, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)


def write_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _quat_wxyz(rot: np.ndarray) -> np.ndarray:
    x, y, z, w = Rotation.from_matrix(rot).as_quat()
    return np.array([w, x, y, z])


def write_colmap_text(
    root: Path,
    *,
    n_images: int = 6,
    width: int = 40,
    height: int = 30,
    model: str = "PINHOLE",
    extra_params: tuple[float, ...] = (),
    n_points: int = 50,
    with_masks: bool = False,
) -> dict:
    """A COLMAP dataset: ``images/img_XX.png`` and ``sparse/0/{cameras,images,points3D}.txt``.

    One camera shared by all images. Returns {'cameras': [Camera], 'points': [P, 3], 'names': [...]}.
    Observations are the exact pinhole projections (PINHOLE model) of the points.
    """
    cams = ring_cameras(n_images, width, height)
    rng = np.random.default_rng(1)
    points = rng.uniform(-1.0, 1.0, size=(n_points, 3))
    colors = rng.integers(0, 256, size=(n_points, 3))
    sparse = root / "sparse" / "0"
    sparse.mkdir(parents=True, exist_ok=True)
    c0 = cams[0]
    if model == "PINHOLE":
        params = [c0.fx, c0.fy, c0.cx, c0.cy]
    elif model == "SIMPLE_PINHOLE":
        params = [c0.fx, c0.cx, c0.cy]
    else:  # SIMPLE_RADIAL / RADIAL / OPENCV: focal(s), principal point, then distortion
        params = ([c0.fx] if model.startswith("SIMPLE") or model == "RADIAL" else [c0.fx, c0.fy]) + [c0.cx, c0.cy]
        params += list(extra_params)
    (sparse / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n"
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        f"1 {model} {width} {height} " + " ".join(repr(float(p)) for p in params) + "\n"
    )
    names = [f"img_{i:02d}.png" for i in range(n_images)]
    tracks: dict[int, list[tuple[int, int]]] = {j: [] for j in range(n_points)}
    lines = ["# Image list with two lines of data per image:", "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i, (cam, name) in enumerate(zip(cams, names)):
        vm = cam.viewmat.numpy()
        q, t = _quat_wxyz(vm[:3, :3]), vm[:3, 3]
        lines.append(f"{i + 1} " + " ".join(repr(float(v)) for v in (*q, *t)) + f" 1 {name}")
        uvz = cam.project(torch.from_numpy(points)).numpy()
        obs = []
        for j, (u, v, z) in enumerate(uvz):
            if z > 0 and 0 <= u < width and 0 <= v < height:
                tracks[j].append((i + 1, len(obs)))
                obs.append(f"{float(u)!r} {float(v)!r} {j + 1}")
        lines.append(" ".join(obs))
        write_image(root / "images" / name, noise_image(i, width, height))
        if with_masks:
            mask = np.zeros((height, width), np.uint8)
            mask[:, : width // 2] = 255
            write_image(root / "masks" / name, mask)
    (sparse / "images.txt").write_text("\n".join(lines) + "\n")
    plines = ["# 3D point list with one line of data per point:",
              "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)"]
    for j in range(n_points):
        track = " ".join(f"{a} {b}" for a, b in tracks[j])
        plines.append(f"{j + 1} " + " ".join(repr(float(v)) for v in points[j]) + " "
                      + " ".join(str(int(c)) for c in colors[j]) + f" 0.5 {track}".rstrip())
    (sparse / "points3D.txt").write_text("\n".join(plines) + "\n")
    return {"cameras": cams, "points": points, "colors": colors, "names": names}


def write_blender(root: Path, *, n_train: int = 4, n_test: int = 2, size: int = 16, splits=("train", "test")) -> dict:
    """A NeRF-synthetic style dataset with RGBA PNGs (file_path without extension)."""
    fov = 0.69
    out = {}
    for split in splits:
        n = n_train if split == "train" else n_test
        cams = ring_cameras(n, size, size, fov_deg=math.degrees(fov))
        frames = []
        for i, cam in enumerate(cams):
            rgba = noise_image(100 + i + 10 * len(split), size, size, 4)
            rgba[0, 0, 3] = 0  # fully transparent corner
            rgba[0, 1, 3] = 255  # opaque
            write_image(root / split / f"r_{i}.png", rgba)
            frames.append({"file_path": f"./{split}/r_{i}", "rotation": 0.0,
                           "transform_matrix": cam.to_opengl_c2w().tolist()})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": fov, "frames": frames}))
        out[split] = cams
    return out


def write_transforms(root: Path, *, n: int = 5, width: int = 40, height: int = 30, missing: int = 1,
                     distortion: dict | None = None, angle_only: bool = False) -> dict:
    """A nerfstudio ``transforms.json`` with `missing` frames whose image does not exist."""
    cams = ring_cameras(n, width, height)
    c0 = cams[0]
    data: dict = {"w": width, "h": height, "aabb_scale": 4}
    if angle_only:  # instant-ngp style
        data["camera_angle_x"] = 2 * math.atan(0.5 * width / c0.fx)
    else:
        data.update(fl_x=c0.fx, fl_y=c0.fy, cx=c0.cx, cy=c0.cy)
    data.update(distortion or {})
    frames = []
    for i, cam in enumerate(cams):
        rel = f"images/frame_{i:03d}.jpg"
        if i >= n - missing:
            rel = f"images/frame_{i:03d}_missing.jpg"
        else:
            write_image(root / rel, noise_image(200 + i, width, height))
        frames.append({"file_path": rel, "transform_matrix": cam.to_opengl_c2w().tolist()})
    data["frames"] = frames
    (root / "transforms.json").write_text(json.dumps(data, indent=1))
    return {"cameras": cams, "data": data}


def snapshot(root: Path, exclude: str = "splatlab_cache") -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file under `root` except the cache folder."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != exclude]
        for name in filenames:
            path = Path(dirpath) / name
            st = path.stat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out

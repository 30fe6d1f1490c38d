"""Blender / NeRF-synthetic datasets: ``transforms_{train,val,test}.json``.

- Each file has ``camera_angle_x`` (horizontal field of view, radians) and ``frames`` with
  ``file_path`` (relative to the dataset folder, usually without extension: ``.png`` is appended)
  and ``transform_matrix`` (camera->world, OpenGL convention). Square pixels, principal point at
  the image centre (`Camera.from_blender`). ``fl_x``/``fl_y``/``cx``/``cy`` are used when present.
- RGBA images are composited over `background` (white by default, as 3DGS does); the scene's
  ``background`` records the colour so the trainer renders over the same one.
- Test views come from ``transforms_{eval_split}.json``; with the default "test", a dataset without
  a test file (e.g. lego_400) uses ``transforms_val.json``. ``eval_split="none"``: no test views.
- No point cloud: ``num_random_points`` points uniform in [-1.3, 1.3]^3 with random colours, as
  3DGS does for synthetic scenes (seeded by ``seed``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..camera import Camera
from .images import (
    DatasetError,
    composite,
    downscaled_camera,
    image_has_alpha,
    image_size,
    log,
    parallel_map,
    read_image,
    resize_area,
    to_uint8,
    warn,
)
from .scene import LoadOptions, Scene, build_scene, make_view, random_points, unloaded_view

BLENDER_BOX = 1.3  # 3DGS: random init points uniform in [-1.3, 1.3]^3


def read_json(path: Path) -> dict:
    """Parse a JSON file, raising DatasetError naming the file on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not a text file ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object with 'frames', got {type(data).__name__}")
    return data


def get_frames(path: Path, data: dict) -> list[dict]:
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DatasetError(f"{path}: no frames: expected a non-empty 'frames' list")
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise DatasetError(f"{path}: frame {i} needs 'file_path' and 'transform_matrix'")
    return frames


def parse_c2w(path: Path, index: int, matrix) -> np.ndarray:
    try:
        c2w = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: frame {index}: transform_matrix is not a matrix of numbers ({exc})") from exc
    if c2w.shape == (3, 4):
        c2w = np.vstack([c2w, [0.0, 0.0, 0.0, 1.0]])
    if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
        raise DatasetError(f"{path}: frame {index}: transform_matrix must be a finite 4x4 (or 3x4) matrix")
    return c2w


def resolve_image(root: Path, file_path: str, extensions=(".png",)) -> Path:
    """``root / file_path``, appending an extension when the path has none (NeRF-synthetic style)."""
    path = root / file_path
    if path.is_file() or path.suffix.lower() in (".png", ".jpg", ".jpeg", ".exr", ".bmp", ".tif", ".tiff", ".webp"):
        return path
    for ext in extensions:
        candidate = path.with_name(path.name + ext)
        if candidate.is_file():
            return candidate
    return path.with_name(path.name + extensions[0])


def _load_split(root: Path, json_path: Path, opts: LoadOptions, alpha_seen: list) -> list:
    data = read_json(json_path)
    frames = get_frames(json_path, data)
    angle = data.get("camera_angle_x")
    if angle is None and "fl_x" not in data:
        raise DatasetError(f"{json_path}: missing 'camera_angle_x' (horizontal field of view in radians)")
    items, missing = [], []
    for i, frame in enumerate(frames):
        path = resolve_image(root, str(frame["file_path"]))
        if not path.is_file():
            missing.append(str(frame["file_path"]))
            continue
        items.append((i, frame, path))
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        warn(f"{json_path}: {len(missing)} of {len(frames)} frames have no image file and are skipped: {shown}")
    if not items:
        raise DatasetError(f"{json_path}: none of the {len(frames)} frames' images exist (e.g. {missing[0]})")

    def camera_of(i, frame, path, width, height, name):
        c2w = parse_c2w(json_path, i, frame["transform_matrix"])
        for key, actual in (("w", width), ("h", height)):
            expected = frame.get(key, data.get(key))
            if expected is not None and int(expected) != actual:
                raise DatasetError(
                    f"{path}: image is {width}x{height} pixels but {json_path.name} says {key}={expected}"
                )
        if "fl_x" in data or "fl_x" in frame:
            fx = float(frame.get("fl_x", data.get("fl_x")))
            fy = float(frame.get("fl_y", data.get("fl_y", fx)))
            cx = float(frame.get("cx", data.get("cx", width / 2)))
            cy = float(frame.get("cy", data.get("cy", height / 2)))
            return Camera.from_opengl_c2w(c2w, fx, fy, cx, cy, width, height, name)
        fov = float(frame.get("camera_angle_x", angle))
        if not (0 < fov < math.pi):
            raise DatasetError(f"{json_path}: camera_angle_x must be in (0, pi) radians, got {fov}")
        return Camera.from_blender(c2w, fov, width, height, name)

    def load_one(k_item):
        k, (i, frame, path) = k_item
        name = str(Path(str(frame["file_path"])).with_suffix("")).removeprefix("./")
        if not opts.holds(k):  # another process's view: its camera from the file header alone
            camera = camera_of(i, frame, path, *image_size(path), name)
            return downscaled_camera(camera, opts.downscale), None, name, image_has_alpha(path)
        raw = read_image(path)
        height, width = raw.shape[:2]
        camera = camera_of(i, frame, path, width, height, name)
        alpha = None
        if raw.shape[-1] == 4:
            alpha = raw[..., 3]  # kept so the trainer can re-composite over a random background
            data_ = composite(raw, opts.background) if opts.background is not None else raw[..., :3]
        else:
            data_ = raw
        if opts.downscale > 1:
            camera = downscaled_camera(camera, opts.downscale)
            size = (camera.width, camera.height)
            data_ = resize_area(data_, size)
            alpha = None if alpha is None else resize_area(alpha, size)
        return camera, (to_uint8(data_), alpha), name, raw.shape[-1] == 4

    loaded = parallel_map(load_one, list(enumerate(items)), desc=f"loading {json_path.name}", verbose=opts.verbose)
    alpha_seen.extend(name for _, _, name, has_alpha in loaded if has_alpha)
    return [unloaded_view(cam, name, has_alpha, False) if pixels is None else
            make_view(cam, pixels[0], name, None, opts.device, pixels[1])
            for cam, pixels, name, has_alpha in loaded]


def load_blender(root: Path, opts: LoadOptions) -> Scene:
    alpha_seen: list = []
    train = _load_split(root, root / "transforms_train.json", opts, alpha_seen)
    split = opts.eval_split.lower()
    test_json = None
    if split not in ("none", ""):
        test_json = root / f"transforms_{split}.json"
        if not test_json.is_file():
            fallback = root / "transforms_val.json"
            if split == "test" and fallback.is_file():
                log(opts.verbose, f"{root}: no transforms_test.json; using transforms_val.json for the test views")
                test_json = fallback
            else:
                warn(f"{root}: no {test_json.name}; the scene has no test views")
                test_json = None
    test = _load_split(root, test_json, opts, alpha_seen) if test_json is not None else []
    points, colors = random_points(opts.num_random_points, [-BLENDER_BOX] * 3, [BLENDER_BOX] * 3, opts.seed)
    background = opts.background
    return build_scene(
        train, test, points, colors, background=background, kind="blender", path=root, opts=opts,
        info={"test_split": None if test_json is None else test_json.name, "alpha": bool(alpha_seen),
              "random_points": points is not None},
    )

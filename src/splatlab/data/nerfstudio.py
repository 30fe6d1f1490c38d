"""nerfstudio / instant-ngp datasets: one ``transforms.json``.

Intrinsics: ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h`` and distortion ``k1``, ``k2``, ``k3``,
``k4``, ``p1``, ``p2`` at the top level, each overridable per frame. instant-ngp files may give
``camera_angle_x`` (and ``camera_angle_y``) instead of focal lengths; ``w``/``h`` default to the
image's size, ``cx``/``cy`` to its centre, ``fl_y`` to ``fl_x``. ``transform_matrix`` is
camera->world in the OpenGL convention.

Distortion: ``camera_model`` "OPENCV" (the default) with non-zero k1, k2, p1, p2 -> pycolmap's
OPENCV model, with k3 -> FULL_OPENCV (k4..k6 = 0; the same formula); "OPENCV_FISHEYE" (or
instant-ngp's ``is_fisheye``) -> OPENCV_FISHEYE with k1..k4. Images are undistorted with pycolmap
and cached like COLMAP's (:mod:`splatlab.data.undistort`). A non-zero k4 on a perspective camera
is refused (nerfstudio refuses it too: it is not an OpenCV coefficient).

Frames whose image file is missing are skipped with one warning listing them; it is an error only
when none are left. ``mask_path`` per frame is used as the view's mask.

Poses are used as given. instant-ngp's ``aabb_scale``, ``scale`` and ``offset`` only place the
scene in instant-ngp's unit cube and are ignored; nerfstudio's ``applied_transform`` is already
applied to the poses.

Split: ``{eval_split}_filenames`` lists (nerfstudio) when present, else every ``test_every``-th
frame by file name, as for COLMAP.

Points: ``ply_file_path`` (nerfstudio's ``sparse_pc.ply``) when present, read with pycolmap. Else
points triangulated from the training views' known poses (:mod:`splatlab.data.triangulate`,
``triangulate=True``, the default). When that is off or fails,
``num_random_points`` random points in a cube around where the cameras look: centred on the
least-squares point closest to all optical axes (the cameras' mean centre plus their mean viewing
direction times their spread when the axes are near-parallel), with half-side equal to half the
median distance of the cameras from that point.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..camera import Camera
from .blender import get_frames, parse_c2w, read_json, resolve_image
from .images import (
    DatasetError,
    check_image_size,
    downscaled_camera,
    finish_image,
    image_has_alpha,
    image_size,
    import_pycolmap,
    log,
    parallel_map,
    read_image,
    read_mask,
    rescale_camera,
    resolve_downscaled_path,
    warn,
)
from .scene import LoadOptions, Scene, build_scene, make_view, random_points, split_by_name, unloaded_view
from .undistort import UndistortCache, UndistortJob, cache_folder, final_intrinsics

_INTRINSIC_KEYS = (
    "fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "k3", "k4", "p1", "p2",
    "camera_angle_x", "camera_angle_y", "camera_model", "is_fisheye",
)


def lookat_box_points(cameras: list[Camera], opts: LoadOptions):
    """Random points in a cube around the region the cameras look at (see the module docstring)."""
    if opts.num_random_points <= 0:
        return None, None
    centres = torch.stack([c.position.double().cpu() for c in cameras]).numpy()  # [N, 3]
    dirs = np.stack([c.viewmat[2, :3].double().cpu().numpy() for c in cameras])  # [N, 3] optical axes (world)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    mean = centres.mean(0)
    spread = float(np.linalg.norm(centres - mean, axis=1).max()) if len(cameras) > 1 else 1.0
    spread = spread if spread > 1e-9 else 1.0
    proj = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]  # [N, 3, 3]
    a, b = proj.sum(0), np.einsum("nij,nj->i", proj, centres)
    centre = None
    if np.linalg.cond(a) < 1e6:
        centre = np.linalg.solve(a, b)
        in_front = ((centre[None] - centres) * dirs).sum(1) > 0
        if in_front.mean() < 0.5 or np.linalg.norm(centre - mean) > 10 * spread:
            centre = None
    if centre is None:
        mean_dir = dirs.mean(0)
        norm = np.linalg.norm(mean_dir)
        centre = mean + (mean_dir / norm if norm > 1e-9 else 0.0) * spread
    half = 0.5 * float(np.median(np.linalg.norm(centres - centre, axis=1)))
    half = half if half > 1e-9 else 1.0
    return random_points(opts.num_random_points, centre - half, centre + half, opts.seed)


def _pycolmap_camera(json_path: Path, frame_index: int, intr: dict, width: int, height: int):
    """(pinhole (fx, fy, cx, cy), pycolmap distorted camera or None)."""

    def num(key, default=0.0):
        value = intr.get(key, default)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise DatasetError(f"{json_path}: frame {frame_index}: {key} must be a number, got {value!r}") from None

    if intr.get("fl_x") is not None:
        fx = num("fl_x")
    elif intr.get("camera_angle_x") is not None:
        fx = 0.5 * width / math.tan(0.5 * num("camera_angle_x"))
    else:
        raise DatasetError(f"{json_path}: frame {frame_index}: no focal length: need 'fl_x' or 'camera_angle_x'")
    if intr.get("fl_y") is not None:
        fy = num("fl_y")
    elif intr.get("camera_angle_y") is not None and intr.get("fl_x") is None:
        fy = 0.5 * height / math.tan(0.5 * num("camera_angle_y"))
    else:
        fy = fx
    cx, cy = num("cx", width / 2), num("cy", height / 2)
    if not (fx > 0 and fy > 0 and math.isfinite(fx) and math.isfinite(fy)):
        raise DatasetError(f"{json_path}: frame {frame_index}: focal lengths must be positive, got {fx}, {fy}")
    k1, k2, k3, k4, p1, p2 = (num(k) for k in ("k1", "k2", "k3", "k4", "p1", "p2"))
    model = str(intr.get("camera_model", "OPENCV")).upper()
    if intr.get("is_fisheye"):
        model = "OPENCV_FISHEYE"
    pycolmap = import_pycolmap()
    if model == "OPENCV_FISHEYE":
        params = [fx, fy, cx, cy, k1, k2, k3, k4]
        return (fx, fy, cx, cy), pycolmap.Camera(model="OPENCV_FISHEYE", width=width, height=height, params=params)
    if model not in ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "PERSPECTIVE"):
        raise DatasetError(
            f"{json_path}: camera_model {intr.get('camera_model')!r} is not supported "
            "(supported: OPENCV, OPENCV_FISHEYE, PINHOLE)"
        )
    if k4 != 0.0:
        raise DatasetError(
            f"{json_path}: frame {frame_index}: k4={k4} on a perspective camera is not supported "
            "(only k1, k2, k3, p1, p2 are OpenCV coefficients)"
        )
    if k1 == k2 == k3 == p1 == p2 == 0.0:
        return (fx, fy, cx, cy), None
    if k3 != 0.0:
        params = [fx, fy, cx, cy, k1, k2, p1, p2, k3, 0.0, 0.0, 0.0]
        return (fx, fy, cx, cy), pycolmap.Camera(model="FULL_OPENCV", width=width, height=height, params=params)
    params = [fx, fy, cx, cy, k1, k2, p1, p2]
    return (fx, fy, cx, cy), pycolmap.Camera(model="OPENCV", width=width, height=height, params=params)


def _read_ply_points(path: Path):
    pycolmap = import_pycolmap()
    recon = pycolmap.Reconstruction()
    try:
        recon.import_PLY(str(path))
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(f"{path}: cannot read the point cloud ({type(exc).__name__}: {exc})") from exc
    pts = recon.points3D
    if len(pts) == 0:
        return None, None
    points = np.array([p.xyz for p in pts.values()], dtype=np.float32)  # [P, 3]
    colors = np.array([p.color for p in pts.values()], dtype=np.float32) / 255.0  # [P, 3]
    return torch.from_numpy(points), torch.from_numpy(colors)


def load_nerfstudio(json_path: Path, opts: LoadOptions) -> Scene:
    root = json_path.parent
    data = read_json(json_path)
    frames = get_frames(json_path, data)
    items, missing = _existing_frames(json_path, root, frames)
    top = {k: data[k] for k in _INTRINSIC_KEYS if k in data}
    jobs = [_frame_job(json_path, root, top, i, frame, rel, full, opts.downscale) for i, frame, rel, full in items]
    any_distorted = any(j["distorted"] is not None for j in jobs)
    cache = None
    if any_distorted:
        tag = "transforms" if all(j["factor"] == 1 for j in jobs) else f"transforms_images_{opts.downscale}"
        folder = cache_folder(opts.cache_root, root, root / tag)
        cache = UndistortCache(folder)
        log(opts.verbose, f"undistorting {sum(j['distorted'] is not None for j in jobs)} images to pinhole"
            + (f" (cache: {folder})" if folder is not None else " (no cache)"))
    train_idx, test_idx = _split(data, [job["name"] for job in jobs], opts)
    held = opts.held(train_idx, test_idx)  # the others: cameras only (another process's views)

    def load(k: int):
        return _load_frame(jobs[k], cache, opts) if k in held else _frame_camera(jobs[k])

    loaded = parallel_map(load, range(len(jobs)), desc=f"loading {len(held)} images", verbose=opts.verbose)
    if cache is not None:
        log(opts.verbose, f"undistortion cache: {cache.hits} reused, {cache.misses} computed")
    views = [make_view(cam, img, job["name"], mask, opts.device) if img is not None else
             unloaded_view(cam, job["name"], False, job["mask"] is not None)
             for (cam, img, mask, _), job in zip(loaded, jobs)]
    for view, job in zip(views, jobs):
        view.source = Path(job["path"])

    points = colors = None
    ply = data.get("ply_file_path")
    if ply:
        ply_path = root / str(ply)
        if ply_path.is_file():
            points, colors = _read_ply_points(ply_path)
            log(opts.verbose, f"initial points from {ply_path} ({0 if points is None else len(points)})")
        else:
            warn(f"{json_path}: ply_file_path {ply} does not exist; using random initial points")
    source = "ply" if points is not None else None
    if points is None and opts.triangulate and opts.num_random_points > 0:
        def pixels(i: int):  # a training view's image, decoded here when this process does not hold it
            k = train_idx[i]
            return views[k].image.cpu().numpy() if views[k].loaded else _load_frame(jobs[k], cache, opts)[1]

        points, colors = _triangulated_points([views[k] for k in train_idx], opts, pixels)
        source = None if points is None else "triangulated"
    random_pts = points is None
    if random_pts:
        points, colors = lookat_box_points([views[k].camera for k in train_idx] or [v.camera for v in views], opts)
        source = "random"
    info = {"frames": len(frames), "missing": missing, "undistorted": any_distorted, "random_points": random_pts,
            "points_from": source}
    if cache is not None:
        info["undistort_cache"] = {"folder": str(cache.folder), "reused": cache.hits, "computed": cache.misses}
    any_alpha = any(has_alpha for *_, has_alpha in loaded)
    return build_scene([views[k] for k in train_idx], [views[k] for k in test_idx], points, colors,
                       background=opts.background if any_alpha else None, kind="nerfstudio", path=root, opts=opts,
                       info=info)


def _triangulated_points(train_views: list, opts: LoadOptions, pixels):
    """(points, colours) triangulated from the training views' known poses, each view given the
    rows it observed (for the depth prior); (None, None) when triangulation fails."""
    from .triangulate import points_from_poses

    result = points_from_poses(train_views, opts.cache_root, opts.verbose, opts.seed, pixels)
    if result is None:
        return None, None
    points, colors, seen = result
    for view, ids in zip(train_views, seen):
        view.point_ids = ids
    return points, colors


def _existing_frames(json_path: Path, root: Path, frames: list) -> tuple[list, list]:
    """([(index, frame, file_path as written, resolved path)] for frames whose image exists, missing ones)."""
    items, missing = [], []
    for i, frame in enumerate(frames):
        rel = str(frame["file_path"])
        full = resolve_image(root, rel, extensions=(".png", ".jpg", ".jpeg"))
        if not full.is_file():
            missing.append(rel)
            continue
        items.append((i, frame, rel, full))
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        warn(f"{json_path}: {len(missing)} of {len(frames)} frames have no image file and are skipped: {shown}")
    if not items:
        raise DatasetError(f"{json_path}: none of the {len(frames)} frames' images exist (e.g. {missing[0]})")
    return items, missing


def _frame_job(json_path: Path, root: Path, top: dict, i: int, frame: dict, rel: str, full: Path, n: int) -> dict:
    """What loading frame i needs, after cheap header checks (sizes) and the mask's existence."""
    intr = dict(top)
    intr.update({k: frame[k] for k in _INTRINSIC_KEYS if k in frame})
    c2w = parse_c2w(json_path, i, frame["transform_matrix"])
    fw, fh = image_size(full)
    width = int(intr["w"]) if intr.get("w") is not None else fw
    height = int(intr["h"]) if intr.get("h") is not None else fh
    check_image_size(full, (fw, fh), (width, height), what=f"{json_path.name} (w={width}, h={height})")
    pinhole, distorted = _pycolmap_camera(json_path, i, intr, width, height)
    source, source_factor = full, 1
    small = resolve_downscaled_path(root, rel, n) if n > 1 else None
    if small is not None:
        sw, sh = image_size(small)
        check_image_size(small, (sw, sh), (width, height), downscale=n, what=f"{json_path.name} (w={width}, h={height})")
        source, source_factor = small, n
    mask = None
    if frame.get("mask_path"):
        mask = root / str(frame["mask_path"])
        if source_factor > 1:
            mask = resolve_downscaled_path(root, str(frame["mask_path"]), n) or mask
        if not mask.is_file():
            raise DatasetError(f"{json_path}: frame {i}: mask file {mask} does not exist")
    name = str(Path(rel)).removeprefix("./")
    return dict(index=i, name=name, path=source, factor=source_factor, c2w=c2w, pinhole=pinhole,
                distorted=distorted, size=(width, height), mask=mask, downscale=n)


def _distorted_at_source(job: dict):
    """The pycolmap camera of the frame's file (the distorted model, rescaled to a downscaled file)."""
    cam = job["distorted"]
    if job["factor"] > 1:
        width, height = job["size"]
        sw, sh = image_size(job["path"])
        cam = import_pycolmap().Camera(model=cam.model, width=width, height=height, params=list(cam.params))
        cam.rescale(int(sw), int(sh))
    return cam


def _frame_camera(job: dict):
    """`_load_frame`'s result without decoding the pixels: (pinhole Camera, None, None, whether the file has alpha)."""
    width, height = job["size"]
    todo = job["downscale"] if job["factor"] == 1 else 1
    if job["distorted"] is not None:
        intr = final_intrinsics(_distorted_at_source(job), todo)
        camera = Camera.from_opengl_c2w(job["c2w"], intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height)
    else:
        camera = Camera.from_opengl_c2w(job["c2w"], *job["pinhole"], width, height)
        camera = downscaled_camera(rescale_camera(camera, *image_size(job["path"])), todo)
    return camera, None, None, image_has_alpha(job["path"])


def _load_frame(job: dict, cache, opts: LoadOptions):
    """(pinhole Camera, uint8 image [H, W, 3], mask or None, whether the file had alpha)."""
    width, height = job["size"]
    todo = job["downscale"] if job["factor"] == 1 else 1  # downscale still to apply to what is read
    if job["distorted"] is not None:  # undistorted at the stored resolution, then downscaled
        cam = _distorted_at_source(job)
        image, mask, intr = cache.load(UndistortJob(job["name"], job["path"], cam, job["mask"]), todo)
        todo = 1
        camera = Camera.from_opengl_c2w(job["c2w"], intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height)
    else:
        image = read_image(job["path"])
        mask = None if job["mask"] is None else read_mask(job["mask"])
        camera = Camera.from_opengl_c2w(job["c2w"], *job["pinhole"], width, height)
        camera = rescale_camera(camera, image.shape[1], image.shape[0])
        if job["factor"] == 1 and (image.shape[1], image.shape[0]) != (width, height):
            raise DatasetError(f"{job['path']}: image is {image.shape[1]}x{image.shape[0]} pixels, "
                               f"expected {width}x{height}")
        if mask is not None and mask.shape != image.shape[:2]:
            raise DatasetError(f"{job['mask']}: mask is {mask.shape[1]}x{mask.shape[0]} pixels but its image "
                               f"{job['path'].name} is {image.shape[1]}x{image.shape[0]}")
    return finish_image(image, mask, camera, todo, opts.background)


def _split(data: dict, names: list[str], opts: LoadOptions) -> tuple[list[int], list[int]]:
    """(train, test) indices of the frames `names`: the json's <split>_filenames lists when present,
    else every N-th by name."""
    listed = data.get(f"{opts.eval_split}_filenames") if opts.eval_split else None
    if not (isinstance(listed, list) and listed):
        return split_by_name(names, opts.test_every)
    wanted = {str(Path(p)).removeprefix("./") for p in listed}
    test_idx = [k for k, name in enumerate(names) if name in wanted]
    train_listed = data.get("train_filenames")
    if isinstance(train_listed, list) and train_listed:
        train_names = {str(Path(p)).removeprefix("./") for p in train_listed}
        train_idx = [k for k, name in enumerate(names) if name in train_names]
    else:
        train_idx = [k for k in range(len(names)) if k not in set(test_idx)]
    log(opts.verbose, f"split from {opts.eval_split}_filenames: {len(train_idx)} train, {len(test_idx)} test")
    return train_idx, test_idx

"""COLMAP datasets: ``sparse/0/`` (or ``sparse/``) with a binary or text model, images in ``images/``.

- The model is read with pycolmap after a structural check of the files (pycolmap's binary reader
  silently accepts truncated files, and its text reader's errors do not name the file).
- Cameras with lens distortion (SIMPLE_RADIAL, RADIAL, OPENCV, ...) are undistorted to pinhole
  images with pycolmap and cached (see :mod:`splatlab.data.undistort`); PINHOLE and
  SIMPLE_PINHOLE cameras are used directly.
- Pre-downscaled ``images_N/`` folders are used when ``downscale=N`` and they exist; the camera is
  rescaled to their actual size. Otherwise images are area-resized after undistortion.
- Masks: ``masks/`` (``masks_N/`` with ``images_N/``) holding, for image ``a/b.jpg``, one of
  ``a/b.jpg``, ``a/b.jpg.png`` or ``a/b.png``; white (> 127) = valid pixel.
- Split: sorted by image name, index % test_every == 0 is test (3DGS's llffhold).
- Points and colours from ``points3D``.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..camera import Camera
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
    warn,
)
from .depths import attach_depth_maps
from .scene import (LoadOptions, Scene, build_scene, colmap_model_files, find_colmap_model, make_view, split_by_name,
                    unloaded_view)
from .undistort import UndistortCache, UndistortJob, cache_folder, final_intrinsics, is_distorted, pinhole_of

# ---- structural checks of the model files -----------------------------------------------------


def _num_params(model_id: int) -> int | None:
    pycolmap = import_pycolmap()
    try:
        model = pycolmap.CameraModelId(model_id)
        if model.name == "INVALID":
            return None
        return len(pycolmap.Camera.create_from_model_id(0, model, 1.0, 1, 1).params)
    except Exception:  # noqa: BLE001 - any failure means "not a known model"
        return None


class _Reader:
    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.pos = 0

    def take(self, fmt: str, what: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise DatasetError(
                f"{self.path}: file is truncated or corrupt: needed {size} more bytes for {what} at byte "
                f"{self.pos}, but the file has {len(self.data)} bytes"
            )
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def name(self, what: str) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise DatasetError(f"{self.path}: file is truncated or corrupt: unterminated {what} at byte {self.pos}")
        raw = self.data[self.pos : end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{self.path}: corrupt {what} at byte {self.pos} ({exc})") from exc

    def count(self, what: str, min_record: int) -> int:
        (n,) = self.take("<Q", f"the number of {what}")
        if n * min_record > len(self.data) - self.pos:
            raise DatasetError(
                f"{self.path}: file is truncated or corrupt: it says {n} {what} but has only "
                f"{len(self.data) - self.pos} bytes left"
            )
        return n

    def done(self) -> None:
        if self.pos != len(self.data):
            raise DatasetError(
                f"{self.path}: file is corrupt: {len(self.data) - self.pos} unexpected bytes after the last record"
            )


def _check_binary(files: dict[str, Path]) -> None:
    r = _Reader(files["cameras"])
    for _ in range(r.count("cameras", 24)):
        cam_id, model_id, width, height = r.take("<iiQQ", "a camera record")
        n = _num_params(model_id)
        if n is None:
            raise DatasetError(f"{r.path}: corrupt camera {cam_id}: unknown camera model id {model_id}")
        if not (0 < width < 1_000_000 and 0 < height < 1_000_000):
            raise DatasetError(f"{r.path}: corrupt camera {cam_id}: image size {width}x{height}")
        r.take(f"<{n}d", f"camera {cam_id}'s parameters")
    r.done()
    r = _Reader(files["images"])
    for _ in range(r.count("images", 64 + 2 + 8)):
        (image_id,) = r.take("<I", "an image record")
        r.take("<7dI", f"image {image_id}'s pose and camera id")
        r.name(f"image {image_id}'s name")
        (n,) = r.take("<Q", f"image {image_id}'s number of 2D points")
        if n * 24 > len(r.data) - r.pos:
            raise DatasetError(f"{r.path}: file is truncated or corrupt: image {image_id} claims {n} 2D points")
        r.pos += 24 * n
    r.done()
    r = _Reader(files["points3D"])
    for _ in range(r.count("points", 51)):
        point_id, *_ = r.take("<Q3d3BdQ", "a 3D point record")
        (track_len,) = struct.unpack_from("<Q", r.data, r.pos - 8)
        if track_len * 8 > len(r.data) - r.pos:
            raise DatasetError(f"{r.path}: file is truncated or corrupt: point {point_id} claims {track_len} observations")
        r.pos += 8 * track_len
    r.done()


def _check_text(files: dict[str, Path]) -> None:
    def lines(path: Path):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path}: not a COLMAP text file ({exc})") from exc
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                yield number, line.split()

    def numbers(path, number, fields, what):
        try:
            return [float(f) for f in fields]
        except ValueError:
            raise DatasetError(f"{path}, line {number}: expected numbers for {what}, got {' '.join(fields)!r}") from None

    pycolmap = import_pycolmap()
    path = files["cameras"]
    for number, fields in lines(path):
        if len(fields) < 4:
            raise DatasetError(f"{path}, line {number}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...'")
        model = fields[1]
        if model not in pycolmap.CameraModelId.__members__ or model == "INVALID":
            raise DatasetError(f"{path}, line {number}: unknown camera model {model!r}")
        numbers(path, number, [fields[0], *fields[2:]], "the camera id, size and parameters")
        n = _num_params(int(pycolmap.CameraModelId.__members__[model]))
        if len(fields) - 4 != n:
            raise DatasetError(f"{path}, line {number}: camera model {model} has {n} parameters, found {len(fields) - 4}")
    path = files["images"]
    expect_header = True
    for number, fields in _image_lines(path):
        if expect_header:
            if len(fields) < 10:
                raise DatasetError(
                    f"{path}, line {number}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME', "
                    f"got {len(fields)} fields"
                )
            numbers(path, number, fields[:9], "the image id, pose and camera id")
        else:
            if len(fields) % 3 != 0:
                raise DatasetError(f"{path}, line {number}: expected (X Y POINT3D_ID) triples of 2D points")
            numbers(path, number, fields, "2D points")
        expect_header = not expect_header
    path = files["points3D"]
    for number, fields in lines(path):
        if len(fields) < 8 or (len(fields) - 8) % 2 != 0:
            raise DatasetError(
                f"{path}, line {number}: expected 'POINT3D_ID X Y Z R G B ERROR (IMAGE_ID POINT2D_IDX)...'"
            )
        numbers(path, number, fields, "a 3D point")


def _image_lines(path: Path):
    """images.txt: comment lines skipped, but empty lines kept (an image with no 2D points has one)."""
    text = path.read_text(encoding="utf-8", errors="strict")
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        yield number, line.split()


def read_model(model_dir: Path):
    """Check the model files and read them with pycolmap; DatasetError names the faulty file."""
    files = colmap_model_files(model_dir)
    if files is None:
        found = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []
        raise DatasetError(
            f"{model_dir}: incomplete COLMAP model: need cameras, images and points3D (.bin or .txt); "
            f"found {found or 'nothing'}"
        )
    is_text = files["cameras"].suffix == ".txt"
    try:
        _check_text(files) if is_text else _check_binary(files)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{model_dir}: COLMAP text model is not valid UTF-8 text ({exc})") from exc
    pycolmap = import_pycolmap()
    recon = pycolmap.Reconstruction()
    try:
        recon.read_text(str(model_dir)) if is_text else recon.read_binary(str(model_dir))
    except Exception as exc:  # noqa: BLE001 - pycolmap raises ValueError/IndexError/RuntimeError
        raise DatasetError(f"{model_dir}: cannot read the COLMAP model ({type(exc).__name__}: {exc})") from exc
    for image in recon.images.values():
        if not recon.exists_camera(image.camera_id):
            raise DatasetError(f"{files['images']}: image {image.name!r} refers to missing camera {image.camera_id}")
    return recon, files


# ---- loading ----------------------------------------------------------------------------------


def _find_mask(masks_dir: Path | None, name: str) -> Path | None:
    if masks_dir is None:
        return None
    rel = Path(name)
    for candidate in (masks_dir / rel, masks_dir / f"{name}.png", masks_dir / rel.with_suffix(".png")):
        if candidate.is_file():
            return candidate
    return None


def _warn_unmatched_masks(masks_dir: Path, images_without: list[str], used: set[Path]) -> None:
    """One warning naming the images without a mask and the mask files that match no image."""
    unused = sorted(p.relative_to(masks_dir).as_posix() for p in masks_dir.rglob("*")
                    if p.is_file() and p not in used)

    def listed(names):
        return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")

    text = f"{masks_dir}: no mask for {len(images_without)} images ({listed(images_without)}); those views have none"
    if unused:
        text += f". Mask files that match no image: {listed(unused)} (a mask for a/b.jpg is a/b.jpg, a/b.jpg.png or a/b.png)"
    warn(text)


def _viewmat(image) -> torch.Tensor:
    cam_from_world = image.cam_from_world()
    mat = np.eye(4)
    mat[:3, :4] = cam_from_world.matrix()
    return torch.from_numpy(mat)  # [4, 4] float64 world->camera (COLMAP is OpenCV already)


def _copy_camera(camera):
    pycolmap = import_pycolmap()
    return pycolmap.Camera(
        model=camera.model, width=camera.width, height=camera.height, params=list(camera.params)
    )


def _choose_intrinsics(recon, model_files: dict, images_dir: Path, opts: LoadOptions):
    """The model with per-photo intrinsics when the photos sharing a camera are a collection
    (`splatlab.data.intrinsics`), else as read; the choice is logged as an `info:` line."""
    from .intrinsics import choose_per_photo, per_photo_model

    choice = choose_per_photo(recon, images_dir, opts.intrinsics)
    if choice.refine:
        if opts.verbose:
            print(f"info: {choice.reason}", file=sys.stderr)
        return per_photo_model(recon, model_files, opts.cache_root, opts.verbose)
    return recon


def load_colmap(
    root: Path,
    opts: LoadOptions,
    *,
    model_dir: Path | None = None,
    images_dir: Path | None = None,
    kind: str = "colmap",
    info: dict | None = None,
    downscaled_folders: bool = True,
) -> Scene:
    model_dir = model_dir or find_colmap_model(root)
    if model_dir is None:
        raise DatasetError(f"{root}: no COLMAP model: looked for sparse/0/ and sparse/")
    recon, model_files = read_model(model_dir)
    images_dir = images_dir or root / "images"
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: images folder not found (COLMAP datasets keep their images in images/)")
    recon = _choose_intrinsics(recon, model_files, images_dir, opts)
    source_dir, source_factor, masks_dir = _image_folders(root, images_dir, opts, downscaled_folders)
    registered = _registered_images(recon, model_dir, source_dir, opts)
    jobs = _load_jobs(recon, registered, source_dir, source_factor, masks_dir)
    any_distorted = any(job.distorted for job in jobs)
    cache = None
    if any_distorted:
        folder = cache_folder(opts.cache_root, root, source_dir)
        cache = UndistortCache(folder)
        log(opts.verbose, f"undistorting {sum(j.distorted for j in jobs)} images to pinhole"
            + (f" (cache: {folder})" if folder is not None else " (no cache)"))

    todo = opts.downscale if source_factor == 1 else 1  # downscale still to apply to what is read
    train_idx, test_idx = split_by_name([job.image.name for job in jobs], opts.test_every)
    held = opts.held(train_idx, test_idx)  # the others: cameras only (another process's views)

    def load(k: int):
        return _load_one(jobs[k], cache, todo, opts.background) if k in held else _camera_only(jobs[k], todo)

    loaded = parallel_map(load, range(len(jobs)), desc=f"loading {len(held)} images", verbose=opts.verbose)
    if cache is not None:
        log(opts.verbose, f"undistortion cache: {cache.hits} reused, {cache.misses} computed")
    views = [make_view(cam, img, job.image.name, mask, opts.device) if img is not None else
             unloaded_view(cam, job.image.name, False, job.mask_path is not None)
             for (cam, img, mask, _), job in zip(loaded, jobs)]
    for view, job in zip(views, jobs):
        view.source = job.path
    points_t, colors_t = _sfm_points(recon, model_dir, views, jobs, opts)
    if (root / "depths").is_dir() and any_distorted:
        warn(f"{root / 'depths'}: depth maps of a dataset with lens distortion are not undistorted here; "
             "ignored (undistort the dataset first, as 3DGS's convert.py does)")
    elif len(recon.points3D) > 0:
        attach_depth_maps(root, model_dir, views, points_t)
    details = dict(info or {})
    details.update(model_dir=str(model_dir), images_dir=str(source_dir), undistorted=any_distorted,
                   masks=masks_dir is not None)
    if cache is not None:
        details["undistort_cache"] = {"folder": str(cache.folder), "reused": cache.hits, "computed": cache.misses}
    any_alpha = any(has_alpha for *_, has_alpha in loaded)
    return build_scene([views[i] for i in train_idx], [views[i] for i in test_idx], points_t, colors_t,
                       background=opts.background if any_alpha else None, kind=kind, path=root, opts=opts,
                       info=details)


def _image_folders(root: Path, images_dir: Path, opts: LoadOptions, downscaled_folders: bool):
    """(folder the images are read from, the downscale already applied to it, masks folder or None)."""
    n = opts.downscale
    source_dir, source_factor = images_dir, 1
    if n > 1 and downscaled_folders and (images_dir.parent / f"{images_dir.name}_{n}").is_dir():
        source_dir, source_factor = images_dir.parent / f"{images_dir.name}_{n}", n
        log(opts.verbose, f"using pre-downscaled images from {source_dir}")
    masks_dir = None
    for candidate in ([root / f"masks_{n}"] if source_factor > 1 else []) + [root / "masks"]:
        if candidate.is_dir():
            masks_dir = candidate
            break
    if masks_dir is not None and source_factor > 1 and masks_dir.name == "masks":
        masks_dir = None  # full-size masks do not fit pre-downscaled images
        warn(f"{root}: ignoring masks/ because images come from {source_dir.name}/ and there is no masks_{n}/")
    return source_dir, source_factor, masks_dir


def _registered_images(recon, model_dir: Path, source_dir: Path, opts: LoadOptions) -> list:
    """The model's posed images that exist on disk, sorted by name (missing ones warned about)."""
    registered = sorted((im for im in recon.images.values() if im.has_pose), key=lambda im: im.name)
    if len(registered) < len(recon.images):
        log(opts.verbose, f"{model_dir}: {len(recon.images) - len(registered)} images have no pose and are left out")
    if not registered:
        raise DatasetError(f"{model_dir}: the COLMAP model has no registered images")
    missing = [im.name for im in registered if not (source_dir / im.name).is_file()]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        warn(f"{source_dir}: {len(missing)} of {len(registered)} images in the COLMAP model are missing: {shown}")
        registered = [im for im in registered if (source_dir / im.name).is_file()]
        if not registered:
            raise DatasetError(f"{source_dir}: none of the images of the COLMAP model {model_dir} exist")
    return registered


@dataclass
class _Job:
    image: object  # pycolmap.Image
    path: Path
    camera: object  # pycolmap.Camera at the resolution of the file
    mask_path: Path | None
    distorted: bool


def _load_jobs(recon, registered: list, source_dir: Path, source_factor: int, masks_dir: Path | None) -> list[_Job]:
    """One job per image, after cheap header checks: a wrong image size fails before any decoding."""
    jobs, masks_missing = [], []
    for im in registered:
        path = source_dir / im.name
        col_cam = recon.cameras[im.camera_id]
        size = image_size(path)
        check_image_size(path, size, (col_cam.width, col_cam.height), downscale=source_factor,
                         what=f"COLMAP camera {im.camera_id} ({col_cam.model.name} {col_cam.width}x{col_cam.height})")
        cam = _copy_camera(col_cam)
        if source_factor > 1:
            cam.rescale(int(size[0]), int(size[1]))
        mask_path = _find_mask(masks_dir, im.name)
        if masks_dir is not None and mask_path is None:
            masks_missing.append(im.name)
        jobs.append(_Job(im, path, cam, mask_path, is_distorted(cam)))
    if masks_missing:
        _warn_unmatched_masks(masks_dir, masks_missing, {j.mask_path for j in jobs if j.mask_path is not None})
    return jobs


def _load_one(job: _Job, cache, todo: int, background):
    """(pinhole Camera, uint8 image [H, W, 3], mask or None, whether the file had alpha)."""
    if job.distorted:  # undistorted at the stored resolution, then downscaled (and cached so)
        image, mask, intr = cache.load(UndistortJob(job.image.name, job.path, job.camera, job.mask_path), todo)
        todo = 1
    else:
        image = read_image(job.path)
        mask = None if job.mask_path is None else read_mask(job.mask_path)
        intr = pinhole_of(job.camera)
        if (image.shape[1], image.shape[0]) != (intr.width, intr.height):
            raise DatasetError(f"{job.path}: image is {image.shape[1]}x{image.shape[0]} pixels but its camera "
                               f"expects {intr.width}x{intr.height}")
        if mask is not None and mask.shape != image.shape[:2]:
            raise DatasetError(f"{job.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} pixels but its image "
                               f"{job.path.name} is {image.shape[1]}x{image.shape[0]}")
    camera = Camera(intr.fx, intr.fy, intr.cx, intr.cy, _viewmat(job.image), intr.width, intr.height, job.image.name)
    return finish_image(image, mask, camera, todo, background)


def _camera_only(job: _Job, todo: int):
    """`_load_one`'s result without decoding the pixels: (pinhole Camera, None, None, whether the file has alpha)."""
    if job.distorted:
        intr, todo = final_intrinsics(job.camera, todo), 1
    else:
        intr = pinhole_of(job.camera)
    camera = Camera(intr.fx, intr.fy, intr.cx, intr.cy, _viewmat(job.image), intr.width, intr.height, job.image.name)
    return downscaled_camera(camera, todo), None, None, image_has_alpha(job.path)


def _sfm_points(recon, model_dir: Path, views: list, jobs: list[_Job], opts: LoadOptions):
    """(points [P, 3], colours [P, 3] in [0, 1]) of the model, and each view's observed point ids;
    random points around where the cameras look when the model has none."""
    pts = recon.points3D
    if len(pts) == 0:
        warn(f"{model_dir}: the COLMAP model has no 3D points; initialising from random points instead")
        from .nerfstudio import lookat_box_points

        return lookat_box_points([v.camera for v in views], opts)
    points = np.empty((len(pts), 3), dtype=np.float64)
    colors = np.empty((len(pts), 3), dtype=np.float64)
    row_of = {}
    for i, (pid, p) in enumerate(pts.items()):
        points[i] = p.xyz
        colors[i] = p.color
        row_of[pid] = i
    for view, job in zip(views, jobs):  # which SfM points each view saw: sparse depth for training
        ids = [row_of[p.point3D_id] for p in job.image.points2D if p.has_point3D() and p.point3D_id in row_of]
        view.point_ids = torch.tensor(ids, dtype=torch.int64)
    return torch.from_numpy(points).float(), torch.from_numpy(colors / 255.0).float()  # [P, 3], [P, 3]

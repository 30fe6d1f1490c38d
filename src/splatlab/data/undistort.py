"""Undistortion of images with lens distortion to pinhole images, with an on-disk cache.

pycolmap does the work: ``pycolmap.undistort_camera`` chooses the pinhole camera (COLMAP's
defaults: no blank pixels, so the output size may differ from the input) and
``pycolmap.undistort_image`` warps the pixels (bilinear). COLMAP and splatlab share the pixel
convention (pixel centres at +0.5), so the pinhole parameters are used unchanged.

Cache layout (documented in :func:`splatlab.data.load_scene`)::

    <cache_root>/undistorted/<tag>/<image name>-x<N>-<key>.png        undistorted image (RGB or RGBA)
    <cache_root>/undistorted/<tag>/<image name>-x<N>-<key>.mask.png   undistorted mask, when there is one

``<cache_root>`` is ``<dataset>/splatlab_cache`` unless ``cache_dir`` is given; ``<tag>`` names the
source image folder (``images``, ``images_2``, ...) and ``N`` the downscale factor applied after
undistortion (undistortion runs at the stored resolution, then the result is area-downscaled, as
3DGS's convert.py does; the cache holds the final, small images). ``<key>`` hashes everything the pixels depend
on: the image's relative name, file size and modification time, the mask's likewise, the camera
model, parameters and size, and the pycolmap version. A changed input gives a new key; the stale
entry for that image is deleted when the new one is written. Writes are atomic (temp + rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .images import DatasetError, downscaled_size, read_image, read_mask, resize_area, warn

CACHE_VERSION = 1
_MAX_PARAM = 1e-12


@dataclass
class PinholeIntrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


@dataclass
class UndistortJob:
    name: str  # image name relative to its folder (may contain "/")
    image_path: Path
    camera: object  # pycolmap.Camera describing the stored image (distorted)
    mask_path: Path | None = None


def is_distorted(camera) -> bool:
    """True when a pycolmap camera is not a plain pinhole (non-zero distortion parameters)."""
    name = camera.model.name
    if name in ("SIMPLE_PINHOLE", "PINHOLE"):
        return False
    idxs = list(camera.extra_params_idxs())
    params = np.asarray(camera.params, dtype=np.float64)
    if name in ("SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV") and idxs:
        return bool(np.any(np.abs(params[idxs]) > _MAX_PARAM))
    return True  # fisheye and other models always need remapping


def pinhole_of(camera) -> PinholeIntrinsics:
    """Pinhole intrinsics of a pycolmap camera, ignoring any distortion parameters."""
    return PinholeIntrinsics(
        float(camera.focal_length_x),
        float(camera.focal_length_y),
        float(camera.principal_point_x),
        float(camera.principal_point_y),
        int(camera.width),
        int(camera.height),
    )


def _downscaled(intr: PinholeIntrinsics, factor: int) -> PinholeIntrinsics:
    """Intrinsics for the image area-resized by 1/factor (exact per axis, as `Camera.scaled`)."""
    width, height = downscaled_size(intr.width, intr.height, factor)
    sx, sy = width / intr.width, height / intr.height
    return PinholeIntrinsics(intr.fx * sx, intr.fy * sy, intr.cx * sx, intr.cy * sy, width, height)


def _options(pycolmap):
    return pycolmap.UndistortCameraOptions()


def undistorted_intrinsics(camera) -> PinholeIntrinsics:
    from .images import import_pycolmap

    pycolmap = import_pycolmap()
    return pinhole_of(pycolmap.undistort_camera(_options(pycolmap), camera))


def final_intrinsics(camera, downscale: int = 1) -> PinholeIntrinsics:
    """The pinhole intrinsics of `camera`'s image undistorted, then downscaled (what `UndistortCache.load`
    returns with its pixels; computed without them)."""
    intr = undistorted_intrinsics(camera)
    return _downscaled(intr, downscale) if downscale > 1 else intr


def _undistort_array(arr: np.ndarray, camera) -> tuple[np.ndarray, object]:
    """Warp one ``uint8 [H, W, 3]`` or ``[H, W]`` array; returns (array, pinhole pycolmap camera)."""
    from .images import import_pycolmap

    pycolmap = import_pycolmap()
    bitmap = pycolmap.Bitmap.from_array(np.ascontiguousarray(arr))
    out, pinhole = pycolmap.undistort_image(_options(pycolmap), bitmap, camera)
    result = out.to_array()
    if arr.ndim == 2 and result.ndim == 3:
        result = result[..., 0]
    return result, pinhole


def undistort_image(arr: np.ndarray, camera) -> tuple[np.ndarray, PinholeIntrinsics]:
    """Undistort ``uint8 [H, W, 3|4]`` (alpha warped like a grey image) to the pinhole camera."""
    rgb, pinhole = _undistort_array(arr[..., :3], camera)
    if arr.shape[-1] == 4:
        alpha, _ = _undistort_array(arr[..., 3], camera)
        rgb = np.concatenate([rgb, alpha[..., None]], axis=-1)
    return rgb, pinhole_of(pinhole)


def _stat_key(path: Path | None) -> list | None:
    if path is None:
        return None
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _safe_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name.replace("/", "__").replace(os.sep, "__"))
    return safe[:120]


def _atomic_save_png(arr: np.ndarray, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(arr).save(tmp, format="PNG", compress_level=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cache_folder(cache_root: Path | None, dataset_dir: Path, source_dir: Path) -> Path | None:
    """``<cache_root>/undistorted/<tag>`` for images from `source_dir`, or None when caching is off.

    The tag is the source folder's path inside the dataset (``images``, ``images_2``, ...); when
    the cache lives outside the dataset (``cache_dir``), a hash of the dataset's absolute path is
    appended so that datasets sharing one cache folder do not evict each other's entries.
    """
    if cache_root is None:
        return None
    try:
        tag = source_dir.resolve().relative_to(dataset_dir.resolve()).as_posix() or "."
    except ValueError:
        tag = source_dir.name
    tag = _safe_name(tag if tag != "." else "root")
    try:
        cache_root.resolve().relative_to(dataset_dir.resolve())
    except ValueError:
        digest = hashlib.sha1(str(dataset_dir.resolve()).encode()).hexdigest()[:8]
        tag = f"{tag}-{digest}"
    return cache_root / "undistorted" / tag


class UndistortCache:
    """Undistorts images (and masks) once and keeps the results under ``folder``.

    ``folder=None`` disables caching (everything is recomputed on each load).
    """

    def __init__(self, folder: Path | None):
        self.folder = folder
        self._writable = folder is not None
        self.hits = 0
        self.misses = 0

    def _key(self, job: UndistortJob, downscale: int) -> str:
        from .images import import_pycolmap

        pycolmap = import_pycolmap()
        payload = [
            CACHE_VERSION,
            pycolmap.__version__,
            job.name,
            _stat_key(job.image_path),
            _stat_key(job.mask_path),
            job.camera.model.name,
            [float(p) for p in job.camera.params],
            int(job.camera.width),
            int(job.camera.height),
            int(downscale),
        ]
        return hashlib.sha1(json.dumps(payload).encode()).hexdigest()[:16]

    def _ensure_folder(self) -> bool:
        if not self._writable:
            return False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            return True
        except OSError as exc:
            warn(f"cannot create the undistortion cache {self.folder} ({exc}); undistorting without a cache")
            self._writable = False
            return False

    def load(self, job: UndistortJob, downscale: int = 1) -> tuple[np.ndarray, np.ndarray | None, PinholeIntrinsics]:
        """(image uint8 [H, W, 3|4], mask bool [H, W] or None, pinhole intrinsics of both).

        The image is undistorted at the stored resolution (best quality), then area-downscaled by
        `downscale`; the cache keeps that final result, so later loads decode only small files.
        """
        intr = final_intrinsics(job.camera, downscale)
        image_file = mask_file = None
        if self.folder is not None:
            key = self._key(job, downscale)
            stem = f"{_safe_name(job.name)}-x{downscale}-{key}"
            image_file = self.folder / f"{stem}.png"
            mask_file = self.folder / f"{stem}.mask.png" if job.mask_path is not None else None
            cached = self._read_cached(image_file, mask_file, intr)
            if cached is not None:
                self.hits += 1
                return cached[0], cached[1], intr
        self.misses += 1
        raw = read_image(job.image_path)
        if (raw.shape[1], raw.shape[0]) != (job.camera.width, job.camera.height):
            raise DatasetError(
                f"{job.image_path}: image is {raw.shape[1]}x{raw.shape[0]} pixels but its camera expects "
                f"{job.camera.width}x{job.camera.height}"
            )
        image, _ = undistort_image(raw, job.camera)
        mask = None
        if job.mask_path is not None:
            raw_mask = read_mask(job.mask_path)
            if raw_mask.shape != raw.shape[:2]:
                raise DatasetError(
                    f"{job.mask_path}: mask is {raw_mask.shape[1]}x{raw_mask.shape[0]} pixels but its image "
                    f"{job.image_path.name} is {raw.shape[1]}x{raw.shape[0]}"
                )
            warped, _ = _undistort_array(raw_mask.astype(np.uint8) * 255, job.camera)
            mask = warped.astype(np.float32) / 255.0
        if downscale > 1:
            image = resize_area(image, (intr.width, intr.height))
            mask = None if mask is None else resize_area(mask, (intr.width, intr.height))
        mask = None if mask is None else mask > 0.5
        if (image.shape[1], image.shape[0]) != (intr.width, intr.height):  # pragma: no cover - pycolmap invariant
            raise AssertionError(f"{job.image_path}: undistorted image size disagrees with its camera")
        if image_file is not None and self._ensure_folder():
            self._remove_stale(f"{_safe_name(job.name)}-x{downscale}", image_file.name)
            try:
                _atomic_save_png(image, image_file)
                if mask is not None:
                    _atomic_save_png(mask.astype(np.uint8) * 255, mask_file)
            except OSError as exc:
                warn(f"cannot write to the undistortion cache {self.folder} ({exc}); continuing without it")
                self._writable = False
        return image, mask, intr

    def _read_cached(self, image_file: Path, mask_file: Path | None, intr: PinholeIntrinsics):
        if not image_file.is_file() or (mask_file is not None and not mask_file.is_file()):
            return None
        try:
            image = read_image(image_file)
            mask = read_mask(mask_file) if mask_file is not None else None
        except DatasetError:
            return None  # a damaged cache entry is simply recomputed
        if (image.shape[1], image.shape[0]) != (intr.width, intr.height):
            return None
        if mask is not None and mask.shape != image.shape[:2]:
            return None
        return image, mask

    def _remove_stale(self, prefix: str, keep: str) -> None:
        pattern = re.compile(re.escape(prefix) + r"-[0-9a-f]{16}(\.mask)?\.png$")
        keep_stem = keep[: -len(".png")]
        for entry in self.folder.iterdir():
            if pattern.fullmatch(entry.name) and not entry.name.startswith(keep_stem):
                entry.unlink(missing_ok=True)

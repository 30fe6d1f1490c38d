"""Image reading, validation, compositing and downscaling helpers shared by the dataset loaders.

Conventions:
- Images are held as numpy ``uint8`` arrays ``[H, W, 3]`` (or ``[H, W, 4]`` straight from disk
  before compositing); masks as ``bool`` arrays ``[H, W]`` with True = valid pixel.
- EXIF orientation tags are *not* applied: camera models (COLMAP, Blender, nerfstudio) describe
  the raw pixel array as stored in the file, and COLMAP's own reader ignores the tag too.
- Downscaling is an area (box) filter; the camera is rescaled with the exact size ratio, which is
  exact under the pixel-centre convention of :mod:`splatlab.camera`.
"""

from __future__ import annotations

import os
import warnings
import zlib  # noqa: F401  -- must be loaded before pycolmap, see `import_pycolmap`
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..camera import Camera

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

T = TypeVar("T")
R = TypeVar("R")


class DatasetError(ValueError):
    """A dataset folder or one of its files cannot be used; the message names the file and the problem."""


class DatasetWarning(UserWarning):
    """Something in a dataset was skipped or adjusted (e.g. frames whose image file is missing)."""


def warn(message: str) -> None:
    warnings.warn(message, DatasetWarning, stacklevel=3)


def log(verbose: bool, message: str) -> None:
    if verbose:
        print(f"[splatlab.data] {message}", flush=True)


def import_pycolmap():
    """Import pycolmap safely.

    pycolmap's extension module exports its own zlib symbols. If it is loaded before the system
    ``libz.so.1`` is, Pillow's PNG encoder later binds half of zlib to pycolmap's copy and the
    process aborts in ``deflateEnd`` (seen with pycolmap 4.2.1 + Pillow wheels). Importing
    Python's ``zlib`` module and Pillow first (done at the top of this module) avoids it.
    """
    import pycolmap

    return pycolmap


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_image_files(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: p.name)


def _to_uint8(img: Image.Image) -> Image.Image:
    """16/32-bit integer and float modes -> 8-bit, keeping the most significant bits."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.uint16) >> 8
        return Image.fromarray(arr.astype(np.uint8), "L")
    if img.mode == "I":
        arr = np.asarray(img, dtype=np.int64)
        shift = 8 if arr.max(initial=0) > 255 else 0
        return Image.fromarray(np.clip(arr >> shift, 0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8), "L")
    return img


def _mode_has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info)


def image_has_alpha(path: Path) -> bool:
    """Whether `read_image` would return an alpha channel, from the file header (no decoding)."""
    try:
        with Image.open(path) as img:
            return _mode_has_alpha(img)  # (16-bit and float modes have none)
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: image file does not exist") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable image file ({exc})") from exc


def read_image(path: Path, *, keep_alpha: bool = True) -> np.ndarray:
    """Read an image file fully into a ``uint8`` array ``[H, W, 3]`` or ``[H, W, 4]`` (with alpha).

    Raises DatasetError naming the file when it is missing, not an image, truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image file does not exist")
    try:
        with Image.open(path) as img:
            img.load()  # decode everything now: truncated files fail here, not during training
            img = _to_uint8(img)
            has_alpha = _mode_has_alpha(img)
            img = img.convert("RGBA" if (has_alpha and keep_alpha) else "RGB")
            arr = np.asarray(img, dtype=np.uint8)
    except UnidentifiedImageError as exc:
        raise DatasetError(f"{path}: not a readable image file ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated / corrupt data
        raise DatasetError(f"{path}: cannot decode image, the file is truncated or corrupt ({exc})") from exc
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DatasetError(f"{path}: image has no pixels (shape {arr.shape})")
    return np.ascontiguousarray(arr)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: image file does not exist") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable image file ({exc})") from exc


def read_exif(path: Path) -> tuple[tuple[int, int], str, str, float | None] | None:
    """((width, height), make, model, focal length in mm or None) from a photo's header and EXIF;
    None when the file cannot be read. The one EXIF reader of the loaders: SfM groups photos into
    cameras by it, and a run tells a photo collection from one capture by it."""
    try:
        with Image.open(path) as img:
            exif = img.getexif()
            focal = exif.get_ifd(0x8769).get(0x920A)
            size = img.size
    except Exception:  # noqa: BLE001 - EXIF is a hint only; a broken file is reported where it is read
        return None
    make, model = (str(exif.get(tag, "")).strip("\x00 ") for tag in (0x010F, 0x0110))
    try:
        focal = None if focal is None else round(float(focal), 2)
    except (TypeError, ValueError, ZeroDivisionError):
        focal = None
    return size, make, model, focal


def camera_model(path: Path) -> tuple[str, str] | None:
    """(make, model) of the camera that took the photo, from its EXIF; None when the file has
    none (renders, frames of a video, photos stripped of metadata) or cannot be read."""
    exif = read_exif(path)
    if exif is None or not (exif[1] or exif[2]):
        return None
    return exif[1], exif[2]


def exif_camera(path: Path) -> tuple[str, str, float | None] | None:
    """(make, model, focal length in mm) from the EXIF: photos that differ in it differ in their
    intrinsics; None when the photo records none of them."""
    exif = read_exif(path)
    if exif is None or not (exif[1] or exif[2] or exif[3]):
        return None
    return exif[1], exif[2], exif[3]


def read_mask(path: Path) -> np.ndarray:
    """Read a mask image as ``bool [H, W]``: True where the pixel is valid (value > 127).

    RGB masks are converted to grey; a mask with an alpha channel uses the alpha channel.
    """
    arr = read_image(path, keep_alpha=True)
    grey = arr[..., 3] if arr.shape[-1] == 4 else np.asarray(Image.fromarray(arr).convert("L"))
    return grey > 127


def composite(rgba: np.ndarray, background: Sequence[float]) -> np.ndarray:
    """``uint8 [H, W, 4]`` -> ``float32 [H, W, 3]`` in [0, 255]: RGB over `background` (in [0, 1])."""
    rgb = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3) * 255.0
    return rgb * alpha + bg * (1.0 - alpha)


def to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def downscaled_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """The size of an image downscaled by an integer `factor` (same rounding as `Camera.scaled`)."""
    return max(1, round(width / factor)), max(1, round(height / factor))


def resize_area(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-resize ``[H, W, C]`` or ``[H, W]`` (uint8, float32 or bool) to ``size = (W', H')``.

    Exact block averaging when the factor is an integer dividing both sides; otherwise Pillow's
    BOX filter on float32 channels (Pillow's uint8 BOX path rounds up by ~0.5 level on average).
    uint8 in -> uint8 out (rounded), float in -> float32 out, bool in -> bool (> 0.5).
    """
    new_w, new_h = size
    h, w = arr.shape[:2]
    if (new_w, new_h) == (w, h):
        return arr
    kind = arr.dtype
    integer = w % new_w == 0 and h % new_h == 0 and w // new_w == h // new_h
    if integer and kind == np.uint8 and (arr.ndim == 2 or arr.shape[2] in (3, 4)):
        # Pillow's reduce() is the same block average, 10x faster (rounds halves up).
        return np.asarray(Image.fromarray(np.ascontiguousarray(arr)).reduce(w // new_w))
    data = arr.astype(np.float32)
    if integer:
        f = w // new_w
        out = data.reshape(new_h, f, new_w, f, *data.shape[2:]).mean(axis=(1, 3))
    else:
        chans = [data] if data.ndim == 2 else [data[..., c] for c in range(data.shape[2])]
        resized = [
            np.asarray(Image.fromarray(np.ascontiguousarray(ch)).resize((new_w, new_h), Image.Resampling.BOX))
            for ch in chans
        ]
        out = resized[0] if data.ndim == 2 else np.stack(resized, axis=-1)
    if kind == np.bool_:
        return out > 0.5
    if kind == np.uint8:
        return to_uint8(out)
    return out.astype(np.float32)


def rescale_camera(camera: Camera, width: int, height: int) -> Camera:
    """The camera for its image resized to (width, height); exact per axis (see `Camera.scaled`)."""
    if (width, height) == (camera.width, camera.height):
        return camera
    sx, sy = width / camera.width, height / camera.height
    return Camera(
        camera.fx * sx, camera.fy * sy, camera.cx * sx, camera.cy * sy, camera.viewmat, width, height, camera.name
    )


def finish_image(image: np.ndarray, mask, camera: Camera, todo: int, background):
    """A loaded image as a view holds it: RGBA composited over `background` (or its alpha
    dropped when None), then area-downscaled by `todo` with its mask and camera.
    Returns (camera, uint8 image [H, W, 3], mask or None, whether the file had alpha)."""
    has_alpha = image.shape[-1] == 4
    data = image
    if has_alpha:
        data = composite(image, background) if background is not None else image[..., :3]
    if todo > 1:
        camera = downscaled_camera(camera, todo)
        size = (camera.width, camera.height)
        data = resize_area(data, size)
        mask = None if mask is None else resize_area(mask, size)
    return camera, to_uint8(data), mask, has_alpha


def downscaled_camera(camera: Camera, todo: int) -> Camera:
    """The camera of its image area-downscaled by `todo` (as `finish_image` does; no pixels needed)."""
    return rescale_camera(camera, *downscaled_size(camera.width, camera.height, todo)) if todo > 1 else camera


def check_image_size(
    path: Path, actual: tuple[int, int], expected: tuple[int, int], *, downscale: int = 1, what: str = "its camera"
) -> None:
    """Raise DatasetError when an image's (width, height) disagrees with the size its camera expects.

    With ``downscale > 1`` (a pre-downscaled ``images_N`` folder), a difference of one pixel from
    ``expected / downscale`` is tolerated: tools round differently.
    """
    ew, eh = expected
    aw, ah = actual
    if downscale == 1:
        ok = (aw, ah) == (ew, eh)
        exp_text = f"{ew}x{eh}"
    else:
        ok = abs(aw - ew / downscale) <= 1 and abs(ah - eh / downscale) <= 1
        exp_text = f"about {ew / downscale:g}x{eh / downscale:g} ({ew}x{eh} / {downscale})"
    if not ok:
        raise DatasetError(
            f"{path}: image is {aw}x{ah} pixels but {what} expects {exp_text}; "
            "the image does not belong to this camera (wrong folder, or resized without updating the poses?)"
        )


def num_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def parallel_map(fn: Callable[[T], R], items: Iterable[T], *, desc: str, verbose: bool) -> list[R]:
    """``[fn(x) for x in items]`` on a small thread pool (Pillow and pycolmap release the GIL)."""
    items = list(items)
    if not items:
        return []
    bar = None
    if verbose:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=f"[splatlab.data] {desc}", unit="img", leave=False)
    results: list[R] = []
    try:
        if len(items) == 1 or num_workers() == 1:
            for item in items:
                results.append(fn(item))
                if bar is not None:
                    bar.update(1)
        else:
            with ThreadPoolExecutor(num_workers()) as pool:
                for result in pool.map(fn, items):
                    results.append(result)
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return results


def resolve_downscaled_path(root: Path, rel: str | Path, downscale: int) -> Path | None:
    """``images/x.jpg`` -> ``images_N/x.jpg`` when that pre-downscaled file exists, else None."""
    if downscale == 1:
        return None
    rel = Path(rel)
    parts = rel.parts
    if not parts:
        return None
    # Skip leading "." components (e.g. "./images/x.jpg").
    i = 0
    while i < len(parts) - 1 and parts[i] == ".":
        i += 1
    if i >= len(parts) - 1:
        return None  # the file sits directly in root: there is no folder to swap
    candidate = root.joinpath(*parts[:i], f"{parts[i]}_{downscale}", *parts[i + 1 :])
    return candidate if candidate.is_file() else None

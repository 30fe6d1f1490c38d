"""`Scene` and `View`, layout detection and `load_scene`: from a folder to a training-ready scene.

Supported layouts (detected in this order):

=============  ==============================================================================
``blender``    ``transforms_train.json`` (+ ``transforms_val.json`` / ``transforms_test.json``),
               NeRF-synthetic style; see :mod:`splatlab.data.blender`.
``nerfstudio`` ``transforms.json`` (nerfstudio or instant-ngp); see :mod:`splatlab.data.nerfstudio`.
``colmap``     ``sparse/0/`` or ``sparse/`` holding ``cameras``, ``images``, ``points3D``
               (``.bin`` or ``.txt``), images in ``images/``; see :mod:`splatlab.data.colmap`.
``photos``     a folder of image files without poses (or a folder with only ``images/``):
               structure-from-motion with pycolmap first; see :mod:`splatlab.data.photos`.
=============  ==============================================================================

Caches. Nothing in a dataset folder is ever written (datasets may be read-only). Derived
files go to a per-user cache, ``$SPLATLAB_CACHE`` or ``~/.cache/splatlab`` (``$XDG_CACHE_HOME``
respected), in a folder per dataset named after it and keyed by its absolute path
(``<cache>/<dataset name>-<hash>/``), or to ``cache_dir`` when given. It holds

- ``undistorted/<images folder>/``: pinhole versions of images (and masks) taken with lens
  distortion (COLMAP non-pinhole cameras, nerfstudio k1/k2/p1/p2/k3), keyed on the inputs;
- ``sfm/``: the structure-from-motion result for a folder of photos (``database.db``,
  ``sparse/0/`` as a COLMAP binary model, ``inputs.json`` describing what it was computed from).

Delete the folder at any time; it is rebuilt on the next load.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..camera import Camera
from .images import DatasetError, is_image_file, list_image_files, log

def user_cache_root() -> Path:
    """Where splatlab keeps derived files: $SPLATLAB_CACHE, else $XDG_CACHE_HOME/splatlab, else
    ~/.cache/splatlab."""
    if os.environ.get("SPLATLAB_CACHE"):
        return Path(os.environ["SPLATLAB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "splatlab"


def dataset_cache_dir(dataset_dir: Path) -> Path:
    """The per-user cache folder of one dataset: named after it, keyed by its absolute path."""
    resolved = Path(dataset_dir).expanduser().resolve()
    key = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    return user_cache_root() / f"{resolved.name}-{key}"
KINDS = ("colmap", "blender", "nerfstudio", "photos")


@dataclass
class View:
    """One posed image: a pinhole camera (OpenCV convention) and its pixels.

    A view another process trains on (`LoadOptions.share`) is *unloaded*: camera, name, SfM
    point ids and whether it has alpha / a mask are there, its pixels (image, mask, alpha,
    depth) are None.
    """

    camera: Camera  # pinhole (undistorted), OpenCV convention, width/height = image size
    image: torch.Tensor | None  # [H, W, 3] uint8; None when unloaded
    name: str
    mask: torch.Tensor | None = None  # [H, W] bool, True = valid pixel
    alpha: torch.Tensor | None = None  # [H, W] uint8 opacity of an RGBA source (image is composited)
    point_ids: torch.Tensor | None = None  # [K] int64 rows of Scene.points this view observed (SfM tracks)
    inv_depth: torch.Tensor | None = None  # [H, W] float32 inverse depth prior (depth maps), 0 = unknown
    alpha_elsewhere: bool = False  # unloaded: the view has an alpha channel this process did not load
    mask_elsewhere: bool = False  # unloaded: the view has a mask this process did not load
    source: Path | None = None  # the photo it came from (its EXIF says which camera took it)

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None or self.alpha_elsewhere

    @property
    def has_mask(self) -> bool:
        return self.mask is not None or self.mask_elsewhere

    @property
    def loaded(self) -> bool:
        """Whether this process holds the view's pixels."""
        return self.image is not None

    def pixels(self) -> torch.Tensor:
        """The image [H, W, 3] uint8; an error naming the view when this process did not load it."""
        if self.image is None:
            raise RuntimeError(f"{self.name}: the pixels of this view were not loaded here (another process "
                               "holds them: LoadOptions.share); only its camera is known")
        return self.image

    def image_float(self, device=None) -> torch.Tensor:
        """[H, W, 3] float32 in [0, 1] (moved to `device` first, then converted)."""
        image = self.pixels() if device is None else self.pixels().to(device, non_blocking=True)
        return image.to(torch.float32) / 255.0

    def drop_mask(self) -> None:
        """Train and measure every pixel (--masks off)."""
        self.mask, self.mask_elsewhere = None, False

    @property
    def height(self) -> int:
        return int(self.camera.height if self.image is None else self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.camera.width if self.image is None else self.image.shape[1])


@dataclass
class Scene:
    """Everything the trainer needs from a dataset."""

    train: list[View]
    test: list[View]
    points: torch.Tensor | None  # [P, 3] float32 initial point cloud
    point_colors: torch.Tensor | None  # [P, 3] float32 in [0, 1]
    extent: float  # 1.1 * max distance of the training camera centres from their mean (3DGS)
    background: tuple[float, float, float] | None  # colour RGBA images were composited over, else None
    kind: str  # "colmap" | "blender" | "nerfstudio" | "photos"
    path: Path
    info: dict = field(default_factory=dict, repr=False)  # loader details (e.g. registered images)

    def __repr__(self) -> str:
        size = f"{self.train[0].width}x{self.train[0].height}" if self.train else "-"
        npts = 0 if self.points is None else int(self.points.shape[0])
        return (
            f"Scene(kind={self.kind!r}, path={str(self.path)!r}, train={len(self.train)}, test={len(self.test)}, "
            f"image={size}, points={npts}, extent={self.extent:.4g}, background={self.background})"
        )


@dataclass(frozen=True)
class ViewShare:
    """The views one of `world` processes loads the pixels of: in each split (train, test), the
    views at index rank, rank + world, rank + 2 world, ... (the ones it trains on and evaluates)."""

    rank: int
    world: int

    def __post_init__(self) -> None:
        if not (self.world >= 1 and 0 <= self.rank < self.world):
            raise ValueError(f"ViewShare: rank must be in [0, world), got rank {self.rank} of {self.world}")

    def holds(self, index: int) -> bool:
        return index % self.world == self.rank


@dataclass
class LoadOptions:
    """`load_scene`'s options, passed on to the layout loaders."""

    downscale: int = 1
    test_every: int = 8
    background: tuple[float, float, float] | None = (1.0, 1.0, 1.0)
    eval_split: str = "test"
    cache_root: Path | None = None  # None: caching disabled
    device: torch.device | None = None
    num_random_points: int = 100_000
    seed: int = 0
    verbose: bool = True
    sfm: object | None = None  # photos.SfMOptions
    triangulate: bool = True  # poses without points (nerfstudio): triangulate points (data/triangulate.py)
    intrinsics: str = "auto"  # COLMAP: per-photo intrinsics for a collection under one camera (data/intrinsics.py)
    share: ViewShare | None = None  # None: load every view's pixels

    def holds(self, index: int) -> bool:
        """Whether to load the pixels of the view at `index` of its split (train or test)."""
        return self.share is None or self.share.holds(index)

    def held(self, train: Sequence[int], test: Sequence[int]) -> set[int]:
        """Of a loader's items split into `train` and `test` (indices into its list), the ones to load."""
        return {i for indices in (train, test) for k, i in enumerate(indices) if self.holds(k)}


# ---- shared helpers used by the loaders ----------------------------------------------------


def split_by_name(names: Sequence[str], test_every: int) -> tuple[list[int], list[int]]:
    """(train, test) indices: sorted by name, every `test_every`-th (idx % test_every == 0) is test.

    This is the 3DGS "llffhold" rule (test_every=8). ``test_every=0`` puts everything in train.
    """
    order = sorted(range(len(names)), key=lambda i: names[i])
    if test_every <= 0:
        return order, []
    train = [i for k, i in enumerate(order) if k % test_every != 0]
    test = [i for k, i in enumerate(order) if k % test_every == 0]
    return train, test


def camera_extent(cameras: Sequence[Camera]) -> float:
    """3DGS's scene radius: 1.1 * the largest distance of a camera centre from the centres' mean.

    Falls back to 1.0 for a single camera (or cameras all at one place), where that is zero.
    """
    if not cameras:
        return 1.0
    centres = torch.stack([c.position.double().cpu() for c in cameras])  # [N, 3]
    radius = (centres - centres.mean(0)).norm(dim=1).max().item()
    return 1.1 * radius if radius > 1e-9 else 1.0


def random_points(
    num: int, low: Sequence[float], high: Sequence[float], seed: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """`num` points uniform in the box [low, high] with uniform random colours (seeded)."""
    if num <= 0:
        return None, None
    gen = torch.Generator().manual_seed(int(seed))
    low_t = torch.as_tensor(low, dtype=torch.float32)
    high_t = torch.as_tensor(high, dtype=torch.float32)
    points = low_t + torch.rand(num, 3, generator=gen) * (high_t - low_t)  # [P, 3]
    colors = torch.rand(num, 3, generator=gen)  # [P, 3]
    return points, colors


def make_view(
    camera: Camera, image: np.ndarray, name: str, mask: np.ndarray | None, device, alpha: np.ndarray | None = None
) -> View:
    """numpy uint8 [H, W, 3] (+ bool [H, W]) -> View, checking the camera agrees with the pixels."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise AssertionError(f"{name}: internal error, expected uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if (camera.width, camera.height) != (image.shape[1], image.shape[0]):
        raise AssertionError(f"{name}: internal error, camera {camera.width}x{camera.height} vs image {image.shape}")
    if not image.flags.writeable or not image.flags.c_contiguous:
        image = np.array(image, order="C")  # torch wants writable memory
    img_t = torch.from_numpy(image)
    mask_t = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask, dtype=np.bool_))
    if device is not None:
        img_t = img_t.to(device)
        mask_t = None if mask_t is None else mask_t.to(device)
    alpha_t = None if alpha is None else torch.from_numpy(np.array(alpha, dtype=np.uint8))  # a writable copy
    if device is not None and alpha_t is not None:
        alpha_t = alpha_t.to(device)
    camera.name = name
    return View(camera=camera, image=img_t, name=name, mask=mask_t, alpha=alpha_t)


def unloaded_view(camera: Camera, name: str, has_alpha: bool, has_mask: bool) -> View:
    """A view whose pixels another process holds: its camera (at the size the pixels would have)."""
    camera.name = name
    return View(camera=camera, image=None, name=name, alpha_elsewhere=has_alpha, mask_elsewhere=has_mask)


def build_scene(
    views: list[View],
    test_views: list[View],
    points,
    colors,
    *,
    background,
    kind: str,
    path: Path,
    opts: LoadOptions,
    info: dict | None = None,
) -> Scene:
    if not views:
        raise DatasetError(
            f"{path}: no training views are left (test_every={opts.test_every} put all "
            f"{len(test_views)} views in the test split); use a larger test_every or 0"
        )
    if points is not None:
        points = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 3)
        colors = torch.as_tensor(colors, dtype=torch.float32).reshape(-1, 3).clamp(0.0, 1.0)
    extent = camera_extent([v.camera for v in views])
    bg = None if background is None else tuple(float(c) for c in background)
    scene = Scene(views, test_views, points, colors, float(extent), bg, kind, path, info or {})
    log(opts.verbose, f"loaded {scene}")
    return scene


# ---- layout detection -----------------------------------------------------------------------

_MODEL_FILES = ("cameras", "images", "points3D")


def colmap_model_files(folder: Path) -> dict[str, Path] | None:
    """{'cameras': ..., 'images': ..., 'points3D': ...} when `folder` has a full model (.bin or .txt)."""
    for ext in (".bin", ".txt"):
        files = {name: folder / f"{name}{ext}" for name in _MODEL_FILES}
        if all(f.is_file() for f in files.values()):
            return files
    return None


def find_colmap_model(root: Path) -> Path | None:
    """The COLMAP model folder of a dataset: ``sparse/0`` or ``sparse`` (or None when there is no ``sparse``).

    Raises DatasetError when ``sparse/`` exists but holds no complete model.
    """
    sparse = root / "sparse"
    if not sparse.is_dir():
        return None
    candidates = [sparse / "0", sparse]
    candidates += sorted((p for p in sparse.iterdir() if p.is_dir() and p.name != "0"), key=lambda p: p.name)
    for folder in candidates:
        if folder.is_dir() and colmap_model_files(folder) is not None:
            return folder
    found = sorted(p.name for p in (sparse / "0" if (sparse / "0").is_dir() else sparse).iterdir())
    raise DatasetError(
        f"{root}: looks like a COLMAP dataset (has sparse/) but no complete model was found: looked for "
        f"cameras, images and points3D (.bin or .txt) in {sparse / '0'} and {sparse}; found {found or 'nothing'}"
    )


def detect_layout(path: Path) -> tuple[str, Path]:
    """(kind, root) of a dataset path; raises DatasetError naming the path and what was looked for."""
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_file():
        if path.name in ("transforms_train.json",):
            return "blender", path.parent
        if path.suffix == ".json":
            return "nerfstudio", path
        raise DatasetError(
            f"{path}: is a file; expected a dataset folder (COLMAP, Blender, nerfstudio or a folder of photos) "
            "or a transforms.json file"
        )
    if (path / "transforms_train.json").is_file():
        return "blender", path
    if (path / "transforms.json").is_file():
        return "nerfstudio", path / "transforms.json"
    if find_colmap_model(path) is not None:
        return "colmap", path
    if any(is_image_file(p) for p in path.iterdir()):
        return "photos", path
    if (path / "images").is_dir() and list_image_files(path / "images"):
        return "photos", path / "images"
    entries = sorted(p.name for p in path.iterdir() if p.name != "splatlab_cache")  # round 1's cache
    if not entries:
        raise DatasetError(f"{path}: the folder is empty; expected a dataset or image files")
    shown = ", ".join(entries[:10]) + (f", ... ({len(entries)} entries)" if len(entries) > 10 else "")
    raise DatasetError(
        f"{path}: not a dataset. Looked for transforms_train.json (Blender), transforms.json "
        "(nerfstudio / instant-ngp), sparse/0/ or sparse/ with cameras, images, points3D .bin/.txt (COLMAP), "
        f"and image files (.jpg, .png, ...) for structure-from-motion; found: {shown}"
    )


# ---- the entry point ------------------------------------------------------------------------


def load_scene(
    path,
    *,
    downscale: int = 1,
    test_every: int = 8,
    background=(1.0, 1.0, 1.0),
    eval_split: str = "test",
    cache_dir=None,
    device=None,
    num_random_points: int = 100_000,
    seed: int = 0,
    verbose: bool = True,
    sfm=None,
    triangulate: bool = True,
    share: ViewShare | None = None,
    intrinsics: str = "auto",
) -> Scene:
    """Load a dataset folder into a training-ready `Scene`.

    Args:
        path: dataset folder (COLMAP, Blender, nerfstudio/instant-ngp, or a folder of photos), or a
            ``transforms.json`` file.
        downscale: integer image downscale factor (1, 2, 4, 8, ...). Uses ``images_N/`` folders
            when present, else area-resizes; cameras are scaled exactly to the resulting size.
        test_every: every `test_every`-th image (sorted by name, index % test_every == 0) is a test
            view, as 3DGS does with 8; 0 = no test views. Not used for Blender, which has explicit
            split files, or for nerfstudio files listing ``{split}_filenames``.
        background: RGB in [0, 1] that RGBA images are composited over (white, as 3DGS does for
            NeRF-synthetic); None keeps the stored RGB and ignores alpha.
        eval_split: Blender: which ``transforms_{eval_split}.json`` gives the test views ("test",
            falling back to "val" when absent; "val"; or "none"). nerfstudio: which
            ``{eval_split}_filenames`` list to use when the file has one.
        cache_dir: where undistorted images and SfM results go; default the per-user cache
            (``dataset_cache_dir``), never the dataset folder. ``False`` disables the undistortion cache.
        device: torch device to hold images and masks on (e.g. "cuda"); default CPU.
        num_random_points: size of the random initial point cloud for layouts without points
            (Blender, nerfstudio); 0 leaves ``points`` None.
        seed: seed for the random points.
        verbose: print progress and a summary.
        sfm: ``splatlab.data.photos.SfMOptions`` for folders of photos (default options if None).
        triangulate: nerfstudio/instant-ngp data without a point cloud: triangulate initial points
            from the known poses with pycolmap (``splatlab.data.triangulate``; seconds, cached).
            False (or ``num_random_points=0``): random points, or none.
        share: load the pixels of this process's share of the views only (data-parallel
            training); the other views come with their cameras and names (`View.loaded` False).
        intrinsics: COLMAP models: "auto" gives each photo its own focal length and distortion
            (bundle adjustment, cached) when photos from different cameras share one camera in
            the model (a photo collection); "per-photo" whenever a camera is shared; "as-given"
            never. See :mod:`splatlab.data.intrinsics`.
    """
    path = Path(path).expanduser()
    from .intrinsics import INTRINSICS_MODES

    if intrinsics not in INTRINSICS_MODES:
        raise ValueError(f"intrinsics must be one of {', '.join(INTRINSICS_MODES)}, got {intrinsics!r}")
    if isinstance(downscale, bool) or int(downscale) != downscale or downscale < 1:
        raise ValueError(f"downscale must be a positive integer (1, 2, 4, 8, ...), got {downscale!r}")
    if isinstance(test_every, bool) or int(test_every) != test_every or test_every < 0:
        raise ValueError(f"test_every must be an integer >= 0, got {test_every!r}")
    if background is not None:
        background = tuple(float(c) for c in background)
        if len(background) != 3 or not all(0.0 <= c <= 1.0 and math.isfinite(c) for c in background):
            raise ValueError(f"background must be three numbers in [0, 1] (RGB) or None, got {background!r}")
    kind, root = detect_layout(path)
    dataset_dir = root.parent if kind == "nerfstudio" else root
    if kind == "photos" and root.name == "images" and root != path:
        dataset_dir = path
    if cache_dir is False:
        cache_root = None
    elif cache_dir is None:
        cache_root = dataset_cache_dir(dataset_dir)
    else:
        cache_root = Path(cache_dir).expanduser()
    opts = LoadOptions(
        downscale=int(downscale),
        test_every=int(test_every),
        background=background,
        eval_split=str(eval_split),
        cache_root=cache_root,
        device=None if device is None else torch.device(device),
        num_random_points=int(num_random_points),
        seed=int(seed),
        verbose=bool(verbose),
        sfm=sfm,
        triangulate=bool(triangulate),
        share=share,
        intrinsics=str(intrinsics),
    )
    log(opts.verbose, f"{path}: detected a {kind} dataset")
    if kind == "blender":
        from .blender import load_blender

        return load_blender(root, opts)
    if kind == "nerfstudio":
        from .nerfstudio import load_nerfstudio

        return load_nerfstudio(root, opts)
    if kind == "colmap":
        from .colmap import load_colmap

        return load_colmap(root, opts)
    from .photos import load_photos

    if cache_root is None:  # SfM needs somewhere to put its result
        opts.cache_root = dataset_cache_dir(dataset_dir)
    return load_photos(root, opts, dataset_dir=dataset_dir, undistort_cache=cache_root is not None)


def peek_image_size(path) -> tuple[int, int]:
    """(width, height) of a dataset's full-size images, read from one file's header (no decoding).

    Used to choose a training resolution before loading anything."""
    path = Path(path).expanduser()
    kind, root = detect_layout(path)
    base = root.parent if kind == "nerfstudio" else root
    for folder in (base / "images", base / "train", base):
        if folder.is_dir():
            files = sorted(p for p in folder.rglob("*") if is_image_file(p) and "splatlab_cache" not in p.parts)
            if files:
                from .images import image_size

                return image_size(files[0])
    raise DatasetError(f"{path}: no image files found")

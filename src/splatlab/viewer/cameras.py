"""Cameras in the viewer: viser's camera <-> splatlab's Camera, and the training cameras.

viser (1.1.1: viser/_viser.py CameraHandle, client/src/CameraControls.tsx) reports each browser's
camera in the OpenCV convention (+z forward, +y down): `wxyz` is the rotation R_world_camera and
`position` the camera centre, so camera->world = [R | position]; `fov` is the vertical field of
view of a symmetric frustum over the canvas (three.js PerspectiveCamera), `image_width` x
`image_height` the canvas in device pixels. With square pixels that is a pinhole
with fy = fx = (H / 2) / tan(fov / 2) and the principal point at the canvas centre (three.js maps
NDC [-1, 1] to pixels [0, W]: continuous coordinates whose pixel centres sit at j + 0.5, as ours).

Orientation: when the training cameras are known, "up" is splatlab.geometry.up_from_cameras (the
mean of the cameras' up axes) and the first view starts at the first training camera (by name),
looking at the point the cameras look at (splatlab.camera_paths.look_at_point).
"""

from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..camera import Camera
from ..camera_paths import look_at_point
from ..geometry import rotmat_to_quat, up_from_cameras

THUMBNAIL_SIZE = 320  # longest side, pixels, of a training image shown in the GUI


@dataclass(frozen=True)
class ViewState:
    """One browser's camera as viser reports it (see the module docstring)."""

    position: tuple[float, float, float]  # camera centre, world
    wxyz: tuple[float, float, float, float]  # R_world_camera (OpenCV axes)
    fov: float  # vertical field of view, radians
    width: int  # canvas, device pixels
    height: int

    @staticmethod
    def of(camera) -> "ViewState":
        """From a viser CameraHandle."""
        return ViewState(tuple(float(v) for v in camera.position), tuple(float(v) for v in camera.wxyz),
                         float(camera.fov), int(camera.image_width), int(camera.image_height))

    def close_to(self, other: Optional["ViewState"], tol: float = 1e-7) -> bool:
        """Same pose, fov and canvas (viser re-sends unchanged cameras now and then)."""
        if other is None or (self.width, self.height) != (other.width, other.height):
            return False
        a = np.array([*self.position, *self.wxyz, self.fov])
        b = np.array([*other.position, *other.wxyz, other.fov])
        scale = max(1.0, float(np.abs(a[:3]).max()))
        return bool(np.abs(a - b).max() <= tol * scale)


def camera_from_view(view: ViewState, width: Optional[int] = None, height: Optional[int] = None) -> Camera:
    """The splatlab Camera that sees what the browser shows; optionally at another pixel size
    (same field of view and aspect: the canvas drawn at width x height)."""
    width = int(width or view.width)
    height = int(height or view.height)
    w, x, y, z = view.wxyz
    rot = _quat_to_rotmat_np(np.array([w, x, y, z], dtype=np.float64))  # [3, 3] R_world_camera
    viewmat = np.eye(4)
    viewmat[:3, :3] = rot.T
    viewmat[:3, 3] = -rot.T @ np.asarray(view.position, dtype=np.float64)
    fy = 0.5 * height / math.tan(0.5 * view.fov)
    return Camera(fy, fy, 0.5 * width, 0.5 * height, torch.from_numpy(viewmat), width, height, name="viewer")


def _quat_to_rotmat_np(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def viser_pose(camera: Camera) -> tuple[np.ndarray, np.ndarray, float]:
    """(wxyz [4], position [3], vertical fov) of a splatlab Camera, for viser's frustums and cameras."""
    c2w = camera.c2w.double()  # [4, 4]
    wxyz = rotmat_to_quat(c2w[:3, :3]).numpy()
    return wxyz, c2w[:3, 3].numpy().copy(), 2.0 * math.atan(0.5 * camera.height / camera.fy)


# ---- the training cameras ----------------------------------------------------------------------


@dataclass
class TrainingCameras:
    """The cameras a model was trained from, for orientation, the first view and the frustums."""

    names: list[str]
    cameras: list[Camera]  # OpenCV, at the size the run trained on
    thumbnails: list[bytes]  # JPEG, longest side <= THUMBNAIL_SIZE (~15 KB each: captures can be large)
    up: np.ndarray  # [3] unit vector, splatlab.geometry.up_from_cameras
    target: np.ndarray  # [3] the point the cameras look at
    background: Optional[tuple[float, float, float]]  # what the dataset's RGBA images were composited over
    source: Path  # the dataset folder

    def __len__(self) -> int:
        return len(self.cameras)

    def thumbnail(self, index: int) -> np.ndarray:
        """[h, w, 3] uint8: training image `index`, downscaled."""
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(self.thumbnails[index])).convert("RGB"))

    @property
    def spread(self) -> float:
        """Median distance of the cameras from their target (world units)."""
        d = [float(np.linalg.norm(c.position.double().numpy() - self.target)) for c in self.cameras]
        return max(float(np.median(d)), 1e-6)

    def start_pose(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(position, look-at point, vertical fov) of the first view: the first training camera."""
        first = self.cameras[0]
        position = first.position.double().numpy()
        target = self.target
        if np.linalg.norm(target - position) < 1e-6 * self.spread:
            target = position + first.c2w.double().numpy()[:3, 2]
        return position, target, 2.0 * math.atan(0.5 * first.height / first.fy)


def training_cameras(views: Sequence, source: Path, background=None) -> TrainingCameras:
    """From dataset Views (camera, image, name), sorted by name."""
    views = sorted(views, key=lambda v: v.name)
    if not views:
        raise ValueError(f"{source}: the dataset has no training views")
    cameras = [v.camera for v in views]
    up = up_from_cameras(torch.stack([c.c2w.double() for c in cameras])).numpy()
    return TrainingCameras(
        names=[v.name for v in views],
        cameras=cameras,
        thumbnails=[_thumbnail(v.image if v.loaded else _blank(v)) for v in views],
        up=up,
        target=look_at_point(cameras).numpy(),
        background=background,
        source=source,
    )


def _blank(view) -> torch.Tensor:
    """A grey stand-in [H', W', 3] (the view's aspect) for a view whose pixels another process holds."""
    scale = THUMBNAIL_SIZE / max(view.width, view.height)
    size = (max(1, round(view.height * scale)), max(1, round(view.width * scale)), 3)
    return torch.full(size, 128, dtype=torch.uint8)


def _thumbnail(image: torch.Tensor) -> bytes:
    from PIL import Image

    pil = Image.fromarray(image.cpu().numpy())  # [H, W, 3] uint8
    pil.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    pil.save(out, format="JPEG", quality=90)
    return out.getvalue()


def dataset_of_run(run: Optional[Path]) -> tuple[Optional[Path], dict]:
    """(dataset path, data options) a training run folder names in its config.json, else (None, {}).

    A relative dataset path is tried from the current folder (where `splatlab train` usually ran),
    then from the run folder's parent.
    """
    if run is None or not (run / "config.json").is_file():
        return None, {}
    try:
        data = json.loads((run / "config.json").read_text()).get("data", {}) or {}
    except (OSError, ValueError) as exc:
        warnings.warn(f"{run / 'config.json'}: cannot read the dataset of the run ({exc})", RuntimeWarning, stacklevel=2)
        return None, {}
    if not data.get("path"):
        return None, data
    path = Path(data["path"]).expanduser()
    if not path.is_absolute() and not path.exists() and (run.parent / path).exists():
        path = run.parent / path
    return path, data


def load_training_cameras(data: Path, options: Optional[dict] = None) -> TrainingCameras:
    """Load a dataset's training views as the run saw them (`options`: its config's "data" block).

    Never writes into the dataset: undistorted images and refined intrinsics come from the
    per-user cache the run filled (data/scene.py), so the viewer sees the cameras the run
    trained with without redoing that work; no random points.
    """
    from ..data import load_scene

    options = options or {}
    scene = load_scene(
        data,
        downscale=int(options.get("downscale", 1)),
        test_every=int(options.get("test_every", 8)),
        eval_split=str(options.get("eval_split", "test")),
        intrinsics=str(options.get("intrinsics", "auto")),
        num_random_points=0,
        verbose=False,
    )
    return training_cameras(scene.train, Path(data), scene.background)

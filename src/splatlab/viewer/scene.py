"""Scene pieces of the viewer that are not the splats: orientation and first view, and the points mode.

    Framing(server, cameras)   "up" (+z, another axis, or the training cameras' up) and the first view:
                               the first training camera looking at the cameras' target, or, without
                               cameras, a view from above one side framing the model
    PointsLayer(server)        the Gaussians' centres as points, coloured by their DC colour
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .cameras import TrainingCameras
from .convert import SplatArrays
from .gui import UP_FROM_CAMERAS

_POINTS_NODE = "/points"


def scene_bounds(centers: np.ndarray) -> tuple[np.ndarray, float]:
    """Robust centre and radius of a point set [N, 3]: the 2..98 percentile box, ignoring outliers."""
    if len(centers) == 0:
        return np.zeros(3), 1.0
    lo, hi = np.percentile(centers, [2.0, 98.0], axis=0)
    return ((lo + hi) / 2.0).astype(np.float64), max(float(np.linalg.norm(hi - lo) / 2.0), 1e-6)


def axis_vector(up: str) -> np.ndarray:
    """'+z' -> [0, 0, 1], '-y' -> [0, -1, 0], ..."""
    v = np.zeros(3)
    v[{"x": 0, "y": 1, "z": 2}[up[1]]] = 1.0 if up[0] == "+" else -1.0
    return v


def orbit_position(centre: np.ndarray, radius: float, up: np.ndarray) -> np.ndarray:
    """A camera position above one side of `centre` that frames a sphere of `radius`."""
    a = np.roll(np.abs(up), 1)
    a = a - np.dot(a, up) * up
    a /= max(np.linalg.norm(a), 1e-12)  # a direction orthogonal to up
    direction = a + np.cross(up, a) + 0.6 * up
    return centre + 1.9 * radius * direction / np.linalg.norm(direction)


class Framing:
    """The up direction and the first view, for new browsers and the "Reset view" button."""

    def __init__(self, server, cameras: Optional[TrainingCameras], up: str) -> None:
        self._server = server
        self._cameras = cameras
        self.up_name = up
        self.bounds: Optional[tuple[np.ndarray, float]] = None  # of the first non-empty model

    def up(self) -> np.ndarray:
        if self.up_name == UP_FROM_CAMERAS and self._cameras is not None:
            return np.asarray(self._cameras.up, dtype=np.float64)
        return axis_vector(self.up_name)

    def set_up(self, up: str) -> None:
        self.up_name = up
        self._server.scene.set_up_direction(tuple(float(v) for v in self.up()))
        self.apply()

    def set_model(self, arrays: SplatArrays) -> None:
        """Frame the first non-empty model (when no training cameras give the first view)."""
        if self.bounds is None and len(arrays):
            self.bounds = scene_bounds(arrays.centers / arrays.scale)
            self.apply()

    def first_view(self) -> Optional[tuple[np.ndarray, np.ndarray, Optional[float], float]]:
        """(position, look-at, vertical fov or None, scene radius) of the first view, if known."""
        if self._cameras is not None:
            position, target, fov = self._cameras.start_pose()
            return position, target, fov, self._cameras.spread
        if self.bounds is None:
            return None
        centre, radius = self.bounds
        return orbit_position(centre, radius, self.up()), centre, None, radius

    def apply(self, move_clients: bool = False) -> None:
        """Set viser's initial camera to the first view (and move connected browsers there)."""
        first = self.first_view()
        if first is None:
            return
        position, look_at, fov, radius = first
        up = self.up()
        cam = self._server.initial_camera
        cam.position, cam.look_at, cam.up = tuple(position), tuple(look_at), tuple(up)
        if fov is not None:
            cam.fov = fov
        cam.near = min(cam.near, radius * 5e-3)
        cam.far = max(cam.far, radius * 100.0)
        if move_clients:
            for client in self._server.get_clients().values():
                with client.atomic():
                    if fov is not None:
                        client.camera.fov = fov
                    client.camera.position = tuple(position)
                    client.camera.look_at = tuple(look_at)
                    client.camera.up_direction = tuple(up)


class PointsLayer:
    """The Gaussians' centres as a point cloud (one node shared by all browsers)."""

    def __init__(self, server) -> None:
        self._server = server
        self.handle = None
        self.size_factor = 1.0  # x 2 x the median Gaussian sigma

    def show(self, arrays: Optional[SplatArrays]) -> None:
        if arrays is None:
            return
        points = (arrays.centers / arrays.scale).astype(np.float32)
        colors = (arrays.rgbs * 255.0).round().astype(np.uint8)
        self.handle = self._server.scene.add_point_cloud(  # re-adding a name replaces the node
            _POINTS_NODE, points=points, colors=colors, point_size=self._size(arrays), precision="float32",
            point_shape="circle", point_shading="flat",
        )
        self._arrays = arrays

    def hide(self) -> None:
        if self.handle is not None:
            self.handle.visible = False

    def resize(self, factor: float) -> None:
        self.size_factor = float(factor)
        if self.handle is not None:
            self.handle.point_size = self._size(self._arrays)

    def _size(self, arrays: SplatArrays) -> float:
        sigma = arrays.sigma_median if arrays.sigma_median > 0 else 0.01
        return 2.0 * sigma * self.size_factor

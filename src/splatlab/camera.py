"""Pinhole cameras in the OpenCV convention.

Conventions (kept everywhere in splatlab):
- Camera space is OpenCV: +x right, +y down, +z forward (into the scene).
- `viewmat` is the world->camera 4x4 matrix: x_cam = R x_world + t.
- Pixel (j, i) (column j, row i) has its centre at (j + 0.5, i + 0.5); a camera-space point
  (x, y, z) lands at u = fx * x / z + cx, v = fy * y / z + cy in those continuous coordinates.
- Blender / NeRF `transform_matrix` is camera->world in the OpenGL convention (+y up, +z
  backward); converting flips the camera's y and z axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

# Flips the camera's y and z axes: OpenGL camera frame <-> OpenCV camera frame.
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


@dataclass
class Camera:
    """A pinhole camera: intrinsics, world->camera transform (OpenCV) and image size."""

    fx: float
    fy: float
    cx: float
    cy: float
    viewmat: torch.Tensor  # [4, 4] world->camera, OpenCV convention
    width: int
    height: int
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self.fx, self.fy, self.cx, self.cy = (float(v) for v in (self.fx, self.fy, self.cx, self.cy))
        if not isinstance(self.viewmat, torch.Tensor):
            self.viewmat = torch.as_tensor(self.viewmat)
        if not self.viewmat.is_floating_point():
            self.viewmat = self.viewmat.double()
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the problem if the camera cannot be rendered from."""
        who = f"camera {self.name!r}" if self.name else "camera"
        for key in ("fx", "fy"):
            value = getattr(self, key)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{who}: focal length {key} must be a positive finite number, got {value}")
        for key in ("cx", "cy"):
            if not math.isfinite(getattr(self, key)):
                raise ValueError(f"{who}: principal point {key} must be finite, got {getattr(self, key)}")
        for key in ("width", "height"):
            value = getattr(self, key)
            if isinstance(value, bool) or int(value) != value or value <= 0:
                raise ValueError(f"{who}: image {key} must be a positive integer, got {value!r}")
            setattr(self, key, int(value))
        if tuple(self.viewmat.shape) != (4, 4):
            raise ValueError(f"{who}: viewmat must be a 4x4 world->camera matrix, got shape {tuple(self.viewmat.shape)}")
        if not torch.isfinite(self.viewmat).all():
            raise ValueError(f"{who}: viewmat contains NaN or Inf")
        last = self.viewmat[3].detach().double().cpu()
        if not torch.allclose(last, torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-6):
            raise ValueError(f"{who}: viewmat's last row must be [0, 0, 0, 1], got {last.tolist()}")

    # ---- constructors -------------------------------------------------------------------

    @classmethod
    def from_opengl_c2w(
        cls, c2w, fx: float, fy: float, cx: float, cy: float, width: int, height: int, name: str = ""
    ) -> "Camera":
        """From a camera->world matrix in the OpenGL/Blender convention (+y up, +z backward)."""
        c2w = torch.as_tensor(c2w, dtype=torch.float64)
        if c2w.shape == (3, 4):
            c2w = torch.cat([c2w, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
        if c2w.shape != (4, 4):
            raise ValueError(f"camera {name!r}: camera->world matrix must be 3x4 or 4x4, got {tuple(c2w.shape)}")
        c2w_cv = c2w @ _GL_TO_CV  # flip the camera's own y and z axes
        return cls(fx, fy, cx, cy, torch.linalg.inv(c2w_cv), width, height, name)

    @classmethod
    def from_blender(cls, c2w, fov_x: float, width: int, height: int, name: str = "") -> "Camera":
        """From a NeRF-synthetic frame: OpenGL camera->world and horizontal field of view (radians).

        Square pixels, principal point at the image centre, as the Blender datasets define them.
        """
        if not (0 < fov_x < math.pi):
            raise ValueError(f"camera {name!r}: horizontal field of view must be in (0, pi) radians, got {fov_x}")
        focal = 0.5 * width / math.tan(0.5 * fov_x)
        return cls.from_opengl_c2w(c2w, focal, focal, 0.5 * width, 0.5 * height, width, height, name)

    @classmethod
    def look_at(
        cls,
        eye,
        target,
        up=(0.0, 0.0, 1.0),
        *,
        fov_x: float = math.radians(60),
        width: int = 256,
        height: int = 256,
        name: str = "",
    ) -> "Camera":
        """A camera at `eye` looking at `target`, with `up` pointing up in the image."""
        eye, target, up = (torch.as_tensor(v, dtype=torch.float64) for v in (eye, target, up))
        forward = target - eye
        forward = forward / forward.norm()
        right = torch.linalg.cross(forward, up)
        if right.norm() < 1e-9:
            raise ValueError("look_at: `up` is parallel to the viewing direction")
        right = right / right.norm()
        down = torch.linalg.cross(forward, right)  # +y points down in OpenCV
        rot = torch.stack([right, down, forward])  # [3, 3] world->camera rotation
        viewmat = torch.eye(4, dtype=torch.float64)
        viewmat[:3, :3] = rot
        viewmat[:3, 3] = -rot @ eye
        focal = 0.5 * width / math.tan(0.5 * fov_x)
        return cls(focal, focal, 0.5 * width, 0.5 * height, viewmat, width, height, name)

    # ---- derived quantities -------------------------------------------------------------

    @property
    def K(self) -> torch.Tensor:
        """[3, 3] intrinsic matrix."""
        return torch.tensor(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=self.viewmat.dtype
        )

    @property
    def c2w(self) -> torch.Tensor:
        """[4, 4] camera->world matrix, OpenCV convention."""
        return torch.linalg.inv(self.viewmat)

    @property
    def position(self) -> torch.Tensor:
        """[3] camera centre in world coordinates."""
        rot, t = self.viewmat[:3, :3], self.viewmat[:3, 3]
        return -rot.T @ t

    def to_opengl_c2w(self) -> torch.Tensor:
        """[4, 4] camera->world matrix in the OpenGL/Blender convention."""
        return self.c2w.double() @ _GL_TO_CV.to(self.viewmat.device)

    def to(self, device=None, dtype=None) -> "Camera":
        return Camera(
            self.fx, self.fy, self.cx, self.cy, self.viewmat.to(device=device, dtype=dtype),
            self.width, self.height, self.name,
        )

    def scaled(self, factor: float) -> "Camera":
        """The same camera for an image resized by `factor` (0.5 = half the width and height).

        Pixel-centre convention makes this exact: u' = factor * u for continuous coordinates.
        """
        width, height = max(1, round(self.width * factor)), max(1, round(self.height * factor))
        sx, sy = width / self.width, height / self.height
        return Camera(
            self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, self.viewmat, width, height, self.name
        )

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """[N, 3] world points -> [N, 3] (u, v, z): pixel coordinates and camera-space depth."""
        viewmat = self.viewmat.to(points)
        cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]  # [N, 3]
        z = cam[:, 2]
        return torch.stack([self.fx * cam[:, 0] / z + self.cx, self.fy * cam[:, 1] / z + self.cy, z], dim=-1)

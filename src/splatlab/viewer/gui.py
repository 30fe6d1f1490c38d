"""The viewer's GUI panel (viser) and the training cameras drawn as frustums.

    build_gui(server, ...) -> ViewerGui     the handles of the "Display" panel (callbacks: server.py)
    CameraPanel(server, cameras)            frustums + "Training cameras" folder: click one to see
                                            its image, "Go to camera" moves the view there
    info_markdown(...)                      the status text at the top of the panel
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .cameras import TrainingCameras, viser_pose

UP_DIRECTIONS = ("+z", "+y", "-y", "-z", "+x", "-x")
UP_FROM_CAMERAS = "cameras"
RENDERERS = ("Splats", "Splats, exact when still")
_FRUSTUM_COLOR = (90, 110, 140)
_SELECTED_COLOR = (255, 150, 30)


@dataclass
class ViewerGui:
    """Handles of the viewer's GUI elements (viser GuiHandles)."""

    info: Any  # markdown: Gaussians, step, metrics, status
    renderer: Any  # dropdown of RENDERERS
    view_dependent: Any  # checkbox: SH colour for the camera, or the DC colour only
    background: Any  # rgb picker
    points: Any  # checkbox: draw centres as points
    point_size: Any  # slider, visible in points mode
    up: Any  # dropdown: UP_DIRECTIONS (+ "cameras")
    frame: Any  # button: back to the first view


def build_gui(
    server, *, up: str, up_choices: Sequence[str], background: tuple[float, float, float],
    still_render: bool, view_dependent: bool,
) -> ViewerGui:
    gui = server.gui
    info = gui.add_markdown("*waiting for a model*")
    with gui.add_folder("Display"):
        renderer = gui.add_dropdown(
            "Renderer", RENDERERS, initial_value=RENDERERS[1] if still_render else RENDERERS[0],
            hint="Splats: the browser draws the Gaussians (fast). Exact when still: once the camera "
                 "rests, splatlab's own renderer draws the view (what `splatlab render` gives).",
        )
        view_dep = gui.add_checkbox(
            "View-dependent colour", view_dependent,
            hint="Evaluate the spherical harmonics for the camera position (off: the DC colour only)",
        )
        bg = gui.add_rgb("Background", tuple(int(round(255 * c)) for c in background))
        points = gui.add_checkbox("Show as points", False,
                                  hint="Draw each Gaussian as a point at its centre instead of a splat")
        point_size = gui.add_slider(
            "Point size", min=0.1, max=5.0, step=0.1, initial_value=1.0,
            hint="Point diameter, as a multiple of 2x the median Gaussian size", visible=False,
        )
        up_dd = gui.add_dropdown(
            "Up direction", tuple(up_choices), initial_value=up,
            hint="World direction that points up ('cameras': the mean up axis of the training cameras)",
        )
        frame = gui.add_button("Reset view", hint="Back to the first view of the model")
    with gui.add_folder("Controls", expand_by_default=False):
        gui.add_markdown(
            "Orbit: left-drag. Pan: right-drag. Zoom: wheel.  \n"
            "Fly: **W A S D** move, **Q E** down/up, **arrow keys** turn."
        )
    return ViewerGui(info, renderer, view_dep, bg, points, point_size, up_dd, frame)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def info_markdown(
    total: Optional[int], shown: int, dropped: int, step: Optional[int], total_steps: Optional[int],
    stats: Mapping[str, Any], status: str,
) -> str:
    lines = []
    if total is not None:
        line = f"**Gaussians:** {total:,}"
        if shown < total - dropped:
            line += f" (showing {shown:,})"
        lines.append(line)
        if dropped:
            lines.append(f"**Non-finite, hidden:** {dropped:,}")
    else:
        lines.append("*waiting for a model*")
    if step is not None:
        lines.append(f"**Step:** {step:,}" + (f" / {total_steps:,}" if total_steps else ""))
    for key, value in stats.items():
        if key == "Gaussians" and total is not None:
            continue
        lines.append(f"**{key}:** {_format_value(value)}")
    if status:
        lines.append(f"*{status}*")
    return "  \n".join(lines)


class CameraPanel:
    """The training cameras as clickable frustums, and a GUI folder showing the clicked one's image."""

    def __init__(self, server, cameras: TrainingCameras) -> None:
        self._server = server
        self._cameras = cameras
        self._lock = threading.Lock()
        self.selected: Optional[int] = None
        gui = server.gui
        with gui.add_folder("Training cameras"):
            self.show = gui.add_checkbox("Show cameras", True, hint="Draw the training cameras as frustums")
            self.label = gui.add_markdown(f"{len(cameras)} cameras from `{cameras.source}`; click one to see its image.")
            blank = np.zeros((8, 8, 3), dtype=np.uint8)
            self.image = gui.add_image(blank, label=None, format="jpeg", jpeg_quality=85, visible=False)
            self.goto = gui.add_button("Go to camera", visible=False,
                                       hint="Move the view to the selected training camera's pose and field of view")
        size = 0.05 * cameras.spread  # frustum depth: small next to the distance to the scene
        self.frustums = []
        for i, cam in enumerate(cameras.cameras):
            wxyz, position, fov = viser_pose(cam)
            handle = server.scene.add_camera_frustum(
                f"/training_cameras/{i:05d}", fov=fov, aspect=cam.width / cam.height, scale=size,
                thickness=1.5, thickness_units="screen", color=_FRUSTUM_COLOR, wxyz=wxyz, position=position,
                cast_shadow=False, receive_shadow=False,
            )
            handle.on_click(lambda event, i=i: self.select(i))
            self.frustums.append(handle)

        @self.show.on_update
        def _(_event) -> None:
            for handle in self.frustums:
                handle.visible = bool(self.show.value)

        @self.goto.on_click
        def _(event) -> None:
            if self.selected is not None and event.client is not None:
                self.go_to(event.client, self.selected)

    @property
    def visible(self) -> bool:
        return bool(self.show.value)

    def select(self, index: int) -> None:
        """Show camera `index`'s image and name in the panel, and highlight its frustum."""
        with self._lock:
            if self.selected is not None and self.selected != index:
                self.frustums[self.selected].color = _FRUSTUM_COLOR
            self.selected = index
            self.frustums[index].color = _SELECTED_COLOR
            cam = self._cameras.cameras[index]
            self.label.content = f"**{self._cameras.names[index]}** ({cam.width}x{cam.height}, camera {index + 1} of {len(self._cameras)})"
            self.image.image = self._cameras.thumbnail(index)
            self.image.visible = True
            self.goto.visible = True

    def go_to(self, client, index: int) -> None:
        """Put `client`'s view at training camera `index` (pose and vertical field of view)."""
        cam = self._cameras.cameras[index]
        wxyz, position, fov = viser_pose(cam)
        c2w = cam.c2w.double().numpy()
        depth = float(np.dot(self._cameras.target - position, c2w[:3, 2]))
        look_at = position + c2w[:3, 2] * (depth if depth > 1e-6 else self._cameras.spread)
        with client.atomic():
            client.camera.fov = fov
            client.camera.position = position
            client.camera.look_at = look_at
            client.camera.up_direction = -c2w[:3, 1]

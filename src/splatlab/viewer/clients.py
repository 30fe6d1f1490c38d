"""One browser tab of the viewer: its own splats node, coloured for its own camera.

View-dependent colour depends on where the camera is, so each connected browser gets its own
splats node (viser's per-client scene, `client.scene`) and its own background image. The
viewer thread (server.py) decides when to act; this class only does what it is told and keeps
the bookkeeping:

    version / changed_at   bumped by each camera message that changed the view
    colors_key             (model generation, SH degree, camera position) the colours were made for
    still_key              (camera version, generation) of the exact render on screen; None while
                           the splats are shown
"""

from __future__ import annotations

import math
import threading
from typing import Optional

import numpy as np

from .cameras import ViewState
from .convert import SplatArrays

_SPLATS_NODE = "/splats"


class ClientView:
    """What the viewer knows and shows for one connected browser."""

    def __init__(self, client) -> None:
        self.client = client
        self.id: int = client.client_id
        self.lock = threading.Lock()  # viser handles: viewer thread vs GUI callbacks
        self.view: Optional[ViewState] = None  # latest camera
        self.version = 0
        self.changed_at = -math.inf  # time.monotonic() of the last camera change
        self.splats = None  # viser GaussianSplatHandle in this client's scene
        self.colors_key: Optional[tuple] = None
        self.colors_at = -math.inf
        self.still_key: Optional[tuple[int, int]] = None
        self.still_failed: Optional[tuple[int, int]] = None  # a key whose render raised: not retried
        self.background_rgb: Optional[tuple[int, int, int]] = None  # solid background shown, if any

    def on_camera(self, view: ViewState, now: float) -> bool:
        """Record a camera message; True when the view changed."""
        if view.close_to(self.view):
            return False
        self.view = view
        self.version += 1
        self.changed_at = now
        return True

    @property
    def showing_still(self) -> bool:
        return self.still_key is not None

    # ---- scene updates (viewer thread) ---------------------------------------------------

    def set_model(self, arrays: SplatArrays, rgbs: np.ndarray, colors_key: tuple, visible: bool) -> None:
        """Replace this client's splats (centres, covariances, colours, opacities) in one message."""
        with self.lock, self.client.atomic():
            if self.splats is None:
                self.splats = self.client.scene.add_gaussian_splats(
                    _SPLATS_NODE, centers=arrays.centers, covariances=arrays.covariances, rgbs=rgbs,
                    opacities=arrays.opacities, scale=1.0 / arrays.scale, visible=visible,
                )
            else:
                self.splats.set_gaussians(arrays.centers, arrays.covariances, rgbs, arrays.opacities)
                if self.splats.scale != 1.0 / arrays.scale:
                    self.splats.scale = 1.0 / arrays.scale
        self.colors_key = colors_key

    def set_colors(self, rgbs: np.ndarray, colors_key: tuple, now: float) -> None:
        """New colours for the same Gaussians (viser re-sends the 32-byte records)."""
        with self.lock:
            if self.splats is not None:
                self.splats.rgbs = rgbs
        self.colors_key = colors_key
        self.colors_at = now

    def set_splats_visible(self, visible: bool) -> None:
        with self.lock:
            if self.splats is not None and self.splats.visible != visible:
                self.splats.visible = visible

    def show_background(self, rgb: tuple[int, int, int]) -> None:
        """A solid background colour behind the splats (a lossless 4x4 image, stretched by the client)."""
        if self.background_rgb == rgb and not self.showing_still:
            return
        tile = np.empty((4, 4, 3), dtype=np.uint8)
        tile[:] = rgb
        with self.lock:
            self.client.scene.set_background_image(tile, format="png")
        self.background_rgb = rgb

    def show_splats(self, rgb: tuple[int, int, int], splats_visible: bool) -> None:
        """Leave the exact image: solid background, splats back on."""
        with self.client.atomic():
            self.still_key = None
            self.show_background(rgb)
            self.set_splats_visible(splats_visible)

    def show_still(self, image: np.ndarray, depth: Optional[np.ndarray], key: tuple[int, int]) -> None:
        """Show an exact render [H, W, 3] uint8 (with its depth [H, W] for compositing the frustums)
        as the background and hide the splats."""
        with self.lock, self.client.atomic():
            self.client.scene.set_background_image(image, format="jpeg", jpeg_quality=95, depth=depth)
            if self.splats is not None:
                self.splats.visible = False
        self.still_key = key
        self.background_rgb = None

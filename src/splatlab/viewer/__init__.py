"""Web viewer: `splatlab view MODEL` and a live view of a training run, built on viser.

    Viewer(gaussians=None, host="127.0.0.1", port=8080, cameras=None, ...)   a viser server
    Viewer.update(gaussians, step=None, stats=None)      replace the model (throttled, non-blocking)
    Viewer.attach(run)                                   follow a training run's events
    view_model(path, port, data=None, ...)               load a model (any format) and serve it
    load_training_cameras(data) -> TrainingCameras       "up", first view and frustums of a dataset
    splat_arrays(gaussians) / view_rgbs(arrays, campos)  our parameters -> viser's splat arrays

The browser draws the splats with colours evaluated for its camera (re-pushed as it moves);
when the camera rests, splatlab's own renderer draws the exact view (server.py says why both).
viser (pip install 'viser>=1.1,<2') is imported only when a Viewer is created.
"""

from .cameras import TrainingCameras, ViewState, camera_from_view, load_training_cameras, training_cameras
from .convert import DEFAULT_MAX_GAUSSIANS, SplatArrays, float16_scale_for, splat_arrays, view_rgbs
from .server import Viewer, view_model

__all__ = [
    "DEFAULT_MAX_GAUSSIANS",
    "SplatArrays",
    "TrainingCameras",
    "ViewState",
    "Viewer",
    "camera_from_view",
    "float16_scale_for",
    "load_training_cameras",
    "splat_arrays",
    "training_cameras",
    "view_model",
    "view_rgbs",
]

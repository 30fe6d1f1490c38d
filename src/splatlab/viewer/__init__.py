"""Web viewer: `splatlab view MODEL` and a live view of a training run, built on viser.

    Viewer(gaussians=None, host="127.0.0.1", port=8080)   a viser server showing the splats
    Viewer.update(gaussians, step=None, stats=None)      replace them (throttled, non-blocking)
    Viewer.attach(trainer)                               follow a Trainer's events
    view_model(path, port, open_browser=False)           load an Inria .ply and serve until Ctrl-C
    splat_arrays(gaussians)                              our raw parameters -> viser's splat arrays

viser (pip install 'viser>=1.1,<2') is imported only when a Viewer is created. See server.py for
the conversion, the wire format (32 bytes per Gaussian), large-model subsampling and the camera
controls (orbit with the mouse; fly with W/A/S/D, Q/E and the arrow keys).
"""

from .server import DEFAULT_MAX_GAUSSIANS, SplatArrays, Viewer, float16_scale_for, splat_arrays, view_model

__all__ = ["DEFAULT_MAX_GAUSSIANS", "SplatArrays", "Viewer", "float16_scale_for", "splat_arrays", "view_model"]

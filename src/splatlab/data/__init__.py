"""splatlab.data: from a dataset folder to a training-ready `Scene`.

    from splatlab.data import load_scene
    scene = load_scene("path/to/dataset", downscale=2)
    for view in scene.train:
        view.camera, view.image_float(), view.mask

Layouts: COLMAP, Blender (NeRF-synthetic), nerfstudio / instant-ngp ``transforms.json``, and plain
folders of photos (structure-from-motion with pycolmap). See :mod:`splatlab.data.scene` for the
detection rules and the per-user cache (never inside the dataset).
"""

from .images import DatasetError, DatasetWarning
from .photos import SfMOptions
from .scene import Scene, View, detect_layout, load_scene

__all__ = ["DatasetError", "DatasetWarning", "Scene", "SfMOptions", "View", "detect_layout", "load_scene"]

"""splatlab: 3D Gaussian Splatting in Python — readable reference, fast CPU kernels, no CUDA build."""

from .camera import Camera
from .gaussians import Gaussians
from .render import RenderOutput, RenderSettings, rasterize

__version__ = "0.1.0"
__all__ = ["Camera", "Gaussians", "RenderOutput", "RenderSettings", "rasterize", "__version__"]

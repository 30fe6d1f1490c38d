"""splatlab: 3D Gaussian Splatting in Python — readable reference, fast CPU kernels, no CUDA build."""

import os

# Two thread pools share the cores on CPU: PyTorch's OpenMP pool and the Numba kernels' pool.
# By default OpenMP workers spin after every parallel region, stealing the cores the other pool
# needs: measured on 2 cores (torch at 2 threads), the fused SSIM forward+backward at 256² took
# 192 ms instead of 44, and an L1 loss after it 88 ms instead of 0.6. The policy is read once,
# when torch loads its OpenMP runtime, so it is set here, before torch is imported (a program
# that imports torch first can set OMP_WAIT_POLICY=PASSIVE itself); a user's choice is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .camera import Camera
from .gaussians import Gaussians
from .render import RenderOutput, RenderSettings, rasterize

__version__ = "0.1.0"
__all__ = ["Camera", "Gaussians", "RenderOutput", "RenderSettings", "rasterize", "__version__"]

"""Image files written by splatlab (renders, comparisons, figures): uint8 conversion, atomic PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[H, W, C] float in [0, 1] (clamped) -> uint8 array, rounded to nearest."""
    return (image.detach().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)


def save_png(path: Path, image: torch.Tensor | np.ndarray) -> Path:
    """Write a float image in [0, 1] (tensor) or a uint8 array as PNG, atomically."""
    from PIL import Image

    pixels = image if isinstance(image, np.ndarray) else to_uint8(image)
    with atomic_write(path) as f:
        Image.fromarray(pixels).save(f, format="PNG")
    return Path(path)

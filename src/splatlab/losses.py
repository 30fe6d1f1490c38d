"""Photometric losses: L1, SSIM with an 11x11 Gaussian window, and the 3DGS mix."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .constants import SSIM_C1, SSIM_C2, SSIM_LAMBDA, SSIM_SIGMA, SSIM_WINDOW


@functools.lru_cache(maxsize=8)
def _gaussian_1d(size: int, sigma: float, dtype: torch.dtype, device: str) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)  # [size]


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of every channel of x [B, C, H, W], zero padding ('same' size).

    The 2D Gaussian window is separable, so two 1D passes (2k multiplies per pixel instead of
    k^2) give the same result as the 11x11 convolution.
    """
    c, k = x.shape[1], window.numel()
    x = F.conv2d(x, window.view(1, 1, k, 1).expand(c, 1, k, 1), padding=(k // 2, 0), groups=c)
    return F.conv2d(x, window.view(1, 1, 1, k).expand(c, 1, 1, k), padding=(0, k // 2), groups=c)


def ssim(img1: torch.Tensor, img2: torch.Tensor, window_size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Mean SSIM of two images [H, W, C] (or batches [B, H, W, C]) with values in [0, 1].

    Gaussian-weighted local statistics (11x11, sigma 1.5), zero-padded as the 3DGS code does.
    """
    return ssim_map(img1, img2, window_size, sigma).mean()


def ssim_map(img1: torch.Tensor, img2: torch.Tensor, window_size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Per-pixel, per-channel SSIM [B, C, H, W] of two images [H, W, C] or [B, H, W, C].

    CPU float32 images (the training case) go to the fused Numba kernel (render/cpu/ssim.py),
    which is tested against _ssim_map_torch, its readable twin, forward and backward; it
    passes gradients to img1 only, so it is used when img2 does not require a gradient.
    """
    if img1.shape != img2.shape:
        raise ValueError(f"ssim: image shapes differ: {list(img1.shape)} vs {list(img2.shape)}")
    x = img1 if img1.dim() == 4 else img1.unsqueeze(0)
    y = img2 if img2.dim() == 4 else img2.unsqueeze(0)
    x, y = x.permute(0, 3, 1, 2), y.permute(0, 3, 1, 2)  # [B, C, H, W]
    if _fused_ssim_applies(x, y):
        from .render.cpu.ssim import fused_ssim_map

        window = _gaussian_1d(window_size, sigma, x.dtype, str(x.device))
        return fused_ssim_map(x, y, window, SSIM_C1, SSIM_C2)
    return _ssim_map_torch(x, y, window_size, sigma)


def _fused_ssim_applies(x: torch.Tensor, y: torch.Tensor) -> bool:
    if not (x.device.type == "cpu" and x.dtype == torch.float32 and y.dtype == torch.float32):
        return False
    if y.requires_grad or x.numel() == 0:
        return False
    try:
        import numba  # noqa: F401  (the cpu backend's dependency)
    except ImportError:
        return False
    return True


def _ssim_map_torch(x: torch.Tensor, y: torch.Tensor, window_size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """SSIM map [B, C, H, W] of x, y [B, C, H, W] in plain PyTorch (autograd): the readable twin."""
    window = _gaussian_1d(window_size, sigma, x.dtype, str(x.device))
    # All five local statistics in one blur call: [B, 5C, H, W].
    stats = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), window)
    mu_x, mu_y, exx, eyy, exy = stats.chunk(5, dim=1)
    sxx, syy, sxy = exx - mu_x * mu_x, eyy - mu_y * mu_y, exy - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * sxy + SSIM_C2)
    den = (mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (sxx + syy + SSIM_C2)
    return num / den


def l1(img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
    return (img1 - img2).abs().mean()


def photometric_loss(render: torch.Tensor, target: torch.Tensor, ssim_lambda: float = SSIM_LAMBDA) -> torch.Tensor:
    """(1 - lambda) L1 + lambda (1 - SSIM), the 3DGS training loss. Images [H, W, 3]."""
    return (1.0 - ssim_lambda) * l1(render, target) + ssim_lambda * (1.0 - ssim(render, target))

"""Image-quality metrics for evaluation: PSNR, SSIM, and LPIPS when its weights are local."""

from __future__ import annotations

import math

import torch

from .losses import ssim


def psnr(img1: torch.Tensor, img2: torch.Tensor) -> float:
    """PSNR in dB of images with values in [0, 1]."""
    mse = torch.mean((img1.double() - img2.double()) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def ssim_metric(img1: torch.Tensor, img2: torch.Tensor) -> float:
    return float(ssim(img1.clamp(0, 1), img2.clamp(0, 1)).item())


class LPIPS:
    """LPIPS (VGG) if the `lpips` package and its weights are installed locally.

    Weights are never downloaded at run time: when anything is missing, `available` is False
    and `reason` says what, and evaluation reports LPIPS as unavailable.
    """

    def __init__(self) -> None:
        self.model = None
        self.reason = ""
        try:
            import lpips  # type: ignore
        except Exception as exc:  # noqa: BLE001 - any import failure means unavailable
            self.reason = f"the lpips package is not importable ({type(exc).__name__}: {exc})"
            return
        from pathlib import Path

        # The VGG backbone comes from torchvision's hub cache; constructing LPIPS without it
        # would try to download it, so look for the file first.
        backbone = Path(torch.hub.get_dir()) / "checkpoints" / "vgg16-397923af.pth"
        if not backbone.exists():
            self.reason = f"VGG16 weights for LPIPS are not in the local cache ({backbone})"
            return
        try:
            self.model = lpips.LPIPS(net="vgg", verbose=False).eval()
        except Exception as exc:  # noqa: BLE001
            self.reason = f"LPIPS could not be loaded from local files ({type(exc).__name__}: {exc})"

    @property
    def available(self) -> bool:
        return self.model is not None

    @torch.no_grad()
    def __call__(self, img1: torch.Tensor, img2: torch.Tensor) -> float:
        x = img1.permute(2, 0, 1)[None].float() * 2 - 1
        y = img2.permute(2, 0, 1)[None].float() * 2 - 1
        return float(self.model(x, y).item())

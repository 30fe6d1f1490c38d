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


def evaluate_views(gaussians, views, settings, lpips: "LPIPS | None" = None, device=None, on_image=None) -> dict:
    """Render every view and compare with its image: PSNR / SSIM (/ LPIPS when available).

    Returns {"psnr", "ssim"[, "lpips"], "per_image": [{"name", "psnr", "ssim"[, "lpips"]}, ...]}
    (means omitted when there are no views). `on_image(i, view, render)` sees each render
    [H, W, 3] in [0, 1], e.g. to save it.
    """
    from .render import rasterize

    per_image = []
    for i, view in enumerate(views):
        camera = view.camera if device is None else view.camera.to(device)
        with torch.no_grad():
            image = rasterize(gaussians, camera, settings).image.clamp(0, 1)
        gt = view.image_float(device)
        row = {"name": view.name, "psnr": psnr(image, gt), "ssim": ssim_metric(image, gt)}
        if lpips is not None and lpips.available:
            row["lpips"] = lpips(image.cpu(), gt.cpu())
        per_image.append(row)
        if on_image is not None:
            on_image(i, view, image)
    result: dict = {}
    for key in ("psnr", "ssim", "lpips"):
        if per_image and key in per_image[0]:
            result[key] = sum(r[key] for r in per_image) / len(per_image)
    result["per_image"] = per_image
    return result


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

"""Image-quality metrics for evaluation: PSNR, SSIM, and LPIPS when its weights are local."""

from __future__ import annotations

import math

import torch

from .losses import ssim, ssim_map


def psnr(img1: torch.Tensor, img2: torch.Tensor) -> float:
    """PSNR in dB of images with values in [0, 1]."""
    mse = torch.mean((img1.double() - img2.double()) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def psnr_masked(img1: torch.Tensor, img2: torch.Tensor, mask: torch.Tensor | None) -> float:
    """PSNR over the pixels where mask [H, W] is True (all pixels when mask is None)."""
    if mask is None:
        return psnr(img1, img2)
    m = mask.to(img1.device).bool()
    count = int(m.sum()) * img1.shape[-1]
    if count == 0:
        return float("nan")
    mse = float(((img1.double() - img2.double()) ** 2)[m].sum()) / count
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def ssim_metric(img1: torch.Tensor, img2: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean SSIM, over the pixels where mask [H, W] is True when a mask is given."""
    if mask is None:
        return float(ssim(img1.clamp(0, 1), img2.clamp(0, 1)).item())
    values = ssim_map(img1.clamp(0, 1), img2.clamp(0, 1))[0].mean(0)  # [H, W]
    m = mask.to(values.device).bool()
    return float(values[m].mean()) if m.any() else float("nan")


def fit_affine_colour(render: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[4, 3] least-squares affine colour map M with [rgb, 1] @ M ~ target, over the pixels
    where mask [H, W] is True. Images [H, W, 3]."""
    x = torch.cat([render.double().reshape(-1, 3), render.new_ones(render.shape[0] * render.shape[1], 1).double()], 1)
    y = target.double().reshape(-1, 3)
    if mask is not None:
        keep = mask.reshape(-1).to(x.device).bool()
        x, y = x[keep], y[keep]
    if len(x) < 8:
        return torch.cat([torch.eye(3), torch.zeros(1, 3)]).double()
    ridge = 1e-6 * torch.eye(4, dtype=torch.float64)  # a flat region must not make it singular
    return torch.linalg.solve(x.T @ x + ridge, x.T @ y)


def apply_affine_colour(image: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """[H, W, 3] float64: `image` [H, W, 3] through the map m [4, 3] of fit_affine_colour."""
    flat = image.double().reshape(-1, 3)
    return (torch.cat([flat, flat.new_ones(len(flat), 1)], 1) @ m).reshape(image.shape)


def psnr_exposure_fitted(render: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """The 3DGS protocol for models trained with exposure compensation: fit an affine colour
    transform on the left half of the image, apply it, and measure PSNR on the right half."""
    w = render.shape[1]
    half = w // 2
    left_mask = None if mask is None else mask[:, :half]
    m = fit_affine_colour(render[:, :half], target[:, :half], left_mask)
    mapped = apply_affine_colour(render[:, half:], m)
    return psnr_masked(mapped.clamp(0, 1), target[:, half:], None if mask is None else mask[:, half:])


def evaluate_views(gaussians, views, settings, lpips: "LPIPS | None" = None, device=None, on_image=None) -> dict:
    """Render every view and compare with its image: PSNR / SSIM (/ LPIPS when available).

    A view with a mask is measured over its masked pixels (the ones training counts). Also
    reports "psnr_exposure": PSNR on the right half after an affine colour fit on the left
    half (psnr_exposure_fitted). Returns {"psnr", "ssim", "psnr_exposure"[, "lpips"],
    "pixels", "per_image": [...]} (means omitted when there are no views). `on_image(i, view,
    render)` sees each render [H, W, 3] in [0, 1], e.g. to save it.
    """
    from .render import rasterize

    per_image = []
    for i, view in enumerate(views):
        camera = view.camera if device is None else view.camera.to(device)
        with torch.no_grad():
            image = rasterize(gaussians, camera, settings).image.clamp(0, 1)
        gt = view.image_float(device)
        mask = view.mask
        row = {"name": view.name, "psnr": psnr_masked(image, gt, mask), "ssim": ssim_metric(image, gt, mask),
               "psnr_exposure": psnr_exposure_fitted(image, gt, mask)}
        if lpips is not None and lpips.available and mask is None:
            row["lpips"] = lpips(image.cpu(), gt.cpu())
        per_image.append(row)
        if on_image is not None:
            on_image(i, view, image)
    result: dict = {}
    for key in ("psnr", "ssim", "psnr_exposure", "lpips"):
        if per_image and key in per_image[0]:
            result[key] = sum(r[key] for r in per_image) / len(per_image)
    result["pixels"] = pixels_counted(views)
    result["per_image"] = per_image
    return result


def pixels_counted(views) -> str:
    """Which pixels an evaluation of `views` counts, in words."""
    masked = sum(v.has_mask for v in views)
    return "all pixels" if masked == 0 else f"masked pixels (the dataset's masks) in {masked} of {len(views)} views"


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

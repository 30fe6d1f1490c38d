"""The reference renderer: 3D Gaussian Splatting in plain PyTorch, differentiable by autograd.

Read this file top to bottom to learn the method (Kerbl et al., SIGGRAPH 2023). Every faster
backend has the same stages and is tested against this one, forward and backward.

    1. covariance      Sigma = R S S^T R^T from the quaternion and scales
    2. projection      EWA splatting: Sigma' = J W Sigma W^T J^T + 0.3 I, 3-sigma radius
    3. colour          spherical harmonics evaluated in the viewing direction
    4. binning         every Gaussian goes to the 16x16 tiles its 3-sigma square touches;
                       each tile's list is sorted front to back by camera-space depth
    5. compositing     per pixel, front to back: C = sum_i c_i a_i T_i + T_final * background

Memory grows with the number of tile-Gaussian intersections (each tile builds a
[pixels in tile, Gaussians in tile] table), never with all pixels x all Gaussians.

Gradient through the view direction: the colour depends on the direction from the camera to
the Gaussian, and we let its gradient flow back to `means` (as the 3DGS CUDA rasterizer does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..camera import Camera
from ..constants import ALPHA_MAX, ALPHA_MIN, FOV_CLAMP, LAMBDA_FLOOR, RADIUS_SIGMAS, T_MIN
from ..gaussians import Gaussians
from ..geometry import quat_scale_to_covar, quat_to_rotmat  # noqa: F401  (re-exported)
from ..sh import eval_sh
from .settings import TILE_SIZE, RenderOutput, RenderSettings

# ---- 1. covariance -------------------------------------------------------------------------
#
# Sigma = R S S^T R^T, with R the rotation of the (normalised) quaternion and S = diag(scales):
# `quat_scale_to_covar` in geometry.py (shared with the trainer and the viewer). The
# method's constants (ALPHA_MAX, T_MIN, FOV_CLAMP, ...) live in constants.py.


# ---- 2. projection -------------------------------------------------------------------------


@dataclass
class Projection:
    """Per-Gaussian screen-space quantities."""

    means2d: torch.Tensor  # [N, 2] centre in pixels (pixel (j, i) has its centre at j+0.5, i+0.5)
    conics: torch.Tensor  # [N, 3] inverse 2D covariance (a, b, c): [[a, b], [b, c]]
    depths: torch.Tensor  # [N] camera-space z of the centre
    radii: torch.Tensor  # [N] int32, ceil(3 sqrt(largest eigenvalue)); 0 = culled
    compensation: torch.Tensor  # [N] opacity factor of the anti-aliasing filter (1 when off)


def project_gaussians(
    means: torch.Tensor, covars: torch.Tensor, camera: Camera, settings: RenderSettings
) -> Projection:
    """EWA projection of 3D Gaussians to the image plane.

    means [N, 3], covars [N, 3, 3] in world space. The 2D covariance is J W Sigma W^T J^T,
    with W the world->camera rotation and J the Jacobian of the perspective projection at
    the Gaussian's centre. As in 3DGS, the point used for J is clamped to 1.3x the field of
    view on each side of the principal point, so that Gaussians far outside the image do not
    get huge, unstable footprints.
    """
    viewmat = camera.viewmat.to(means)
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]
    p_cam = means @ rot.T + trans  # [N, 3]
    x, y, z = p_cam.unbind(-1)

    # Near/far culling. Culled Gaussians get a safe depth so that nothing below divides by
    # zero: a NaN in a masked-out branch would still poison the gradient.
    in_range = (z > settings.near_plane) & (z < settings.far_plane)
    z = torch.where(in_range, z, torch.ones_like(z))

    fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
    lim_x_pos, lim_x_neg = FOV_CLAMP * (camera.width - cx) / fx, FOV_CLAMP * cx / fx
    lim_y_pos, lim_y_neg = FOV_CLAMP * (camera.height - cy) / fy, FOV_CLAMP * cy / fy
    tx = z * torch.clamp(x / z, -lim_x_neg, lim_x_pos)
    ty = z * torch.clamp(y / z, -lim_y_neg, lim_y_pos)

    zeros = torch.zeros_like(z)
    jac = torch.stack(
        [fx / z, zeros, -fx * tx / (z * z), zeros, fy / z, -fy * ty / (z * z)], dim=-1
    ).reshape(-1, 2, 3)  # [N, 2, 3]
    cov_cam = rot @ covars @ rot.T  # [N, 3, 3]
    cov2d = jac @ cov_cam @ jac.transpose(-1, -2)  # [N, 2, 2]

    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    det_raw = a * c - b * b
    a, c = a + settings.eps2d, c + settings.eps2d  # low-pass: every splat covers about a pixel
    det = a * c - b * b
    if settings.antialiased:  # Mip-Splatting: keep the integrated opacity of small splats
        compensation = torch.sqrt(torch.clamp(det_raw / det.clamp_min(1e-30), min=0.0))
    else:
        compensation = torch.ones_like(det)

    valid = in_range & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)  # [N, 3]

    # 3 sigma along the major axis; the 0.1 floor is the 3DGS rasterizer's.
    mid = 0.5 * (a + c)
    lambda_max = mid + torch.sqrt(torch.clamp(mid * mid - det, min=LAMBDA_FLOOR))
    radius = torch.ceil(RADIUS_SIGMAS * torch.sqrt(lambda_max.detach()))

    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)  # [N, 2]

    x0, y0, x1, y1 = tile_rect(means2d.detach(), radius, camera.width, camera.height)
    valid = valid & (x0 <= x1) & (y0 <= y1)  # at least one tile of the image touched
    radii = torch.where(valid, radius, torch.zeros_like(radius)).to(torch.int32)
    return Projection(means2d, conics, p_cam[:, 2], radii, compensation)


def tile_rect(means2d: torch.Tensor, radii: torch.Tensor, width: int, height: int):
    """Inclusive range of tiles touched by each Gaussian's square [mean - r, mean + r].

    Returns (x0, y0, x1, y1) as [N] int64 tensors, clipped to the tile grid; a Gaussian
    that touches no tile of the image has x0 > x1 or y0 > y1.
    """
    tiles_x, tiles_y = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    mx, my = means2d[:, 0], means2d[:, 1]
    x0 = torch.floor((mx - radii) / TILE_SIZE).clamp(0, tiles_x).long()
    x1 = torch.floor((mx + radii) / TILE_SIZE).clamp(-1, tiles_x - 1).long()
    y0 = torch.floor((my - radii) / TILE_SIZE).clamp(0, tiles_y).long()
    y1 = torch.floor((my + radii) / TILE_SIZE).clamp(-1, tiles_y - 1).long()
    return x0, y0, x1, y1


# ---- 3. colour -----------------------------------------------------------------------------


def gaussian_colors(gaussians: Gaussians, camera: Camera, sh_degree: int) -> torch.Tensor:
    """[N, 3] colour of each Gaussian seen from the camera centre (SH in world space)."""
    campos = camera.position.to(gaussians.means)
    dirs = torch.nn.functional.normalize(gaussians.means - campos, dim=-1)  # [N, 3]
    return eval_sh(sh_degree, gaussians.sh, dirs)


# ---- 4. binning ----------------------------------------------------------------------------


@dataclass
class Binning:
    """Tile-Gaussian intersections, grouped by tile and sorted front to back inside a tile."""

    gaussian_ids: torch.Tensor  # [M] int64, Gaussian of each intersection
    tile_offsets: torch.Tensor  # [T + 1] int64, tile t owns gaussian_ids[off[t]:off[t+1]]
    tiles_x: int
    tiles_y: int


def bin_gaussians(
    means2d: torch.Tensor, radii: torch.Tensor, depths: torch.Tensor, width: int, height: int
) -> Binning:
    """Duplicate each visible Gaussian once per tile it touches; sort by (tile, depth)."""
    tiles_x, tiles_y = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    device = means2d.device
    x0, y0, x1, y1 = tile_rect(means2d.detach(), radii.to(means2d.dtype), width, height)
    visible = radii > 0
    span_x = torch.where(visible, x1 - x0 + 1, 0)
    span_y = torch.where(visible, y1 - y0 + 1, 0)
    counts = span_x * span_y  # [N] tiles touched

    gid = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)  # [M]
    first = torch.cumsum(counts, 0) - counts  # [N] where each Gaussian's run starts
    k = torch.arange(len(gid), device=device) - first[gid]  # index inside the run
    tile_x = x0[gid] + k % span_x[gid]
    tile_y = y0[gid] + k // span_x[gid]
    tile = tile_y * tiles_x + tile_x  # [M]

    # One sort on (tile, depth rank): ties in depth keep input order.
    depth_rank = torch.empty(len(counts), dtype=gid.dtype, device=device)  # [N] (gid may be shorter)
    depth_rank[torch.argsort(depths.detach(), stable=True)] = torch.arange(len(counts), device=device)
    order = torch.argsort(tile * len(counts) + depth_rank[gid])
    gid, tile = gid[order], tile[order]
    tile_offsets = torch.searchsorted(tile, torch.arange(tiles_x * tiles_y + 1, device=device))
    return Binning(gid, tile_offsets, tiles_x, tiles_y)


# ---- 5. compositing ------------------------------------------------------------------------


def composite_tiles(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    opacities: torch.Tensor,
    features: torch.Tensor,
    binning: Binning,
    width: int,
    height: int,
    absgrad: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back alpha compositing, one tile at a time.

    means2d [N, 2], conics [N, 3], opacities [N], features [N, C] (colour, depth, ...).
    Returns the accumulated features [H, W, C] (sum_i f_i a_i T_i, no background) and the
    final transmittance T_final [H, W]. If `absgrad` [N, 2] is given, backward adds to it
    the sum over pixels of |dL/dmeans2d| of each pixel's own term.
    """
    C = features.shape[1]
    rows, cols, feats, trans = [], [], [], []
    offsets = binning.tile_offsets.tolist()
    for tile in range(binning.tiles_x * binning.tiles_y):
        start, end = offsets[tile], offsets[tile + 1]
        ty, tx = divmod(tile, binning.tiles_x)
        ys = torch.arange(ty * TILE_SIZE, min((ty + 1) * TILE_SIZE, height), device=means2d.device)
        xs = torch.arange(tx * TILE_SIZE, min((tx + 1) * TILE_SIZE, width), device=means2d.device)
        py, px = torch.meshgrid(ys, xs, indexing="ij")
        py, px = py.reshape(-1), px.reshape(-1)  # [P] pixels of this tile
        rows.append(py)
        cols.append(px)
        if start == end:  # nothing here: transparent
            feats.append(features.new_zeros(len(px), C))
            trans.append(features.new_ones(len(px)))
            continue
        g = binning.gaussian_ids[start:end]  # [K] front to back
        pix = torch.stack([px, py], dim=-1).to(means2d.dtype) + 0.5  # [P, 2] pixel centres
        d = pix[:, None, :] - means2d[g][None, :, :]  # [P, K, 2]
        if absgrad is not None and d.requires_grad:
            d.register_hook(_accumulate_abs(absgrad, g))
        a, b, c = conics[g].unbind(-1)  # [K] each
        power = -0.5 * (a * d[..., 0] ** 2 + c * d[..., 1] ** 2) - b * d[..., 0] * d[..., 1]  # [P, K]
        alpha = torch.clamp_max(opacities[g] * torch.exp(power), ALPHA_MAX)  # [P, K]
        alpha = torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))
        # Stop before the Gaussian that would take T below T_MIN: transmittance only falls,
        # so the Gaussians kept form a prefix of the front-to-back list.
        kept = torch.cumprod(1.0 - alpha.detach(), dim=1) >= T_MIN  # [P, K]
        alpha = alpha * kept
        t_after = torch.cumprod(1.0 - alpha, dim=1)  # [P, K] transmittance behind each
        t_before = torch.cat([torch.ones_like(t_after[:, :1]), t_after[:, :-1]], dim=1)
        weights = alpha * t_before  # [P, K] contribution of each Gaussian
        feats.append(weights @ features[g])  # [P, C]
        trans.append(t_after[:, -1])
    rows, cols = torch.cat(rows), torch.cat(cols)
    out = features.new_zeros(height, width, C).index_put((rows, cols), torch.cat(feats))
    t_final = features.new_zeros(height, width).index_put((rows, cols), torch.cat(trans))
    return out, t_final


def _accumulate_abs(absgrad: torch.Tensor, g: torch.Tensor):
    def hook(grad: torch.Tensor) -> None:  # grad [P, K, 2] = -dL/dmeans2d per pixel
        absgrad.index_add_(0, g, grad.abs().sum(0))

    return hook


# ---- the whole pipeline --------------------------------------------------------------------


def rasterize_reference(gaussians: Gaussians, camera: Camera, settings: RenderSettings) -> RenderOutput:
    """Render `gaussians` from `camera`. Inputs are assumed validated (see render.rasterize)."""
    sh_degree = gaussians.sh_degree if settings.sh_degree is None else settings.sh_degree
    covars = quat_scale_to_covar(gaussians.quats, gaussians.scales)  # [N, 3, 3]
    proj = project_gaussians(gaussians.means, covars, camera, settings)
    if proj.means2d.requires_grad:
        proj.means2d.retain_grad()  # densification reads the screen-space gradient
    colors = gaussian_colors(gaussians, camera, sh_degree)  # [N, 3]
    opacities = gaussians.opacities * proj.compensation  # [N]

    binning = bin_gaussians(proj.means2d, proj.radii, proj.depths, camera.width, camera.height)
    features = colors  # [N, 3] (+ depth: [N, 4]) the channels to composite
    if settings.render_depth:
        features = torch.cat([colors, proj.depths.unsqueeze(-1)], dim=-1)
    absgrad = None
    if settings.absgrad and proj.means2d.requires_grad:
        absgrad = torch.zeros_like(proj.means2d.detach())
        proj.means2d.absgrad = absgrad  # filled during backward
    accum, t_final = composite_tiles(
        proj.means2d, proj.conics, opacities, features, binning, camera.width, camera.height, absgrad
    )
    return finish_output(accum, t_final, proj, binning, settings)


def finish_output(
    accum: torch.Tensor, t_final: torch.Tensor, proj: Projection, binning: Binning, settings: RenderSettings
) -> RenderOutput:
    """Background, alpha and expected depth from the composited [H, W, 4] (rgb, depth) sums
    (or [H, W, 3] rgb sums when depth was not composited)."""
    background = torch.as_tensor(settings.background, dtype=accum.dtype, device=accum.device)
    alpha = (1.0 - t_final).unsqueeze(-1)  # [H, W, 1]
    image = accum[..., :3] + t_final.unsqueeze(-1) * background  # [H, W, 3]
    depth = None
    if accum.shape[-1] > 3:
        depth = accum[..., 3:4] / alpha.clamp_min(1e-10)  # [H, W, 1]; 0 where nothing was drawn
    return RenderOutput(
        image=image,
        alpha=alpha,
        depth=depth,
        means2d=proj.means2d,
        radii=proj.radii,
        visible=proj.radii > 0,
        depths=proj.depths,
        num_intersections=len(binning.gaussian_ids),
    )

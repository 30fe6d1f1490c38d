"""Where the initial Gaussians come from when a dataset has no real point cloud.

Loaders of layouts without points (Blender, nerfstudio without a .ply) return random points
(scene.info["random_points"]); the trainer's `init_region` decides whether to use them
("points") or to place `init_num_random` Gaussians from the views, as below.

3DGS starts synthetic scenes from 100k points uniform in a fixed cube ([-1.3, 1.3]^3, a fact of
the NeRF-synthetic data). We do not know such a cube for an arbitrary dataset; the box around
the cameras (centre of the camera positions +- the scene extent) is ~60x larger in volume on
lego, so most random Gaussians would start in empty space, large and slow to render. The
cameras themselves say where the scene is:

- "frusta": keep candidate points that at least `min_view_fraction` of the training views see
  (in front of the camera, inside the image): for an object captured from all around this is a
  region about as large as the object's bounding sphere.
- "hull": additionally carve with the training images' alpha masks (Blender RGBA data): a point
  must project onto a covered pixel (alpha > 0) in every view that sees it, allowing a few
  views to disagree (soft mask edges). This is the object's visual hull: the Gaussians start
  where the object is. Colours start as the mean of the pixels the point projects to.
- "box": uniform in the box around the cameras, random colours (no use of the views).

Candidates are drawn in two rounds: a first batch in the camera box locates the accepted region,
the rest is drawn in that region's bounding box (slightly padded), so a small hull still gets
its `n` points quickly.

Data-parallel runs (a `Group` of N processes): each process holds the pixels of its own share of
the training views only (train/distributed.py). Every process draws the same candidates; the
pixel tests and colours of its own views are summed over the processes (counts exactly, colour
sums up to rounding), and the background colours' per-view samples are gathered, so that every
process places the same Gaussians.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional

import torch

from ..gaussians import Gaussians
from ..sh import num_sh_bases, rgb_to_sh0

if TYPE_CHECKING:  # (distributed imports config, which imports this module)
    from .distributed import Group

InitRegion = Literal["auto", "points", "hull", "frusta", "box"]
HULL_TOLERANCE = 0.02  # fraction of the seeing views allowed to put a point on background
_BATCH = 200_000


def resolve_region(scene, region: InitRegion) -> str:
    """The concrete region for `region`: "auto" is "hull" when the scene's points are random
    (or absent) and every training view has an alpha channel; else its points, else "frusta"."""
    if region not in ("auto", "points", "hull", "frusta", "box"):
        raise ValueError(f"unknown init region {region!r}: expected auto, points, hull, frusta or box")
    has_points = scene.points is not None and len(scene.points) > 0
    if region == "points" and not has_points:
        raise ValueError(f"init region 'points': the {scene.kind} scene at {scene.path} has no point cloud")
    if region != "auto":
        return region
    random_points = not has_points or bool(scene.info.get("random_points", False))
    if random_points and all(v.has_alpha for v in scene.train):
        return "hull"
    return "points" if has_points else "frusta"


def random_init(
    scene,
    n: int,
    region: str = "hull",
    sh_degree: int = 3,
    init_opacity: float = 0.1,
    min_view_fraction: float = 0.5,
    generator: Optional[torch.Generator] = None,
    group: Optional[Group] = None,
) -> tuple[Gaussians, str]:
    """`n` Gaussians placed in `region` ("hull", "frusta" or "box", see the module doc);
    returns them and the region used ("box" when the views agree on no region). With a `group`,
    this process reads the pixels of its own share of the views (see the module doc)."""
    if n <= 0:
        raise ValueError(f"number of initial Gaussians must be positive, got {n}")
    if region not in ("hull", "frusta", "box"):
        raise ValueError(f"unknown random init region {region!r}: expected hull, frusta or box")
    if region == "hull" and not all(v.has_alpha for v in scene.train):
        raise ValueError("init region 'hull' needs training images with an alpha channel (e.g. Blender RGBA)")
    centre = torch.stack([v.camera.position.float() for v in scene.train]).mean(0)
    half = max(float(scene.extent), 1e-3)
    lo, hi = centre - half, centre + half
    if region == "box":
        return Gaussians.random(n, lo.tolist(), hi.tolist(), sh_degree, init_opacity, generator=generator), region

    carve = region == "hull"
    mine = own_views(scene.train, group) if carve else set()
    first, first_colors = _accepted(scene, _uniform(_BATCH, lo, hi, generator), carve, min_view_fraction, mine, group)
    if len(first) < 16:  # the views agree on (almost) nothing: fall back to the camera box
        return Gaussians.random(n, lo.tolist(), hi.tolist(), sh_degree, init_opacity, generator=generator), "box"
    pad = 0.02 * (first.amax(0) - first.amin(0)) + 1e-6
    lo2, hi2 = torch.maximum(first.amin(0) - pad, lo), torch.minimum(first.amax(0) + pad, hi)
    points, colors = [], []
    total = 0
    for _ in range(50):  # bounded: each round accepts a fair share of the tight box
        p, c = _accepted(scene, _uniform(_BATCH, lo2, hi2, generator), carve, min_view_fraction, mine, group)
        points.append(p)
        colors.append(c)
        total += len(p)
        if total >= n:
            break
    points_t = torch.cat(points)[:n]  # [n', 3]
    colors_t = torch.cat(colors)[:n]
    if not carve:
        colors_t = torch.rand(len(points_t), 3, generator=generator)  # as 3DGS: random colours
    return Gaussians.from_points(points_t, colors_t, sh_degree, init_opacity), region


def _uniform(m: int, lo: torch.Tensor, hi: torch.Tensor, generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(m, 3, generator=generator)  # [m, 3]


def own_views(views: list, group: Optional[Group]) -> set[int]:
    """The indices of the views whose pixels this process reads: all with one process, else its
    shard (which it must have loaded)."""
    mine = set(range(len(views)) if group is None else group.shard(len(views)))
    missing = [views[i].name for i in sorted(mine) if not views[i].loaded]
    if missing:
        raise RuntimeError(f"the pixels of {len(missing)} of this process's views are not loaded "
                           f"(e.g. {missing[0]}): load the scene with share=group.view_share()")
    return mine


@torch.no_grad()
def _accepted(scene, points: torch.Tensor, carve: bool, min_view_fraction: float, mine: set[int],
              group: Optional[Group] = None):
    """The candidates that pass the view test, and their mean colour over the views that see them.
    Every view's camera counts for `seen`; the pixels of the views `mine` for `covered` and the
    colours, summed over the group's processes.

    points [M, 3] -> ([K, 3], [K, 3]).
    """
    m = len(points)
    seen = torch.zeros(m)
    covered = torch.zeros(m)
    color_sum = torch.zeros(m, 3)
    for i, view in enumerate(scene.train):
        uvz = view.camera.project(points.double()).float()  # [M, 3]
        u, v, z = uvz[:, 0], uvz[:, 1], uvz[:, 2]
        inside = (z > 1e-3) & (u >= 0) & (v >= 0) & (u < view.width) & (v < view.height)
        seen += inside
        if not carve or i not in mine:
            continue
        iu = u.clamp(0, view.width - 1).long()
        iv = v.clamp(0, view.height - 1).long()
        on = inside & (view.alpha[iv, iu] > 0)
        covered += on
        color_sum += view.image[iv, iu].float() / 255.0 * on.unsqueeze(-1)
    if carve and group is not None:
        group.sum_(covered, color_sum, what="the initial Gaussians' pixel test")
    keep = seen >= min_view_fraction * len(scene.train)
    if carve:
        keep &= covered >= (1.0 - HULL_TOLERANCE) * seen
    colors = color_sum[keep] / covered[keep].clamp_min(1.0).unsqueeze(-1)
    return points[keep], colors


def initial_gaussians(scene, region: InitRegion, num_random: int, sh_degree: int, init_opacity: float,
                      seed: int, init_model: Optional[Path] = None,
                      group: Optional[Group] = None) -> tuple[Gaussians, str]:
    """The Gaussians a run starts from, and the region they were placed in (see the module doc);
    `init_model`, a model file of any format, replaces the dataset's points."""
    if init_model is not None:
        return model_init(Path(init_model), sh_degree), f"the model {init_model}"
    used = resolve_region(scene, region)
    if used == "points":
        return Gaussians.from_points(scene.points, scene.point_colors, sh_degree, init_opacity), used
    return random_init(scene, num_random, used, sh_degree, init_opacity,
                       generator=torch.Generator().manual_seed(seed), group=group)


def model_init(path: Path, sh_degree: int) -> Gaussians:
    """A model file (any format io.read_model reads) at `sh_degree`: higher bands dropped, missing
    ones zero (what training would have started them at)."""
    from ..io import read_model

    g = read_model(path)
    if g.sh_degree >= sh_degree:
        return g.with_sh_degree(sh_degree)
    pad = torch.zeros(len(g), num_sh_bases(sh_degree) - 1 - g.shN.shape[1], 3, dtype=g.dtype)
    return Gaussians(g.means, g.quats, g.log_scales, g.logit_opacities, g.sh0, torch.cat([g.shN, pad], dim=1))


# ---- what lies beyond the scene: Gaussians on a sphere ----------------------------------------


def fibonacci_sphere(n: int) -> torch.Tensor:
    """[n, 3] unit vectors spread evenly over the sphere (the golden-angle spiral)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    r = torch.sqrt(1.0 - z * z)
    phi = math.pi * (3.0 - math.sqrt(5.0)) * i
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)


def background_sphere(scene) -> tuple[torch.Tensor, float]:
    """(centre [3], radius) of a sphere behind everything the SfM points and cameras show."""
    centre = torch.stack([v.camera.position.double() for v in scene.train]).mean(0)
    reach = float(scene.extent)
    if scene.points is not None and len(scene.points) > 16:
        dist = (scene.points.double() - centre).norm(dim=-1)
        reach = max(reach, float(torch.quantile(dist, 0.99)))
    return centre, 2.0 * reach


@torch.no_grad()
def background_gaussians(scene, n: int, sh_degree: int, opacity: float,
                         group: Optional[Group] = None) -> Gaussians | None:
    """Gaussians on a sphere around the scene for the sky, far walls and floor beyond the SfM
    points, so that they are learned instead of left to the background colour.

    `n` directions evenly over the sphere at twice the reach of the SfM points; the ones that
    no training view sees are dropped. Each is coloured with the median, over the views that
    see it, of the pixel it projects to (the median ignores the views where the object is in
    front), and is as wide as the spacing of its neighbours. With a `group`, each process samples
    its own views and the samples are gathered (a sum where each view's row comes from one
    process, zeros elsewhere: exact), so every process gets the same median.
    """
    centre, radius = background_sphere(scene)
    points = centre + radius * fibonacci_sphere(n)  # [n, 3]
    # per view: [n, 3] colour, NaN where the view does not see the point
    samples = torch.zeros(len(scene.train), n, 3, dtype=torch.float64)  # [V, n, 3]
    for i in sorted(own_views(scene.train, group)):
        view = scene.train[i]
        uvz = view.camera.project(points)  # [n, 3]
        u, v, z = uvz.unbind(-1)
        inside = (z > 0) & (u >= 0) & (v >= 0) & (u < view.width) & (v < view.height)
        rgb = view.image[v.clamp(0, view.height - 1).long(), u.clamp(0, view.width - 1).long()].double() / 255.0
        samples[i] = torch.where(inside.unsqueeze(-1), rgb, torch.full_like(rgb, float("nan")))
    if group is not None:
        group.sum_(samples, what="gathering the background colour samples")
    colours = samples.nanmedian(dim=0).values  # [n, 3]
    seen = ~colours.isnan().any(-1)
    if not seen.any():
        return None
    spacing = radius * math.sqrt(4.0 * math.pi / n)  # mean distance between neighbours
    m = int(seen.sum())
    k = num_sh_bases(sh_degree)
    return Gaussians(
        means=points[seen].float(),
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(m, 1),
        log_scales=torch.full((m, 3), math.log(0.7 * spacing)),  # neighbours overlap: no gaps
        logit_opacities=torch.full((m,), math.log(opacity / (1.0 - opacity))),
        sh0=rgb_to_sh0(colours[seen].float()).unsqueeze(1),
        shN=torch.zeros(m, k - 1, 3),
    )

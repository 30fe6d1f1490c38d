"""A built-in scene that needs no download: analytic primitives, rendered by a NumPy ray caster.

The images are made by an independent ray caster written here from first principles, NOT by
splatlab's rasterizer, so that training on them is a genuine inverse problem (geometry, texture
and lighting have to be recovered by Gaussians that never produced the pixels).

Scene (world units, +z up; the ground is the plane z = 0):

    ground   a disc of radius 1.5 at z = 0, beige/grey checker (0.25 cells) with a dark rim
    sphere   centre (-0.45, -0.2, 0.5), radius 0.5, red/white latitude-longitude checker,
             with a little Blinn-Phong specular (the only view-dependent effect: exercises SH)
    torus    centre (0.45, 0.55, 0.15), axis +z, radii 0.38 / 0.15, blue/yellow stripes
    box      centre (0.5, -0.6, 0.25), half-size (0.22, 0.22, 0.25), turned 30 deg about z,
             green checker on every face

Shading: albedo * (ambient + diffuse * max(n.l, 0) * shadow) (+ specular on the sphere) with one
directional light and hard shadows from shadow rays; white background; anti-aliased by
supersampling (`supersample` x `supersample` stratified samples per pixel, box-filtered).

Cameras follow splatlab's conventions (see camera.py): OpenCV camera frame, world->camera
`viewmat`, pixel (j, i) centred at (j + 0.5, i + 0.5). The ray through continuous pixel
coordinates (u, v) has camera-space direction ((u - cx) / fx, (v - cy) / fy, 1) — the exact
inverse of `Camera.project` — and world direction R^T of that.

    scene = make_demo_scene()                 # 40 views at 128 x 128, every 8th held out for test
    image = render_demo_image(camera)         # [H, W, 3] float64 in [0, 1], any splatlab Camera
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .camera import Camera

__all__ = [
    "BACKGROUND",
    "BOX",
    "GROUND",
    "MISS",
    "SPHERE",
    "TORUS",
    "PRIMITIVES",
    "Hits",
    "albedo",
    "camera_rays",
    "cast_rays",
    "demo_cameras",
    "demo_train_config",
    "make_demo_scene",
    "pixel_rays",
    "render_demo_image",
    "sample_surface_points",
    "shade",
]

# ---- the scene's constants ---------------------------------------------------------------------

BACKGROUND = (1.0, 1.0, 1.0)
MISS, GROUND, SPHERE, TORUS, BOX = 0, 1, 2, 3, 4
PRIMITIVES = {GROUND: "ground", SPHERE: "sphere", TORUS: "torus", BOX: "box"}

GROUND_RADIUS = 1.5
GROUND_CELL = 0.25
GROUND_RIM = 1.38  # beyond this radius the disc is a dark rim
SPHERE_CENTRE = np.array([-0.45, -0.2, 0.5])
SPHERE_RADIUS = 0.5
SPHERE_BANDS = (12, 6)  # checker cells in longitude, latitude
TORUS_CENTRE = np.array([0.45, 0.55, 0.15])
TORUS_R, TORUS_r = 0.38, 0.15  # major (ring) and minor (tube) radius; the torus rests on the ground
TORUS_STRIPES = 16
BOX_CENTRE = np.array([0.5, -0.6, 0.25])
BOX_HALF = np.array([0.22, 0.22, 0.25])
BOX_ANGLE = math.radians(30.0)
BOX_CELLS = 3  # checker cells along each face edge (per unit of half-size / BOX_CELLS)

_c, _s = math.cos(BOX_ANGLE), math.sin(BOX_ANGLE)
BOX_ROT = np.array([[_c, -_s, 0.0], [_s, _c, 0.0], [0.0, 0.0, 1.0]])  # box frame -> world

LIGHT_DIR = np.array([0.45, -0.35, 1.0]) / np.linalg.norm([0.45, -0.35, 1.0])  # towards the light
AMBIENT, DIFFUSE = 0.32, 0.72
SPECULAR, SHININESS = 0.35, 40.0  # the sphere's Blinn-Phong highlight

TARGET = (0.0, 0.0, 0.0)  # the cameras look at the centre of the ground disc
ORBIT_RADIUS = 4.5
ELEVATIONS_DEG = (22.0, 48.0)
FOV_X_DEG = 45.0

_EPS = 1e-9


# ---- ray-primitive intersections (all vectorised over rays; o, d are [M, 3]) -------------------


def _hit_ground(o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Ray parameter t of the ground disc (inf on a miss). Seen from above or below."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -o[:, 2] / d[:, 2]
    p = o + t[:, None] * d
    ok = np.isfinite(t) & (t > 1e-6) & (p[:, 0] ** 2 + p[:, 1] ** 2 <= GROUND_RADIUS**2)
    return np.where(ok, t, np.inf)


def _hit_sphere(o: np.ndarray, d: np.ndarray, centre=SPHERE_CENTRE, radius=SPHERE_RADIUS, t_min=1e-6) -> np.ndarray:
    """Nearest t > t_min of |o + t d - c| = r, d not necessarily unit (inf on a miss)."""
    oc = o - centre
    a = np.einsum("ij,ij->i", d, d)
    b = np.einsum("ij,ij->i", oc, d)
    c = np.einsum("ij,ij->i", oc, oc) - radius * radius
    disc = b * b - a * c
    sq = np.sqrt(np.maximum(disc, 0.0))
    t0, t1 = (-b - sq) / a, (-b + sq) / a
    t = np.where(t0 > t_min, t0, np.where(t1 > t_min, t1, np.inf))
    return np.where(disc >= 0.0, t, np.inf)


def _hit_box(o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Slab test in the box's own frame (inf on a miss)."""
    ol = (o - BOX_CENTRE) @ BOX_ROT  # world -> box frame: R^T x, as row vectors
    dl = d @ BOX_ROT
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dl
        ta, tb = (-BOX_HALF - ol) * inv, (BOX_HALF - ol) * inv
    ta = np.nan_to_num(ta, nan=-np.inf)
    tb = np.nan_to_num(tb, nan=np.inf)
    t_near = np.minimum(ta, tb).max(axis=1)
    t_far = np.maximum(ta, tb).min(axis=1)
    t = np.where(t_near > 1e-6, t_near, t_far)  # from inside (shadow rays start on the surface)
    return np.where((t_near <= t_far) & (t > 1e-6), t, np.inf)


def _torus_sdf(p: np.ndarray) -> np.ndarray:
    """Signed distance to the torus, p [M, 3] in world space."""
    q = p - TORUS_CENTRE
    ring = np.sqrt(q[:, 0] ** 2 + q[:, 1] ** 2) - TORUS_R
    return np.sqrt(ring**2 + q[:, 2] ** 2) - TORUS_r


def _hit_torus(o: np.ndarray, d: np.ndarray, max_steps: int = 160, tol: float = 1e-6) -> np.ndarray:
    """Sphere tracing of the torus's signed distance inside its bounding sphere (inf on a miss).

    The SDF is 1-Lipschitz, so stepping by it never crosses the surface; rays are marched from
    where they enter the bounding sphere (radius R + r) until the distance is below `tol`.
    """
    m = len(o)
    norm = np.linalg.norm(d, axis=1)
    du = d / norm[:, None]  # unit directions: t is then a distance
    oc = o - TORUS_CENTRE
    b = np.einsum("ij,ij->i", oc, du)
    c = np.einsum("ij,ij->i", oc, oc) - (TORUS_R + TORUS_r) ** 2
    disc = b * b - c
    sq = np.sqrt(np.maximum(disc, 0.0))
    t_enter, t_exit = np.maximum(-b - sq, 1e-6), -b + sq
    out = np.full(m, np.inf)
    active = np.nonzero((disc > 0) & (t_exit > 1e-6))[0]
    t = t_enter[active].copy()
    # A ray starting on the surface (shadow rays) must first leave it: nudge by the tolerance.
    t = np.where(np.abs(_torus_sdf(o[active] + t[:, None] * du[active])) < 1e-4, t + 2e-4, t)
    for _ in range(max_steps):
        if len(active) == 0:
            break
        dist = _torus_sdf(o[active] + t[:, None] * du[active])
        hit = dist < tol
        out[active[hit]] = t[hit]
        keep = ~hit & (t + dist < t_exit[active])
        active, t = active[keep], (t + dist)[keep]
    return out / norm  # back to the caller's parametrisation of d


# ---- normals and textures -------------------------------------------------------------------


def _normals(prim: np.ndarray, p: np.ndarray) -> np.ndarray:
    """[M, 3] outward unit normals at surface points p of the given primitives."""
    n = np.zeros_like(p)
    g = prim == GROUND
    n[g] = (0.0, 0.0, 1.0)
    s = prim == SPHERE
    n[s] = (p[s] - SPHERE_CENTRE) / SPHERE_RADIUS
    t = prim == TORUS
    q = p[t] - TORUS_CENTRE
    ring = np.sqrt(q[:, 0] ** 2 + q[:, 1] ** 2) + _EPS
    centre_of_tube = np.stack([q[:, 0] / ring * TORUS_R, q[:, 1] / ring * TORUS_R, np.zeros(len(q))], -1)
    n[t] = q - centre_of_tube
    b = prim == BOX
    ql = (p[b] - BOX_CENTRE) @ BOX_ROT / BOX_HALF  # in [-1, 1]^3, one coordinate at +-1
    axis = np.abs(ql).argmax(axis=1)
    nl = np.zeros_like(ql)
    nl[np.arange(len(ql)), axis] = np.sign(ql[np.arange(len(ql)), axis])
    n[b] = nl @ BOX_ROT.T
    return n / (np.linalg.norm(n, axis=1, keepdims=True) + _EPS)


def _checker(*coords: np.ndarray) -> np.ndarray:
    """1 where the sum of the integer parts is odd: a checker in any number of dimensions."""
    return (sum(np.floor(c).astype(np.int64) for c in coords) % 2).astype(bool)


def albedo(prim: np.ndarray, p: np.ndarray) -> np.ndarray:
    """[M, 3] surface colour (before lighting) of primitive `prim` at surface point p."""
    col = np.ones_like(p)
    g = prim == GROUND
    if g.any():
        q = p[g]
        odd = _checker(q[:, 0] / GROUND_CELL, q[:, 1] / GROUND_CELL)
        c = np.where(odd[:, None], (0.55, 0.52, 0.48), (0.88, 0.83, 0.72))
        rim = q[:, 0] ** 2 + q[:, 1] ** 2 > GROUND_RIM**2
        col[g] = np.where(rim[:, None], (0.25, 0.22, 0.30), c)
    s = prim == SPHERE
    if s.any():
        q = (p[s] - SPHERE_CENTRE) / SPHERE_RADIUS
        lon = np.arctan2(q[:, 1], q[:, 0]) / (2 * math.pi) + 0.5  # [0, 1)
        lat = np.arccos(np.clip(q[:, 2], -1, 1)) / math.pi  # [0, 1]
        odd = _checker(lon * SPHERE_BANDS[0], lat * SPHERE_BANDS[1])
        col[s] = np.where(odd[:, None], (0.85, 0.13, 0.10), (0.95, 0.94, 0.90))
    t = prim == TORUS
    if t.any():
        q = p[t] - TORUS_CENTRE
        around = np.arctan2(q[:, 1], q[:, 0]) / (2 * math.pi) + 0.5
        odd = _checker(around * TORUS_STRIPES)
        col[t] = np.where(odd[:, None], (0.12, 0.32, 0.85), (0.97, 0.80, 0.12))
    b = prim == BOX
    if b.any():
        ql = (p[b] - BOX_CENTRE) @ BOX_ROT / BOX_HALF * BOX_CELLS * 0.5 + 11.5  # cells of the face, [10, 13]
        axis = np.abs((p[b] - BOX_CENTRE) @ BOX_ROT / BOX_HALF).argmax(axis=1)
        # the face's own two coordinates: drop the axis the face is perpendicular to
        u = np.where(axis == 0, ql[:, 1], ql[:, 0])
        v = np.where(axis == 2, ql[:, 1], ql[:, 2])
        odd = _checker(u, v)
        col[b] = np.where(odd[:, None], (0.10, 0.45, 0.18), (0.45, 0.85, 0.40))
    return col


# ---- casting and shading -------------------------------------------------------------------


@dataclass
class Hits:
    """The nearest surface along each ray."""

    t: np.ndarray  # [M] ray parameter (inf = background)
    prim: np.ndarray  # [M] int: MISS, GROUND, SPHERE, TORUS, BOX
    position: np.ndarray  # [M, 3] world position of the hit (undefined on a miss)


def cast_rays(origins: np.ndarray, dirs: np.ndarray) -> Hits:
    """Nearest hit of rays o + t d (t > 0) against every primitive. origins, dirs: [M, 3]."""
    o = np.broadcast_to(np.asarray(origins, np.float64), np.shape(dirs)).reshape(-1, 3)
    d = np.asarray(dirs, np.float64).reshape(-1, 3)
    ts = np.stack([_hit_ground(o, d), _hit_sphere(o, d), _hit_torus(o, d), _hit_box(o, d)], axis=1)  # [M, 4]
    which = ts.argmin(axis=1)
    t = ts[np.arange(len(d)), which]
    prim = np.where(np.isfinite(t), which + 1, MISS)
    position = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    return Hits(t, prim, position)


def _in_shadow(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """[M] bool: the light is blocked from surface points p (normals n) by another primitive."""
    o = p + 2e-4 * n
    d = np.broadcast_to(LIGHT_DIR, p.shape)
    blocked = np.isfinite(_hit_sphere(o, d)) | np.isfinite(_hit_box(o, d))
    rest = np.nonzero(~blocked)[0]
    if len(rest):
        blocked[rest] |= np.isfinite(_hit_torus(o[rest], d[rest]))
    return blocked


def shade(prim: np.ndarray, p: np.ndarray, view_dirs: np.ndarray | None = None) -> np.ndarray:
    """[M, 3] outgoing colour of surface points (prim [M], p [M, 3]) in [0, 1].

    Lambertian + ambient with hard shadows; with `view_dirs` [M, 3] (from the eye towards the
    point) the sphere also gets its specular highlight. Without it the result is the
    view-independent (diffuse) colour, which is what the initial point cloud is coloured with.
    """
    n = _normals(prim, p)
    ndotl = np.clip(n @ LIGHT_DIR, 0.0, None)
    lit = np.where(ndotl > 0, ~_in_shadow(p, n), False).astype(np.float64)
    col = albedo(prim, p) * (AMBIENT + DIFFUSE * ndotl * lit)[:, None]
    if view_dirs is not None:
        s = prim == SPHERE
        v = -view_dirs[s] / np.linalg.norm(view_dirs[s], axis=1, keepdims=True)
        h = v + LIGHT_DIR
        h = h / (np.linalg.norm(h, axis=1, keepdims=True) + _EPS)
        spec = SPECULAR * np.clip(np.einsum("ij,ij->i", n[s], h), 0, None) ** SHININESS * lit[s]
        col[s] += spec[:, None]
    return np.clip(col, 0.0, 1.0)


def pixel_rays(camera: Camera, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(origin [3], dirs [..., 3]) of the rays through continuous pixel coordinates (u, v).

    The inverse of `Camera.project`: the camera-space direction is ((u - cx)/fx, (v - cy)/fy, 1)
    (OpenCV: +x right, +y down, +z forward), turned to world space by R^T. Directions are not
    normalised: the ray parameter t is the camera-space depth z of the point o + t d.
    """
    viewmat = camera.viewmat.detach().double().cpu().numpy()
    rot = viewmat[:3, :3]
    origin = -rot.T @ viewmat[:3, 3]
    u, v = np.broadcast_arrays(np.asarray(u, np.float64), np.asarray(v, np.float64))
    x = (u - camera.cx) / camera.fx
    y = (v - camera.cy) / camera.fy
    d_cam = np.stack([x, y, np.ones_like(x)], axis=-1)  # [..., 3], OpenCV camera frame
    return origin, d_cam @ rot  # world direction R^T d, as row vectors


def camera_rays(camera: Camera, supersample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(origin [3], dirs [H, W, S*S, 3]) of the rays through `supersample`^2 stratified points
    per pixel; with supersample = 1 they go through the pixel centres (j + 0.5, i + 0.5)."""
    offs = (np.arange(supersample) + 0.5) / supersample  # sub-pixel positions in (0, 1)
    sub_v, sub_u = np.meshgrid(offs, offs, indexing="ij")
    u = np.arange(camera.width)[None, :, None] + sub_u.reshape(1, 1, -1)  # [1, W, S*S]
    v = np.arange(camera.height)[:, None, None] + sub_v.reshape(1, 1, -1)  # [H, 1, S*S]
    return pixel_rays(camera, u, v)


def render_demo_image(camera: Camera, supersample: int = 2, return_prim: bool = False):
    """Ray-cast the demo scene from `camera`: [H, W, 3] float64 in [0, 1] (white background).

    With return_prim, also the primitive id hit through each pixel centre's nearest sample
    ([H, W] int; 0 = background), for tests.
    """
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    origin, dirs = camera_rays(camera, supersample)
    h, w, s, _ = dirs.shape
    flat = dirs.reshape(-1, 3)
    hits = cast_rays(origin, flat)
    colour = np.broadcast_to(np.asarray(BACKGROUND, np.float64), flat.shape).copy()
    hit = hits.prim != MISS
    colour[hit] = shade(hits.prim[hit], hits.position[hit], flat[hit])
    image = colour.reshape(h, w, s, 3).mean(axis=2)  # box filter over the sub-pixel samples
    if not return_prim:
        return image
    prim = hits.prim.reshape(h, w, s)[:, :, (s - 1) // 2] if s % 2 else None
    if prim is None:  # even supersampling: no sample at the centre, cast one
        centre_dirs = camera_rays(camera, 1)[1].reshape(-1, 3)
        prim = cast_rays(origin, centre_dirs).prim.reshape(h, w)
    return image, prim


# ---- cameras, points, the scene --------------------------------------------------------------


def demo_cameras(num_views: int = 40, size: int = 128) -> list[Camera]:
    """`num_views` look-at cameras on an orbit of radius 4.5 around the objects, alternating between
    two elevations (22 and 48 degrees), azimuths evenly spaced and offset between the rings."""
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    cams = []
    target = np.asarray(TARGET)
    for k in range(num_views):
        elev = math.radians(ELEVATIONS_DEG[k % len(ELEVATIONS_DEG)])
        azim = 2 * math.pi * k / num_views + math.radians(15.0)
        eye = target + ORBIT_RADIUS * np.array(
            [math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev)]
        )
        cams.append(
            Camera.look_at(eye.tolist(), TARGET, (0.0, 0.0, 1.0), fov_x=math.radians(FOV_X_DEG),
                           width=size, height=size, name=f"view_{k:03d}")
        )  # fmt: skip
    return cams


def _sample_ground(n: int, rng: np.random.Generator) -> np.ndarray:
    r = GROUND_RADIUS * np.sqrt(rng.random(n))
    a = 2 * math.pi * rng.random(n)
    return np.stack([r * np.cos(a), r * np.sin(a), np.zeros(n)], -1)


def _sample_sphere(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return SPHERE_CENTRE + SPHERE_RADIUS * v / np.linalg.norm(v, axis=1, keepdims=True)


def _sample_torus(n: int, rng: np.random.Generator) -> np.ndarray:
    # Area element ~ (R + r cos(phi)): rejection-sample phi (the angle around the tube).
    out = np.zeros((0, 2))
    while len(out) < n:
        theta, phi = 2 * math.pi * rng.random(2 * n), 2 * math.pi * rng.random(2 * n)
        keep = rng.random(2 * n) * (TORUS_R + TORUS_r) < TORUS_R + TORUS_r * np.cos(phi)
        out = np.concatenate([out, np.stack([theta, phi], -1)[keep]])
    theta, phi = out[:n, 0], out[:n, 1]
    ring = TORUS_R + TORUS_r * np.cos(phi)
    return TORUS_CENTRE + np.stack([ring * np.cos(theta), ring * np.sin(theta), TORUS_r * np.sin(phi)], -1)


def _sample_box(n: int, rng: np.random.Generator) -> np.ndarray:
    hx, hy, hz = BOX_HALF
    areas = np.array([hy * hz, hy * hz, hx * hz, hx * hz, hx * hy, hx * hy])
    face = rng.choice(6, size=n, p=areas / areas.sum())
    q = (2 * rng.random((n, 3)) - 1) * BOX_HALF
    axis, sign = face // 2, np.where(face % 2 == 0, 1.0, -1.0)
    q[np.arange(n), axis] = sign * BOX_HALF[axis]
    return BOX_CENTRE + q @ BOX_ROT.T


def sample_surface_points(num_points: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random points on the visible surfaces with their diffuse colour: a stand-in for SfM points.

    Points are spread over the primitives in proportion to surface area, points hidden from
    every possible viewpoint (under the ground, inside another object) are dropped, and the
    colour is the shaded, view-independent colour (what structure-from-motion would observe).
    Returns (points [P, 3], colours [P, 3] in [0, 1]), float32, P <= num_points.
    """
    rng = np.random.default_rng(seed)
    areas = {
        GROUND: math.pi * GROUND_RADIUS**2,
        SPHERE: 4 * math.pi * SPHERE_RADIUS**2,
        TORUS: 4 * math.pi**2 * TORUS_R * TORUS_r,
        BOX: 8 * (BOX_HALF[0] * BOX_HALF[1] + BOX_HALF[1] * BOX_HALF[2] + BOX_HALF[0] * BOX_HALF[2]),
    }
    total = sum(areas.values())
    samplers = {GROUND: _sample_ground, SPHERE: _sample_sphere, TORUS: _sample_torus, BOX: _sample_box}
    pts, prims = [], []
    for prim, area in areas.items():
        k = max(1, int(round(num_points * area / total)))
        pts.append(samplers[prim](k, rng))
        prims.append(np.full(k, prim))
    p, prim = np.concatenate(pts), np.concatenate(prims)
    # Drop points no camera can see: below the ground, or inside another primitive.
    inside_sphere = np.linalg.norm(p - SPHERE_CENTRE, axis=1) < SPHERE_RADIUS - 1e-6
    ql = np.abs((p - BOX_CENTRE) @ BOX_ROT)
    inside_box = (ql < BOX_HALF - 1e-6).all(axis=1)
    inside_torus = _torus_sdf(p) < -1e-6
    below = p[:, 2] < -1e-6
    on_ground_under = (prim == GROUND) & (inside_sphere | inside_box | inside_torus)
    hidden = (prim != GROUND) & (below | (p[:, 2] < 1e-3))  # bottoms touching the ground
    hidden |= (prim != SPHERE) & inside_sphere
    hidden |= (prim != BOX) & inside_box
    hidden |= (prim != TORUS) & inside_torus
    keep = ~(hidden | on_ground_under)
    p, prim = p[keep], prim[keep]
    colour = shade(prim, p)
    return p.astype(np.float32)[:num_points], colour.astype(np.float32)[:num_points]


def demo_train_config(output=None, iterations: int = 600, **overrides):
    """A `TrainConfig` preset for the demo scene: a short schedule that reaches a recognisable
    result in about two minutes on two CPU cores with the cpu backend.

    Densification runs from step 100 to 70% of the run every 50 steps, capped at 12 000
    Gaussians, with no opacity reset (too short a run to recover from one); the SH degree rises
    by one every `iterations // 6` steps; one evaluation and one saved model at the end.
    Keyword overrides are set on the TrainConfig (e.g. ``max_minutes=2.0``).
    """
    from .train.config import TrainConfig
    from .train.strategy import DefaultStrategyConfig

    iterations = int(iterations)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    strategy = DefaultStrategyConfig(
        refine_start=min(100, iterations), refine_stop=int(0.7 * iterations), refine_every=50,
        reset_every=10 * iterations + 1, max_gaussians=12_000,
    )  # fmt: skip
    cfg = TrainConfig(
        output=None if output is None else Path(output),
        iterations=iterations,
        sh_degree_interval=max(1, iterations // 6),
        strategy=strategy,
        save_at=(iterations,),
        eval_at=(iterations,),
        checkpoint_every=iterations,
        coarse_to_fine=0.0,  # an iteration schedule, measured so; the time budget is only a safety stop
    )
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise ValueError(f"demo_train_config: TrainConfig has no field {key!r}")
        setattr(cfg, key, value)
    return cfg


def make_demo_scene(
    num_views: int = 40,
    size: int = 128,
    seed: int = 0,
    *,
    test_every: int = 8,
    num_points: int = 4000,
    supersample: int = 2,
    device=None,
):
    """The built-in demo scene as a training-ready `splatlab.data.Scene` (no download).

    Args:
        num_views: cameras on the orbit (alternating between two elevations).
        size: image width and height in pixels.
        seed: seed of the initial point cloud (the images do not depend on it).
        test_every: every `test_every`-th view (index % test_every == 0) is held out for testing,
            the 3DGS rule; 0 = no test views.
        num_points: size of the initial point cloud (random surface points, diffuse colours).
        supersample: anti-aliasing, supersample^2 rays per pixel.
        device: where to keep the images (default CPU).

    The scene's extent is 3DGS's (1.1 x the largest distance of a training camera centre from
    their mean), background white, kind "demo".
    """
    from .data.scene import Scene, View, camera_extent

    if isinstance(test_every, bool) or int(test_every) != test_every or test_every < 0:
        raise ValueError(f"test_every must be an integer >= 0, got {test_every!r}")
    cameras = demo_cameras(num_views, size)
    train, test = [], []
    for k, cam in enumerate(cameras):
        image = render_demo_image(cam, supersample)
        pixels = torch.from_numpy(np.round(image * 255.0).astype(np.uint8))  # [H, W, 3] uint8
        if device is not None:
            pixels = pixels.to(device)
        view = View(camera=cam, image=pixels, name=cam.name)
        (test if test_every and k % test_every == 0 else train).append(view)
    if not train:
        raise ValueError(f"test_every={test_every} leaves no training views out of {num_views}")
    points, colours = sample_surface_points(num_points, seed)
    return Scene(
        train=train,
        test=test,
        points=torch.from_numpy(points),
        point_colors=torch.from_numpy(colours),
        extent=float(camera_extent([v.camera for v in train])),
        background=BACKGROUND,
        kind="demo",
        path=Path("demo"),
        info={
            "num_views": num_views, "size": size, "seed": seed, "supersample": supersample,
            "test_every": test_every, "num_points": int(len(points)),
        },
    )  # fmt: skip

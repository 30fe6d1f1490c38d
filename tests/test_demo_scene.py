"""The built-in demo scene: determinism, splits, and agreement of its ray caster with `Camera`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splatlab import demo_scene as ds
from splatlab.camera import Camera
from splatlab.demo_scene import demo_cameras, make_demo_scene, render_demo_image

NUM_VIEWS, SIZE = 16, 48


@pytest.fixture(scope="module")
def scene():
    return make_demo_scene(num_views=NUM_VIEWS, size=SIZE, seed=0, num_points=1500)


def test_deterministic_for_a_seed(scene):
    again = make_demo_scene(num_views=NUM_VIEWS, size=SIZE, seed=0, num_points=1500)
    for a, b in zip(scene.train + scene.test, again.train + again.test):
        assert a.name == b.name
        assert torch.equal(a.image, b.image)
        assert torch.equal(a.camera.viewmat, b.camera.viewmat)
    assert torch.equal(scene.points, again.points)
    assert torch.equal(scene.point_colors, again.point_colors)
    other = make_demo_scene(num_views=2, size=16, seed=1, num_points=1500, test_every=0)
    assert not torch.equal(other.points[:100], scene.points[:100])  # the seed moves the points


def test_sizes_split_and_metadata(scene):
    assert len(scene.train) + len(scene.test) == NUM_VIEWS
    assert [v.name for v in scene.test] == ["view_000", "view_008"]  # every 8th held out
    assert all(int(v.name[-3:]) % 8 != 0 for v in scene.train)
    for v in scene.train + scene.test:
        assert v.image.shape == (SIZE, SIZE, 3) and v.image.dtype == torch.uint8
        assert (v.camera.width, v.camera.height) == (SIZE, SIZE)
        assert v.mask is None
    assert scene.kind == "demo" and scene.background == (1.0, 1.0, 1.0)
    centres = torch.stack([v.camera.position for v in scene.train])
    expected = 1.1 * (centres - centres.mean(0)).norm(dim=1).max().item()
    assert scene.extent == pytest.approx(expected)
    pts, cols = scene.points, scene.point_colors
    assert pts.dtype == torch.float32 and pts.shape[1] == 3 and 1200 <= len(pts) <= 1500
    assert cols.shape == pts.shape and cols.min() >= 0 and cols.max() <= 1
    assert pts[:, 2].min() >= -1e-6 and pts[:, :2].norm(dim=1).max() <= ds.GROUND_RADIUS + 1e-5
    no_test = make_demo_scene(num_views=3, size=16, test_every=0, num_points=10)
    assert len(no_test.train) == 3 and no_test.test == []


def test_images_not_blank_and_object_centred(scene):
    for v in scene.train + scene.test:
        img = v.image.numpy().astype(np.float64)
        fg = (img < 250).any(-1)  # not the white background
        frac = fg.mean()
        assert 0.2 < frac < 0.8, f"{v.name}: object covers {frac:.2f} of the image"
        ii, jj = np.nonzero(fg)
        cy, cx = ii.mean() + 0.5, jj.mean() + 0.5
        assert abs(cx - SIZE / 2) < 0.1 * SIZE and abs(cy - SIZE / 2) < 0.1 * SIZE, (v.name, cx, cy)
        # nothing cut off at the borders
        assert not fg[0].any() and not fg[-1].any() and not fg[:, 0].any() and not fg[:, -1].any(), v.name
        assert img.std() > 20  # texture and shading, not a flat fill


def test_rays_invert_camera_project():
    """A ray cast through the continuous pixel position `Camera.project` gives a surface point
    hits that very point: the ray caster and splatlab's camera agree on the convention."""
    cams = demo_cameras(6, 64)
    rng = np.random.default_rng(3)
    for cam in cams:
        origin = cam.position.numpy()
        # Surface points seen by this camera: hits of rays through random pixels.
        uv = rng.uniform(0, 64, size=(400, 2))
        o, d = ds.pixel_rays(cam, uv[:, 0], uv[:, 1])
        hits = ds.cast_rays(o, d)
        p = hits.position[hits.prim != ds.MISS]
        assert len(p) > 80
        proj = cam.project(torch.from_numpy(p)).numpy()  # [M, 3] (u, v, z)
        np.testing.assert_allclose(proj[:, :2], uv[hits.prim != ds.MISS], atol=1e-6)
        np.testing.assert_allclose(proj[:, 2], hits.t[hits.prim != ds.MISS], rtol=1e-9)  # t is depth
        assert np.allclose(origin, o)


def _footprint(p: np.ndarray, n: np.ndarray, eye: np.ndarray, pixel: float) -> np.ndarray:
    """p and 16 points around it in its tangent plane covering 1.5 pixels of the image: [17, 3].

    `pixel` is the world size of one pixel facing the camera at p; along the direction in which
    the surface is foreshortened the footprint is longer by 1 / cos(slant)."""
    to_eye = (eye - p) / np.linalg.norm(eye - p)
    cos_slant = max(abs(np.dot(n, to_eye)), 0.2)
    a = to_eye - np.dot(to_eye, n) * n  # the foreshortened tangent direction
    if np.linalg.norm(a) < 1e-9:
        a = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    ang = np.arange(16) * math.pi / 8
    r = 1.5 * pixel
    ring = p + (r / cos_slant) * np.cos(ang)[:, None] * a + r * np.sin(ang)[:, None] * b
    return np.concatenate([p[None], ring])


# One point per primitive, each in the middle of a texture cell, with its outward normal.
_T_THETA = (0.5 + 0.5 / ds.TORUS_STRIPES - 0.5) * 2 * math.pi  # centre of stripe 8
KNOWN_POINTS = {
    ds.SPHERE: None,  # per camera: the sphere point facing it
    ds.TORUS: (ds.TORUS_CENTRE + [ds.TORUS_R * math.cos(_T_THETA), ds.TORUS_R * math.sin(_T_THETA), ds.TORUS_r],
               np.array([0.0, 0.0, 1.0])),
    ds.BOX: (ds.BOX_CENTRE + [0.0, 0.0, ds.BOX_HALF[2]], np.array([0.0, 0.0, 1.0])),  # middle of the top face
    ds.GROUND: (np.array([1.125, 0.125, 0.0]), np.array([0.0, 0.0, 1.0])),  # a checker cell's centre
}  # fmt: skip


def test_known_surface_points_show_their_primitive():
    """Project a known surface point with Camera.project: the rendered pixel there shows that
    primitive, in the colour the shading model gives it (where the pixel's footprint is uniform)."""
    size = 128
    checked = {prim: 0 for prim in KNOWN_POINTS}
    for cam in demo_cameras(10, size):
        image, prim_map = render_demo_image(cam, supersample=2, return_prim=True)
        eye = cam.position.numpy()
        for prim, known in KNOWN_POINTS.items():
            if known is None:  # the sphere point nearest the camera: the middle of its silhouette
                n = eye - ds.SPHERE_CENTRE
                n /= np.linalg.norm(n)
                p = ds.SPHERE_CENTRE + ds.SPHERE_RADIUS * n
            else:
                p, n = known
            # visible from this camera? (first hit along the ray from the eye is p itself)
            hit = ds.cast_rays(eye[None], (p - eye)[None])
            if hit.prim[0] != prim or np.linalg.norm(hit.position[0] - p) > 1e-6:
                continue
            u, v, z = cam.project(torch.from_numpy(p[None])).numpy()[0]
            assert 0 <= u < size and 0 <= v < size and z > 0
            j, i = int(math.floor(u)), int(math.floor(v))
            # Skip the view if a texture edge is within the pixel's footprint (1.5 px around p).
            pix = np.linalg.norm(p - eye) / cam.fx  # world size of one pixel at p (about)
            nb = _footprint(p, n, eye, pix)
            if prim == ds.SPHERE:  # keep the neighbours on the sphere
                nb = ds.SPHERE_CENTRE + ds.SPHERE_RADIUS * (nb - ds.SPHERE_CENTRE) / np.linalg.norm(
                    nb - ds.SPHERE_CENTRE, axis=1, keepdims=True)
            prims = np.full(len(nb), prim)
            if np.abs(ds.albedo(prims, nb) - ds.albedo(prims[:1], p[None])).max() > 1e-9:
                continue
            assert prim_map[i, j] == prim, (cam.name, ds.PRIMITIVES[prim], prim_map[i, j])
            # The anti-aliased pixel averages the shading over its footprint: it must lie within
            # the range the shading model takes there (lighting varies smoothly over a pixel).
            cols = ds.shade(prims, nb, nb - eye)
            lo, hi = cols.min(0) - 0.03, cols.max(0) + 0.03
            assert (lo <= image[i, j]).all() and (image[i, j] <= hi).all(), (
                cam.name, ds.PRIMITIVES[prim], image[i, j], lo, hi)
            checked[prim] += 1
    assert all(c >= 2 for c in checked.values()), {ds.PRIMITIVES[k]: c for k, c in checked.items()}


def test_look_at_convention_up_is_up():
    """+z (world up) appears towards the top of the image: the sphere's top projects above its bottom."""
    cam = demo_cameras(1, 64)[0]
    top = ds.SPHERE_CENTRE + [0, 0, ds.SPHERE_RADIUS]
    bottom = ds.SPHERE_CENTRE - [0, 0, ds.SPHERE_RADIUS]
    uv = cam.project(torch.tensor(np.stack([top, bottom])))
    assert uv[0, 1] < uv[1, 1]


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_views"):
        demo_cameras(0, 32)
    with pytest.raises(ValueError, match="size"):
        demo_cameras(4, 2)
    with pytest.raises(ValueError, match="test_every"):
        make_demo_scene(num_views=2, size=16, test_every=-1)
    with pytest.raises(ValueError, match="no training views"):
        make_demo_scene(num_views=1, size=16, test_every=1)
    with pytest.raises(ValueError, match="supersample"):
        render_demo_image(Camera.look_at((4, 0, 1), (0, 0, 0), width=8, height=8), supersample=0)

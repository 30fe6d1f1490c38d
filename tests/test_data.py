"""splatlab.data: layouts, cameras, undistortion, caching, splits and error messages.

Real datasets are read from ``../shared/data`` (relative to the repository root); tests that need
one skip with a message when it is absent. Everything else uses tiny generated fixtures.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures_data import (
    noise_image,
    shared_dataset,
    snapshot,
    write_blender,
    write_colmap_text,
    write_image,
    write_transforms,
)
from splatlab import Camera
from splatlab.data import DatasetError, DatasetWarning, Scene, SfMOptions, View, load_scene
from splatlab.data import undistort as undistort_mod
from splatlab.data.images import import_pycolmap
from splatlab.data.scene import dataset_cache_dir

pycolmap = import_pycolmap()


def need(name: str):
    path = shared_dataset(name)
    if path is None:
        pytest.skip(f"../shared/data/{name} is not available (see the data README); skipping the real-data test")
    return path


# ---- lego_400 (Blender) -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lego():
    return load_scene(need("lego_400"), verbose=False)


def test_lego_counts_shapes_background(lego: Scene):
    root = need("lego_400")
    assert lego.kind == "blender" and len(lego.train) == 100 and len(lego.test) == 100  # val used as test
    assert lego.background == (1.0, 1.0, 1.0)
    view = lego.train[0]
    assert isinstance(view, View) and view.name == "train/r_0"
    assert view.image.shape == (400, 400, 3) and view.image.dtype == torch.uint8 and view.mask is None
    assert (view.camera.width, view.camera.height) == (400, 400)
    f = view.image_float()
    assert f.dtype == torch.float32 and f.shape == (400, 400, 3) and 0.0 <= f.min() and f.max() <= 1.0
    # White compositing, exactly: rgb * a + 255 * (1 - a).
    rgba = np.asarray(Image.open(root / "train" / "r_0.png")).astype(np.float64)
    alpha = rgba[..., 3:] / 255.0
    expected = np.rint(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha))
    assert np.abs(view.image.numpy().astype(np.float64) - expected).max() <= 1.0
    assert (view.image.numpy()[rgba[..., 3] == 0] == 255).all()  # transparent -> white
    assert torch.equal(view.alpha, torch.from_numpy(rgba[..., 3].astype(np.uint8)))  # kept for re-compositing
    # Random initial points, 3DGS style.
    assert lego.points.shape == (100_000, 3) and lego.points.dtype == torch.float32
    assert lego.points.abs().max() <= 1.3 and 0.0 <= lego.point_colors.min() and lego.point_colors.max() <= 1.0


def test_lego_extent_and_poses(lego: Scene):
    root = need("lego_400")
    meta = json.loads((root / "transforms_train.json").read_text())
    c2ws = np.array([f["transform_matrix"] for f in meta["frames"]], dtype=np.float64)  # [N, 4, 4]
    centres = c2ws[:, :3, 3]
    expected_extent = 1.1 * np.linalg.norm(centres - centres.mean(0), axis=1).max()
    assert lego.extent == pytest.approx(expected_extent, rel=1e-6)
    for i in (0, 17, 63):
        c2w = c2ws[i]
        forward = -c2w[:3, 2]  # OpenGL cameras look down -z
        target = torch.tensor(c2w[:3, 3] + 2.0 * forward)[None]
        uvz = lego.train[i].camera.project(target)[0]
        assert uvz[0].item() == pytest.approx(200.0, abs=1e-6) and uvz[1].item() == pytest.approx(200.0, abs=1e-6)
        assert uvz[2].item() == pytest.approx(2.0, abs=1e-9)
        # "up" in the image: a point above the axis (camera +y in OpenGL) lands above the centre.
        above = torch.tensor(c2w[:3, 3] + 2.0 * forward + 0.1 * c2w[:3, 1])[None]
        assert lego.train[i].camera.project(above)[0, 1].item() < 200.0


# ---- statue_colmap (COLMAP, SIMPLE_RADIAL) ------------------------------------------------------


@pytest.fixture(scope="module")
def statue(tmp_path_factory):
    root = need("statue_colmap")
    cache = tmp_path_factory.mktemp("statue_cache")
    t0 = time.perf_counter()
    # The model's own cameras: these tests check undistortion against the model as written
    # (per-photo intrinsics, the default for this photo collection, are tested in test_intrinsics.py).
    scene = load_scene(root, cache_dir=cache, verbose=False, intrinsics="as-given")
    return scene, cache, time.perf_counter() - t0


def _bilinear(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample img [H, W, C] at continuous pixel coordinates uv [N, 2] (pixel centres at +0.5)."""
    x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    h, w = img.shape[:2]
    x0, y0 = np.clip(x0, 0, w - 2), np.clip(y0, 0, h - 2)
    img = img.astype(np.float64)
    return ((1 - fx) * (1 - fy) * img[y0, x0] + fx * (1 - fy) * img[y0, x0 + 1]
            + (1 - fx) * fy * img[y0 + 1, x0] + fx * fy * img[y0 + 1, x0 + 1])


def test_statue_undistorted_reprojection(statue):
    scene, _, _ = statue
    root = need("statue_colmap")
    assert scene.kind == "colmap" and len(scene.train) == 35 and len(scene.test) == 5  # 40 images, every 8th
    assert scene.points.shape == (9066, 3) and scene.background is None
    recon = pycolmap.Reconstruction(str(root / "sparse" / "0"))
    distorted = recon.cameras[1]
    assert distorted.model.name == "SIMPLE_RADIAL"
    pinhole = pycolmap.undistort_camera(pycolmap.UndistortCameraOptions(), distorted)
    views = {v.name: v for v in scene.train + scene.test}
    errors, colour_diffs = [], []
    for image in recon.images.values():
        view = views[image.name]
        cam = view.camera
        assert (cam.width, cam.height) == (pinhole.width, pinhole.height) == tuple(view.image.shape[1::-1])
        assert np.allclose([cam.fx, cam.fy, cam.cx, cam.cy], pinhole.params)
        obs = [(p.xy, p.point3D_id) for p in image.points2D if p.has_point3D()]
        xy = np.array([o[0] for o in obs], dtype=np.float64)  # [M, 2] in the distorted photo
        xyz = np.array([recon.points3D[o[1]].xyz for o in obs])  # [M, 3]
        # Observations -> undistorted pixels: unproject with the distorted model, project with K.
        rays = distorted.cam_from_img(xy)  # [M, 2] normalised
        undist = np.stack([cam.fx * rays[:, 0] + cam.cx, cam.fy * rays[:, 1] + cam.cy], axis=1)
        uvz = cam.project(torch.from_numpy(xyz)).numpy()
        errors.append(np.linalg.norm(uvz[:, :2] - undist, axis=1))
        # The pixels agree with the camera: colour at the undistorted position == colour in the photo.
        photo = np.asarray(Image.open(root / "images" / image.name).convert("RGB"))
        inside = (undist[:, 0] > 2) & (undist[:, 0] < cam.width - 2) & (undist[:, 1] > 2) & (undist[:, 1] < cam.height - 2)
        colour_diffs.append(np.abs(_bilinear(view.image.numpy(), undist[inside]) - _bilinear(photo, xy[inside])))
    err = np.concatenate(errors)
    assert np.median(err) < 1.5, f"median reprojection error {np.median(err):.3f} px"
    assert np.median(np.concatenate(colour_diffs)) < 4.0


def test_statue_masks_and_cache_reuse(statue, monkeypatch):
    scene, cache, first_time = statue
    root = need("statue_colmap")
    view = scene.train[0]
    assert view.mask is not None and view.mask.dtype == torch.bool and view.mask.shape == view.image.shape[:2]
    assert 0.05 < view.mask.float().mean().item() < 0.95
    assert all(v.mask is not None for v in scene.train + scene.test)
    assert scene.info["undistort_cache"]["computed"] == 40
    files = {p: p.stat().st_mtime_ns for p in cache.rglob("*.png")}
    assert len(files) == 80  # 40 images + 40 masks

    def boom(*args, **kwargs):
        raise AssertionError("undistortion ran again although the cache is valid")

    monkeypatch.setattr(undistort_mod, "_undistort_array", boom)
    t0 = time.perf_counter()
    again = load_scene(root, cache_dir=cache, verbose=False, intrinsics="as-given")
    second_time = time.perf_counter() - t0
    assert again.info["undistort_cache"] == {**scene.info["undistort_cache"], "reused": 40, "computed": 0}
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.png")} == files
    assert torch.equal(again.train[3].image, scene.train[3].image) and torch.equal(again.train[3].mask, scene.train[3].mask)
    assert second_time < first_time


# ---- fox (instant-ngp transforms.json) ----------------------------------------------------------


def test_fox_missing_frames_and_distortion(tmp_path):
    root = need("fox")
    with pytest.warns(DatasetWarning, match=r"17 of 67 frames have no image file") as record:
        scene = load_scene(root, downscale=4, cache_dir=tmp_path, verbose=False, triangulate=False)
    assert "images/0005.jpg" in str(record[0].message)
    assert scene.kind == "nerfstudio" and len(scene.train) + len(scene.test) == 50
    assert len(scene.test) == 7 and scene.points is not None and scene.points.shape[1] == 3
    meta = json.loads((root / "transforms.json").read_text())
    dist = pycolmap.Camera(model="OPENCV", width=1080, height=1920,
                           params=[meta[k] for k in ("fl_x", "fl_y", "cx", "cy", "k1", "k2", "p1", "p2")])
    pinhole = pycolmap.undistort_camera(pycolmap.UndistortCameraOptions(), dist)
    view = next(v for v in scene.train + scene.test if v.name == "images/0001.jpg")
    cam = view.camera
    assert (cam.width, cam.height) == (round(pinhole.width / 4), round(pinhole.height / 4)) == (267, 474)
    assert scene.info["undistort_cache"]["computed"] == 50
    # Pose: the camera centre is the JSON's translation.
    c2w = np.array(meta["frames"][0]["transform_matrix"])
    assert np.allclose(cam.position.numpy(), c2w[:3, 3])
    # Pixels agree with camera + distortion model: sample the photo where the distorted model says.
    photo = np.asarray(Image.open(root / "images" / "0001.jpg").convert("RGB").reduce(4))  # 270x480
    v, u = np.mgrid[20:cam.height - 20:7, 20:cam.width - 20:7]
    uv = np.stack([u.ravel() + 0.5, v.ravel() + 0.5], axis=1).astype(np.float64)
    rays = np.stack([(uv[:, 0] - cam.cx) / cam.fx, (uv[:, 1] - cam.cy) / cam.fy, np.ones(len(uv))], axis=1)
    src = dist.img_from_cam(rays) / 4.0  # distorted full-res pixel -> the 4x reduced photo
    diff = np.abs(_bilinear(view.image.numpy(), uv) - _bilinear(photo, src))
    assert np.median(diff) < 3.0
    # The distortion matters: ignoring it (plain K) matches worse.
    plain = np.stack([meta["fl_x"] * rays[:, 0] + meta["cx"], meta["fl_y"] * rays[:, 1] + meta["cy"]], axis=1) / 4.0
    assert np.mean(np.abs(_bilinear(view.image.numpy(), uv) - _bilinear(photo, plain))) > np.mean(diff)


def test_fox_points_triangulated_from_known_poses(tmp_path):
    """No point cloud in transforms.json: points come from the training views' poses, agree with
    the pixels of the views that observed them, are cached outside the dataset, and are reused."""
    root = need("fox")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)  # the 17 missing frames
        scene = load_scene(root, downscale=4, cache_dir=tmp_path, verbose=False)
    assert scene.info["points_from"] == "triangulated" and not scene.info["random_points"]
    assert 1000 < len(scene.points) < 100_000
    errors, observed = [], 0
    for view in scene.train:
        uvz = view.camera.project(scene.points[view.point_ids].double())  # [K, 3]
        u, v, z = uvz.unbind(-1)
        assert (z > 0).all()
        inside = (u >= 0) & (v >= 0) & (u < view.width) & (v < view.height)
        assert inside.float().mean() > 0.99  # observed points project into the view
        pixels = view.image[v[inside].long(), u[inside].long()].float() / 255.0
        errors.append((pixels - scene.point_colors[view.point_ids][inside]).abs().mean(-1))
        observed += len(view.point_ids)
    assert observed >= 3 * len(scene.points)  # every point is seen by 3 views or more
    # Colours are the pixels' at the projections: a pose convention error would break this.
    assert torch.cat(errors).median() < 0.06
    assert not any(v.point_ids is not None for v in scene.test)  # held-out views take no part
    assert len(list((tmp_path / "triangulated").iterdir())) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        again = load_scene(root, downscale=4, cache_dir=tmp_path, verbose=False)
    assert torch.equal(again.points, scene.points)
    assert all(torch.equal(a.point_ids, b.point_ids) for a, b in zip(again.train, scene.train))
    # A process holding half of the views decodes the others for triangulation: the same inputs,
    # so the same cache entry (no second one) and the same points.
    from splatlab.data.scene import ViewShare

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        half = load_scene(root, downscale=4, cache_dir=tmp_path, verbose=False, share=ViewShare(0, 2))
    assert not all(v.loaded for v in half.train)
    assert torch.equal(half.points, scene.points)
    assert len(list((tmp_path / "triangulated").iterdir())) == 1


def test_triangulation_matches_nearest_views_when_there_are_many(tmp_path, monkeypatch):
    """Above EXHAUSTIVE_MAX views each view is matched with its nearest ones by pose only."""
    from splatlab.data import triangulate

    ring = [View(Camera.look_at((3 * np.cos(a), 3 * np.sin(a), 0.5), (0, 0, 0), width=8, height=8),
                 torch.zeros(8, 8, 3, dtype=torch.uint8), f"v{i}")
            for i, a in enumerate(np.linspace(0, 2 * np.pi, 12, endpoint=False))]
    pairs = triangulate.nearest_pairs(ring, 2)
    assert pairs == sorted({(i, (i + 1) % 12) if i < 11 else (0, 11) for i in range(12)})  # neighbours on the ring
    root = need("fox")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        scene = load_scene(root, downscale=4, cache_dir=tmp_path, verbose=False, triangulate=False)
    monkeypatch.setattr(triangulate, "EXHAUSTIVE_MAX", 4)
    monkeypatch.setattr(triangulate, "NEIGHBOURS", 4)
    points, colors, seen = triangulate.points_from_poses(scene.train[:12], None, verbose=False)
    assert len(points) >= triangulate.MIN_POINTS and len(seen) == 12


def test_triangulation_without_matches_falls_back_to_random_points(tmp_path):
    """Flat grey images have no features: a warning, and random points as before."""
    from splatlab.data.triangulate import points_from_poses

    views = [View(Camera.look_at((3 * np.cos(a), 3 * np.sin(a), 0.5), (0, 0, 0), width=64, height=48),
                  torch.full((48, 64, 3), 128, dtype=torch.uint8), f"v{i}")
             for i, a in enumerate(np.linspace(0, 1, 4))]
    with pytest.warns(DatasetWarning, match="using random initial points"):
        assert points_from_poses(views, tmp_path, verbose=False) is None


# ---- tiny generated COLMAP ----------------------------------------------------------------------


def test_colmap_text_pinhole(tmp_path):
    info = write_colmap_text(tmp_path, with_masks=True)
    scene = load_scene(tmp_path, test_every=3, verbose=False)
    assert scene.kind == "colmap" and [v.name for v in scene.test] == ["img_00.png", "img_03.png"]
    assert len(scene.train) == 4 and not (tmp_path / "splatlab_cache").exists()  # pinhole: nothing cached
    got = scene.points.double().numpy()
    assert np.allclose(got[np.lexsort(got.T)], info["points"][np.lexsort(info["points"].T)], atol=1e-6)
    recon = pycolmap.Reconstruction(str(tmp_path / "sparse" / "0"))
    for view in scene.train + scene.test:
        i = info["names"].index(view.name)
        assert torch.equal(view.image, torch.from_numpy(noise_image(i, 40, 30)))
        assert torch.allclose(view.camera.viewmat, info["cameras"][i].viewmat, atol=1e-9)
        assert view.mask is not None and view.mask[:, :20].all() and not view.mask[:, 20:].any()
        image = recon.find_image_with_name(view.name)
        obs = [(p.xy, recon.points3D[p.point3D_id].xyz) for p in image.points2D if p.has_point3D()]
        uvz = view.camera.project(torch.tensor(np.array([o[1] for o in obs])))
        assert np.allclose(uvz[:, :2].numpy(), np.array([o[0] for o in obs]), atol=1e-6)
    assert load_scene(tmp_path, test_every=0, verbose=False).test == []


def test_masks_that_match_no_image_are_named_and_wrong_sizes_refused(tmp_path):
    write_colmap_text(tmp_path, with_masks=True)
    (tmp_path / "masks" / "img_01.png").rename(tmp_path / "masks" / "IMG_01.png")  # a typo in a name
    with pytest.warns(DatasetWarning, match=r"no mask for 1 images \(img_01.png\).*match no image: IMG_01.png"):
        scene = load_scene(tmp_path, test_every=0, verbose=False)
    assert [v.name for v in scene.train if v.mask is None] == ["img_01.png"]
    # Each view records the SfM points it observed (sparse depth for training).
    assert all(v.point_ids is not None and len(v.point_ids) > 0 for v in scene.train)
    write_image(tmp_path / "masks" / "img_02.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match="img_02.png: mask is 10x10"):
        load_scene(tmp_path, test_every=0, verbose=False)


def test_colmap_binary_and_downscale(tmp_path):
    write_colmap_text(tmp_path / "txt")
    recon = pycolmap.Reconstruction(str(tmp_path / "txt" / "sparse" / "0"))
    (tmp_path / "bin" / "sparse" / "0").mkdir(parents=True)
    recon.write_binary(str(tmp_path / "bin" / "sparse" / "0"))
    shutil.copytree(tmp_path / "txt" / "images", tmp_path / "bin" / "images")
    full = load_scene(tmp_path / "bin", verbose=False)
    half = load_scene(tmp_path / "bin", downscale=2, verbose=False)
    for a, b in zip(full.train, half.train):
        assert b.image.shape == (15, 20, 3)
        expected = a.image.double().reshape(15, 2, 20, 2, 3).mean((1, 3))
        assert (b.image.double() - expected).abs().max() <= 0.5 + 1e-9  # exact 2x2 area average, rounded
        ref = a.camera.scaled(0.5)
        assert (b.camera.fx, b.camera.fy, b.camera.cx, b.camera.cy) == pytest.approx((ref.fx, ref.fy, ref.cx, ref.cy))
    # A pre-downscaled images_2/ folder is used as is.
    (tmp_path / "bin" / "images_2").mkdir()
    for name in ["img_00.png", "img_01.png", "img_02.png", "img_03.png", "img_04.png", "img_05.png"]:
        write_image(tmp_path / "bin" / "images_2" / name, np.full((15, 20, 3), 7, np.uint8))
    pre = load_scene(tmp_path / "bin", downscale=2, verbose=False)
    assert (pre.train[0].image == 7).all() and pre.train[0].camera.fx == pytest.approx(half.train[0].camera.fx)


def test_colmap_distorted_cache_invalidation(tmp_path):
    write_colmap_text(tmp_path, model="SIMPLE_RADIAL", extra_params=(0.08,))
    before = snapshot(tmp_path)
    scene = load_scene(tmp_path, verbose=False)
    assert scene.info["undistort_cache"]["computed"] == 6
    cam = scene.train[0].camera
    assert (cam.width, cam.height) != (40, 30)  # pinhole after undistortion
    # Changed on purpose (issue 11): nothing is written into the dataset, the cache is the user's.
    assert snapshot(tmp_path) == before and not (tmp_path / "splatlab_cache").exists()
    (cache,) = (dataset_cache_dir(tmp_path) / "undistorted").glob("images*")
    assert len(list(cache.glob("*.png"))) == 6
    again = load_scene(tmp_path, verbose=False)
    assert again.info["undistort_cache"]["reused"] == 6
    # Changing one image recomputes that one and replaces its stale entry.
    time.sleep(0.01)
    write_image(tmp_path / "images" / "img_02.png", noise_image(99, 40, 30))
    third = load_scene(tmp_path, verbose=False)
    assert (third.info["undistort_cache"]["reused"], third.info["undistort_cache"]["computed"]) == (5, 1)
    assert len(list(cache.glob("*.png"))) == 6
    # Changing the camera recomputes everything.
    cams = tmp_path / "sparse" / "0" / "cameras.txt"
    cams.write_text(cams.read_text().replace(" 0.08\n", " 0.05\n"))
    assert load_scene(tmp_path, verbose=False).info["undistort_cache"]["computed"] == 6


# ---- tiny Blender and transforms.json ---------------------------------------------------------


def test_blender_tiny(tmp_path):
    write_blender(tmp_path)
    before = snapshot(tmp_path)
    white = load_scene(tmp_path, verbose=False, num_random_points=10)
    black = load_scene(tmp_path, background=(0, 0, 0), verbose=False, num_random_points=10)
    assert (len(white.train), len(white.test)) == (4, 2) and white.points.shape == (10, 3)
    assert white.train[0].image[0, 0].tolist() == [255, 255, 255] and black.train[0].image[0, 0].tolist() == [0, 0, 0]
    assert torch.equal(white.train[0].image[0, 1], black.train[0].image[0, 1])  # opaque pixel unchanged
    assert black.background == (0.0, 0.0, 0.0)
    assert torch.equal(white.points, load_scene(tmp_path, verbose=False, num_random_points=10).points)  # seeded
    with pytest.warns(DatasetWarning, match="transforms_val.json"):
        assert load_scene(tmp_path, eval_split="val", verbose=False).test == []
    assert snapshot(tmp_path) == before and not (tmp_path / "splatlab_cache").exists()
    small = load_scene(tmp_path, downscale=2, verbose=False)
    assert small.train[0].image.shape == (8, 8, 3) and small.train[0].camera.fx == pytest.approx(white.train[0].camera.fx / 2)


def test_blender_val_fallback(tmp_path):
    write_blender(tmp_path, splits=("train", "val"))
    scene = load_scene(tmp_path, verbose=False)
    assert len(scene.test) == 2 and scene.test[0].name == "val/r_0"


def test_transforms_tiny(tmp_path):
    info = write_transforms(tmp_path, missing=1)
    with pytest.warns(DatasetWarning, match=r"1 of 5 frames .*frame_004_missing\.jpg"):
        scene = load_scene(tmp_path / "transforms.json", verbose=False, test_every=0)
    assert scene.kind == "nerfstudio" and len(scene.train) == 4 and scene.info["undistorted"] is False
    for view in scene.train:
        i = int(view.name[-7:-4])
        ref = info["cameras"][i]
        assert torch.allclose(view.camera.viewmat, ref.viewmat, atol=1e-9) and view.camera.fx == pytest.approx(ref.fx)
    centre = scene.points.mean(0)
    assert centre.norm() < 0.5  # random points around where the ring of cameras looks (the origin)


def test_transforms_instant_ngp_and_overrides(tmp_path):
    info = write_transforms(tmp_path, missing=0, angle_only=True)
    data = json.loads((tmp_path / "transforms.json").read_text())
    data["frames"][1]["fl_x"] = 50.0  # per-frame override
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    scene = load_scene(tmp_path, verbose=False, test_every=0)
    fx = {v.name: v.camera.fx for v in scene.train}
    assert fx["images/frame_000.jpg"] == pytest.approx(info["cameras"][0].fx) and fx["images/frame_001.jpg"] == 50.0


def test_transforms_distorted(tmp_path):
    write_transforms(tmp_path, missing=0, distortion={"k1": 0.05, "k2": -0.01, "p1": 0.001, "p2": -0.001})
    scene = load_scene(tmp_path, verbose=False, test_every=0)
    assert scene.info["undistorted"] and scene.info["undistort_cache"]["computed"] == 5
    assert load_scene(tmp_path, verbose=False, test_every=0).info["undistort_cache"]["reused"] == 5
    data = json.loads((tmp_path / "transforms.json").read_text())
    data["k4"] = 0.1
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="k4"):
        load_scene(tmp_path, verbose=False)


# ---- bad input ----------------------------------------------------------------------------------


def test_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="no such file or folder") as e:
        load_scene(tmp_path / "nope", verbose=False)
    assert str(tmp_path / "nope") in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        load_scene(tmp_path / "empty", verbose=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"not a dataset.*transforms_train\.json.*sparse.*notes\.txt"):
        load_scene(tmp_path / "other", verbose=False)
    assert issubclass(DatasetError, ValueError)


def test_bad_images(tmp_path):
    write_colmap_text(tmp_path)
    good = (tmp_path / "images" / "img_01.png").read_bytes()
    (tmp_path / "images" / "img_01.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match=r"img_01\.png.*(truncated|corrupt)"):
        load_scene(tmp_path, verbose=False)
    (tmp_path / "images" / "img_01.png").write_bytes(b"this is not a png")
    with pytest.raises(DatasetError, match=r"img_01\.png.*not a readable image"):
        load_scene(tmp_path, verbose=False)
    (tmp_path / "images" / "img_01.png").write_bytes(good)
    write_image(tmp_path / "images" / "img_02.png", noise_image(0, 20, 20))
    with pytest.raises(DatasetError, match=r"img_02\.png: image is 20x20 pixels but COLMAP camera 1 .* 40x30"):
        load_scene(tmp_path, verbose=False)
    # images_2 of the wrong size is refused too (sizes are checked after accounting for downscale)
    write_image(tmp_path / "images" / "img_02.png", noise_image(2, 40, 30))
    (tmp_path / "images_2").mkdir()
    for i in range(6):
        write_image(tmp_path / "images_2" / f"img_{i:02d}.png", noise_image(i, 20 if i != 4 else 30, 15))
    with pytest.raises(DatasetError, match=r"images_2/img_04\.png: image is 30x15"):
        load_scene(tmp_path, downscale=2, verbose=False)


def test_bad_colmap_model(tmp_path):
    write_colmap_text(tmp_path)
    sparse = tmp_path / "sparse" / "0"
    images_txt = sparse / "images.txt"
    text = images_txt.read_text()
    images_txt.write_text(text.replace(" 1 img_03.png", " 1.5.2 img_03.png"))
    with pytest.raises(DatasetError, match=r"images\.txt, line \d+"):
        load_scene(tmp_path, verbose=False)
    images_txt.write_text(text)
    recon = pycolmap.Reconstruction(str(sparse))
    recon.write_binary(str(sparse))
    for name in ("cameras.txt", "images.txt", "points3D.txt"):
        (sparse / name).unlink()
    for name in ("cameras.bin", "images.bin", "points3D.bin"):
        data = (sparse / name).read_bytes()
        (sparse / name).write_bytes(data[: len(data) - 5])
        with pytest.raises(DatasetError, match=rf"{name}: file is truncated or corrupt"):
            load_scene(tmp_path, verbose=False)
        (sparse / name).write_bytes(data)
    (sparse / "points3D.bin").unlink()
    with pytest.raises(DatasetError, match=r"no complete model.*points3D"):
        load_scene(tmp_path, verbose=False)


def test_bad_json(tmp_path):
    write_transforms(tmp_path, missing=0)
    path = tmp_path / "transforms.json"
    good = path.read_text()
    path.write_text(good[:-20])
    with pytest.raises(DatasetError, match=r"transforms\.json: invalid JSON at line"):
        load_scene(tmp_path, verbose=False)
    path.write_text(json.dumps({"fl_x": 10, "frames": []}))
    with pytest.raises(DatasetError, match=r"transforms\.json: no frames"):
        load_scene(tmp_path, verbose=False)
    data = json.loads(good)
    data["w"] = 64
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"frame_000\.jpg: image is 40x30 pixels but transforms\.json"):
        load_scene(tmp_path, verbose=False)
    data = json.loads(good)
    for frame in data["frames"]:
        frame["file_path"] = "images/gone.jpg"
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="none of the 5 frames"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        load_scene(tmp_path, verbose=False)
    write_blender(tmp_path / "b")
    (tmp_path / "b" / "transforms_train.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"transforms_train\.json: invalid JSON"):
        load_scene(tmp_path / "b", verbose=False)


def test_argument_checks(tmp_path):
    write_blender(tmp_path)
    for kwargs in ({"downscale": 0}, {"downscale": 1.5}, {"test_every": -1}, {"background": (2, 0, 0)}):
        with pytest.raises(ValueError):
            load_scene(tmp_path, verbose=False, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_option(tmp_path):
    write_blender(tmp_path)
    scene = load_scene(tmp_path, device="cuda", verbose=False)
    assert scene.train[0].image.is_cuda and scene.train[0].image_float().is_cuda


# ---- photos -> structure-from-motion -------------------------------------------------------------

# 12 well-connected photos of the statue (chosen by shared 3D points in its COLMAP model).
SFM_PHOTOS = [
    "2558473737_26550c7634_o.jpg", "28694662092_ef147bd65c_o.jpg", "29561140525_9e8b4a29fc_o.jpg",
    "37154369436_171009bf54_o.jpg", "42308389510_313e27d74f_o.jpg", "45194583384_53c1aef0f9_o.jpg",
    "49569326278_5592a1f0f9_o.jpg", "49569826016_639cc2b75e_o.jpg", "7574644852_9c9f081a67_o.jpg",
    "8151983731_066084233f_o.jpg", "8524740662_f35c08a99f_o.jpg", "90772798_17c2fd261e_o.jpg",
]


def test_photos_structure_from_motion(tmp_path):
    src = need("statue_colmap") / "images"
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in SFM_PHOTOS:
        with Image.open(src / name) as im:
            im.convert("RGB").resize((400, round(im.height * 400 / im.width)), Image.Resampling.BOX).save(
                photos / name, quality=95)
    before = snapshot(photos)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)  # "registered N of 12" when not all make it
        scene = load_scene(photos, verbose=False, test_every=0, sfm=SfMOptions(seed=0))
    assert scene.kind == "photos" and scene.info["registered"] >= 9
    assert len(scene.train) == scene.info["registered"] and scene.points.shape[0] > 100
    assert snapshot(photos) == before
    assert (dataset_cache_dir(photos) / "sfm" / "sparse" / "0" / "cameras.bin").is_file()
    # Second load reuses the model.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        again = load_scene(photos, verbose=False, test_every=0, sfm=SfMOptions(seed=0))
    assert again.info["sfm"] == scene.info["sfm"] and len(again.train) == len(scene.train)

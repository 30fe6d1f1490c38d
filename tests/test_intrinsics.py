"""Per-photo intrinsics for photo collections under one shared COLMAP camera (data/intrinsics.py)."""

from __future__ import annotations

import zlib  # noqa: F401  -- before pycolmap, see splatlab.data.images.import_pycolmap

import numpy as np
import pytest
from PIL import Image

from splatlab.data import load_scene
from splatlab.data.images import import_pycolmap
from splatlab.data.intrinsics import choose_per_photo, refine_per_photo, split_cameras

from fixtures_data import shared_dataset

pycolmap = import_pycolmap()

WIDTH, HEIGHT = 160, 120
TRUE_FOCALS = (150.0, 150.0, 220.0, 220.0, 300.0, 300.0, 150.0, 220.0)


def _look_at(centre: np.ndarray) -> np.ndarray:
    """world -> camera rotation [3, 3] (OpenCV axes) of a camera at `centre` looking at the origin."""
    forward = -centre / np.linalg.norm(centre)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def _collection(focals=TRUE_FOCALS, shared_focal: float | None = 220.0, n_points: int = 400, seed: int = 0):
    """A model of photos taken with `focals` (exact observations), written under one shared camera
    of focal `shared_focal` (None: each photo under its true camera)."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1.0, 1.0, size=(n_points, 3))
    recon = pycolmap.Reconstruction()
    if shared_focal is not None:
        recon.add_camera_with_trivial_rig(pycolmap.Camera(model="SIMPLE_RADIAL", width=WIDTH, height=HEIGHT,
                                                          params=[shared_focal, WIDTH / 2, HEIGHT / 2, 0.0],
                                                          camera_id=1))
    observations = {j: [] for j in range(n_points)}
    for i, f in enumerate(focals):
        angle = 2 * np.pi * i / len(focals)
        distance = 4.0 * f / 150.0  # zoomed photos from further away: similar framing, as in a collection
        centre = np.array([distance * np.cos(angle), distance * np.sin(angle), 1.0 + 0.2 * i])
        rot = _look_at(centre)
        cam = (rot @ (points - centre).T).T  # [P, 3]
        uv = f * cam[:, :2] / cam[:, 2:3] + [WIDTH / 2, HEIGHT / 2]
        seen = np.flatnonzero((uv[:, 0] > 0) & (uv[:, 0] < WIDTH) & (uv[:, 1] > 0) & (uv[:, 1] < HEIGHT))
        camera_id = 1
        if shared_focal is None:
            camera_id = i + 1
            recon.add_camera_with_trivial_rig(pycolmap.Camera(model="SIMPLE_RADIAL", width=WIDTH, height=HEIGHT,
                                                              params=[f, WIDTH / 2, HEIGHT / 2, 0.0],
                                                              camera_id=camera_id))
        image = pycolmap.Image(name=f"img_{i:02d}.jpg", camera_id=camera_id, image_id=i + 1,
                               points2D=pycolmap.Point2DList([pycolmap.Point2D(uv[j]) for j in seen]))
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(rot), -rot @ centre)
        recon.add_image_with_trivial_frame(image, pose)
        for k, j in enumerate(seen):
            observations[j].append((i + 1, k))
    for j, obs in observations.items():
        if len(obs) >= 2:
            track = pycolmap.Track()
            for image_id, idx in obs:
                track.add_element(image_id, idx)
            recon.add_point3D(points[j], track, np.array([128, 128, 128], dtype=np.uint8))
    return recon


def _focal(recon, name: str) -> float:
    image = recon.find_image_with_name(name)
    return recon.cameras[image.camera_id].params[0]


def test_split_cameras_gives_each_photo_its_own_copy_and_keeps_everything_else():
    recon = _collection()
    out = split_cameras(recon)
    assert recon.num_cameras() == 1 and out.num_cameras() == out.num_images() == recon.num_images()
    assert len({image.camera_id for image in out.images.values()}) == out.num_images()
    for image_id, image in recon.images.items():
        twin = out.images[image_id]
        assert twin.name == image.name
        np.testing.assert_allclose(twin.cam_from_world().matrix(), image.cam_from_world().matrix())
        np.testing.assert_allclose(out.cameras[twin.camera_id].params, recon.cameras[image.camera_id].params)
    assert set(out.points3D) == set(recon.points3D)  # ids kept: views' point ids stay valid
    for point_id, point in recon.points3D.items():
        np.testing.assert_allclose(out.points3D[point_id].xyz, point.xyz)


def test_refinement_recovers_each_photos_focal_length():
    recon = _collection()
    refined, before, after = refine_per_photo(recon)
    assert before > 1.0, "the shared camera should not explain photos taken at other focal lengths"
    assert after < 0.05 * before
    for i, f in enumerate(TRUE_FOCALS):
        assert _focal(refined, f"img_{i:02d}.jpg") == pytest.approx(f, rel=0.02)
        assert abs(refined.cameras[refined.find_image_with_name(f"img_{i:02d}.jpg").camera_id].params[3]) < 0.05


def test_refinement_is_the_same_run_to_run():
    a, _, _ = refine_per_photo(_collection())
    b, _, _ = refine_per_photo(_collection())
    for image in a.images.values():
        assert list(a.cameras[image.camera_id].params) == list(b.cameras[b.images[image.image_id].camera_id].params)
        assert np.array_equal(image.cam_from_world().matrix(), b.images[image.image_id].cam_from_world().matrix())


def _write_photos(root, recon, exif_of) -> None:
    """JPEGs of the model's size under root/images, with EXIF (make, model, focal mm) or none."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image in recon.images.values():
        photo = Image.fromarray(rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8))
        exif = Image.Exif()
        tags = exif_of(image.name)
        if tags is not None:
            exif[0x010F], exif[0x0110] = tags[0], tags[1]
            if tags[2] is not None:
                exif.get_ifd(0x8769)[0x920A] = tags[2]
        photo.save(root / "images" / image.name, exif=exif)


def test_choice_follows_the_exif_and_the_mode(tmp_path):
    recon = _collection()
    same = tmp_path / "same"
    _write_photos(same, recon, lambda name: ("Canon", "EOS", 50.0))
    assert not choose_per_photo(recon, same / "images").refine  # one camera, one focal length
    assert choose_per_photo(recon, same / "images", "per-photo").refine
    bare = tmp_path / "bare"
    _write_photos(bare, recon, lambda name: None)
    assert not choose_per_photo(recon, bare / "images").refine  # video frames, renders: no EXIF
    mixed = tmp_path / "mixed"
    _write_photos(mixed, recon, lambda name: ("Canon", "EOS", 50.0 if name < "img_04" else 200.0))
    choice = choose_per_photo(recon, mixed / "images")
    assert choice.refine and "2 different cameras or focal lengths" in choice.reason
    assert not choose_per_photo(recon, mixed / "images", "as-given").refine
    own = _collection(shared_focal=None)  # every photo has its own camera already
    assert not choose_per_photo(own, mixed / "images", "per-photo").refine


def test_a_photo_collection_under_one_camera_loads_with_per_photo_cameras(tmp_path, capsys):
    recon = _collection()
    root = tmp_path / "collection"
    (root / "sparse" / "0").mkdir(parents=True)
    recon.write_text(str(root / "sparse" / "0"))
    for extra in ("rigs.txt", "frames.txt"):  # the classic three-file layout, as most datasets ship it
        (root / "sparse" / "0" / extra).unlink(missing_ok=True)
    _write_photos(root, recon, lambda name: ("Nikon", "D" + name[4:6], None))
    cache = tmp_path / "cache"
    scene = load_scene(root, test_every=4, cache_dir=cache)
    err = capsys.readouterr().err
    assert "info: per-photo intrinsics" in err
    views = {v.name: v for v in scene.train + scene.test}
    for i, f in enumerate(TRUE_FOCALS):
        assert views[f"img_{i:02d}.jpg"].camera.fx == pytest.approx(f, rel=0.02)
    assert len(list((cache / "intrinsics").iterdir())) == 1  # cached beside the undistorted images
    again = load_scene(root, test_every=4, cache_dir=cache)
    assert [v.camera.fx for v in again.train] == [v.camera.fx for v in scene.train]
    assert "reused the refined model" in capsys.readouterr().out
    given = load_scene(root, test_every=4, cache_dir=cache, intrinsics="as-given", verbose=False)
    assert {v.camera.fx for v in given.train} == {220.0}
    with pytest.raises(ValueError, match="intrinsics must be one of"):
        load_scene(root, intrinsics="per-image")


def test_the_statue_is_a_collection_under_one_camera():
    root = shared_dataset("statue_colmap")
    if root is None:
        pytest.skip("../shared/data/statue_colmap is not here")
    from splatlab.data.colmap import read_model

    recon, _ = read_model(root / "sparse" / "0")
    choice = choose_per_photo(recon, root / "images")
    assert choice.refine and "40 photos share COLMAP camera 1" in choice.reason

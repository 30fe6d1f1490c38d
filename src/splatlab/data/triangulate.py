"""Points for a dataset that has poses but no point cloud: triangulation from the known poses.

Phone captures in the instant-ngp / nerfstudio layout (``transforms.json`` without
``ply_file_path``) come with poses and no points. Random initial points in a box then leave the
optimiser to find the geometry, and it finds it badly: Gaussians that explain one training view
from the wrong depth stay as floaters in front of the others. 3DGS starts from SfM points; when
the poses are known, the points are what COLMAP's ``point_triangulator`` gives (the recipe of its
FAQ, "reconstruct sparse model from known camera poses"; nerfstudio's ns-process-data runs full
SfM instead). All pycolmap, on the CPU:

1. SIFT features on the training views as loaded (undistorted pinhole images), with the
   database's cameras set to the views' known intrinsics;
2. matching: exhaustive up to ``EXHAUSTIVE_MAX`` views, else each view with its nearest views by
   camera position and viewing direction (the poses are known, so they choose the pairs);
3. ``triangulate_points`` with the poses held fixed (no bundle adjustment of the cameras);
4. points seen by fewer than ``MIN_TRACK`` views are dropped.

Only the training views are used: the held-out views must not inform the model.

Cache: ``<cache root>/triangulated/<key>/points.npz``, keyed by the views' names, cameras and
pixels, so a second run (or a resumed one) reuses the points. The dataset is never written.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .images import import_pycolmap, log, warn

TRIANGULATE_VERSION = 1
EXHAUSTIVE_MAX = 60  # views; above, each is matched with its NEIGHBOURS nearest views
NEIGHBOURS = 20
MAX_FEATURES = 4096  # SIFT features per view
MIN_TRACK = 3  # a point must be seen by at least this many views (two-view points are noisy)
MIN_POINTS = 100  # fewer points than this is a failed triangulation: the caller falls back


def views_key(views, pixels) -> str:
    """A hash of what triangulation depends on: names, cameras and pixels of the views."""
    h = hashlib.sha1(f"v{TRIANGULATE_VERSION}".encode())
    for i, v in enumerate(views):
        cam = v.camera
        h.update(v.name.encode())
        h.update(np.asarray([cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height], np.float64).tobytes())
        h.update(cam.viewmat.double().cpu().numpy().tobytes())
        h.update(np.ascontiguousarray(pixels(i)).tobytes())
    return h.hexdigest()[:16]


def points_from_poses(views, cache_root: Path | None, verbose: bool = True, seed: int = 0, pixels=None):
    """(points [P, 3] float32, colours [P, 3] float32 in [0, 1], per view the [K] int64 rows of
    the points it observed) triangulated from `views`, or None when triangulation fails (too few
    matches): the caller then falls back to random points. `pixels(i)` gives view i's uint8
    [H, W, 3] image (default: the view's own; a process holding only its share of the views
    decodes the others one at a time)."""
    if len(views) < 2:
        return None
    if pixels is None:
        def pixels(i):
            return views[i].image.cpu().numpy()
    key = views_key(views, pixels)
    folder = (cache_root / "triangulated" / key) if cache_root is not None else None
    cached = _read_cached(folder)
    if cached is not None:
        log(verbose, f"reusing {len(cached[0])} points triangulated from the known poses ({folder})")
        return cached
    if folder is not None:  # a private work folder next to the cache entry, renamed into place
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            folder = None  # a read-only cache: triangulate without keeping the result
    tmp = Path(tempfile.mkdtemp(prefix=f"{key}.tmp-", dir=None if folder is None else folder.parent))
    try:
        t0 = time.perf_counter()
        try:
            points, colors, seen_by = _triangulate(views, pixels, tmp, seed)  # [P, 3], [P, 3], [O, 2]
        except Exception as exc:  # noqa: BLE001 - pycolmap's errors: fall back, and say why
            warn(f"triangulation from the known poses failed ({type(exc).__name__}: {exc}); "
                 "using random initial points instead")
            return None
        log(verbose, f"triangulated {len(points)} points from the known poses of {len(views)} views "
            f"in {time.perf_counter() - t0:.1f} s")
        if len(points) < MIN_POINTS:
            warn(f"triangulation from the known poses found only {len(points)} points (need {MIN_POINTS}); "
                 "using random initial points instead")
            return None
        if folder is not None:
            _store(folder, tmp, points, colors, seen_by, len(views))
        return _as_tensors(points, colors, seen_by, len(views))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _store(folder: Path, tmp: Path, points, colors, seen_by, num_views: int) -> None:
    """Write the cache entry atomically: a complete folder or none (a read-only cache is skipped)."""
    entry = tmp / "entry"
    try:
        entry.mkdir()
        np.savez(entry / "points.npz", points=points, colors=colors, seen_by=seen_by, num_views=num_views)
        entry.replace(folder)  # fails when another process stored it first: theirs is as good
    except OSError:
        pass


def _read_cached(folder: Path | None):
    if folder is None or not (folder / "points.npz").is_file():
        return None
    try:
        data = np.load(folder / "points.npz")
        return _as_tensors(data["points"], data["colors"], data["seen_by"], int(data["num_views"]))
    except (OSError, KeyError, ValueError):
        return None


def _as_tensors(points: np.ndarray, colors: np.ndarray, seen_by: np.ndarray, num_views: int):
    """seen_by [O, 2] (view, point) pairs -> per view the [K] int64 point rows it observed."""
    ids = [torch.from_numpy(seen_by[seen_by[:, 0] == i, 1].astype(np.int64)) for i in range(num_views)]
    return torch.from_numpy(points), torch.from_numpy(colors), ids


def _triangulate(views, pixels, work: Path, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pycolmap = import_pycolmap()
    image_dir = work / "images"
    image_dir.mkdir()
    names = [f"{i:05d}.png" for i in range(len(views))]  # safe names; order = views
    for i, name in enumerate(names):
        Image.fromarray(np.ascontiguousarray(pixels(i))).save(image_dir / name, compress_level=1)
    database = work / "database.db"
    level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 2  # its per-image logging would flood the run's log
    try:
        _extract(pycolmap, database, image_dir, names, views)
        _match(pycolmap, database, views, seed)
        recon = _posed_reconstruction(pycolmap, database, names, views)
        out = work / "sparse"
        out.mkdir()
        options = pycolmap.IncrementalPipelineOptions()
        options.num_threads = -1
        recon = pycolmap.triangulate_points(recon, database, image_dir, out, options=options)
    finally:
        pycolmap.logging.minloglevel = level
    view_of = {image_id: names.index(image.name) for image_id, image in recon.images.items()}
    pts = [p for p in recon.points3D.values() if p.track.length() >= MIN_TRACK]
    points = np.array([p.xyz for p in pts], dtype=np.float32).reshape(-1, 3)  # [P, 3]
    colors = np.array([p.color for p in pts], dtype=np.float32).reshape(-1, 3) / 255.0  # [P, 3]
    seen_by = np.array([(view_of[e.image_id], k) for k, p in enumerate(pts) for e in p.track.elements],
                       dtype=np.int64).reshape(-1, 2)  # [O, 2] (view, point)
    return points, colors, seen_by


def _extract(pycolmap, database: Path, image_dir: Path, names: list[str], views) -> None:
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "PINHOLE"
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.use_gpu = False
    extraction.num_threads = -1
    extraction.max_image_size = 1600
    extraction.sift.max_num_features = MAX_FEATURES
    extraction.sift.peak_threshold = 0.004  # as photos.py: COLMAP's default finds too few on small images
    extraction.sift.first_octave = -1 if max(views[0].width, views[0].height) < 1000 else 0
    pycolmap.extract_features(database, image_dir, image_names=names, camera_mode=pycolmap.CameraMode.PER_IMAGE,
                              reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)
    db = pycolmap.Database.open(str(database))
    try:  # the known intrinsics, for geometric verification
        for name, v in zip(names, views):
            image = db.read_image_with_name(name)
            camera = db.read_camera(image.camera_id)
            camera.params = [v.camera.fx, v.camera.fy, v.camera.cx, v.camera.cy]
            camera.has_prior_focal_length = True
            db.update_camera(camera)
    finally:
        db.close()


def _match(pycolmap, database: Path, views, seed: int) -> None:
    matching = pycolmap.FeatureMatchingOptions()
    matching.use_gpu = False
    matching.num_threads = -1
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = int(seed)
    if len(views) <= EXHAUSTIVE_MAX:
        pycolmap.match_exhaustive(database, matching_options=matching, verification_options=verification,
                                  device=pycolmap.Device.cpu)
        return
    pairs_file = database.with_name("pairs.txt")
    pairs_file.write_text("".join(f"{a:05d}.png {b:05d}.png\n" for a, b in nearest_pairs(views, NEIGHBOURS)))
    pairing = pycolmap.ImportedPairingOptions()
    pairing.match_list_path = str(pairs_file)
    pycolmap.match_image_pairs(database, matching_options=matching, pairing_options=pairing,
                               verification_options=verification, device=pycolmap.Device.cpu)


def nearest_pairs(views, k: int) -> list[tuple[int, int]]:
    """Each view with its `k` nearest views, by camera distance (in units of the cameras' spread)
    plus the angle between viewing directions, so that views facing away are not paired."""
    pos = torch.stack([v.camera.position.double().cpu() for v in views])  # [N, 3]
    fwd = torch.stack([v.camera.c2w.double().cpu()[:3, 2] for v in views])  # [N, 3] optical axes
    spread = max(float((pos - pos.mean(0)).norm(dim=1).median()), 1e-9)
    angle = torch.arccos((fwd @ fwd.T).clamp(-1, 1))  # [N, N] radians
    cost = torch.cdist(pos, pos) / spread + angle / (math.pi / 4)
    cost.fill_diagonal_(float("inf"))
    pairs = set()
    for i in range(len(views)):
        for j in cost[i].topk(min(k, len(views) - 1), largest=False).indices.tolist():
            pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


def _posed_reconstruction(pycolmap, database: Path, names: list[str], views):
    """A reconstruction with every view registered at its known pose, with the database's ids."""
    db = pycolmap.Database.open(str(database))
    try:
        recon = pycolmap.Reconstruction()
        for name, v in zip(names, views):
            image = db.read_image_with_name(name)
            camera = db.read_camera(image.camera_id)
            if not recon.exists_camera(camera.camera_id):
                recon.add_camera_with_trivial_rig(camera)
            w2c = v.camera.viewmat.double().cpu().numpy()  # [4, 4] OpenCV world->camera
            pose = pycolmap.Rigid3d(pycolmap.Rotation3d(w2c[:3, :3]), w2c[:3, 3])
            posed = pycolmap.Image(name=name, camera_id=camera.camera_id, image_id=image.image_id)
            recon.add_image_with_trivial_frame(posed, pose)
    finally:
        db.close()
    return recon

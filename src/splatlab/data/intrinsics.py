"""Per-photo intrinsics for a photo collection that a COLMAP model puts under one shared camera.

COLMAP run with ``--ImageReader.single_camera 1`` (or a dataset made so, like the shared statue:
40 Flickr photos from 19 cameras, zoomed from the torch alone to the whole pedestal) gives every
photo one focal length and one lens distortion. SfM absorbs the error into poses and points, but
the photos then disagree with each other by a pixel or more, and a radiance field trained on them
comes out soft. When the photos that share a camera were taken by different cameras or at
different focal lengths (their EXIF says so), each gets its own copy of the camera and one global
bundle adjustment (pycolmap, Ceres) refines its focal length and radial distortion together with
the poses and points. The principal point stays where it is: with a narrow field of view it is
not constrained and the adjustment diverges when it may move.

The model's every image takes part, the held-out ones too, exactly as in the SfM that made the
model (it already placed them from their features); no pixel colour of a held-out photo is used.
The result is cached under the dataset's cache folder, keyed by the model files, and computed
single-threaded so that every process of a distributed run gets the same cameras bit for bit.

Measured (docs/real_captures.md): statue, mean reprojection error 1.27 -> 1.06 px; +0.40 dB and
SSIM 0.609 -> 0.644 on held-out views at 5 minutes.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .images import exif_camera, import_pycolmap, log, warn

# Bump when the refinement changes, so that cached models are recomputed.
REFINE_VERSION = 1
# A refined focal length this far from the shared one (factor) means the adjustment ran away.
MAX_FOCAL_CHANGE = 4.0
INTRINSICS_MODES = ("auto", "as-given", "per-photo")


@dataclass(frozen=True)
class IntrinsicsChoice:
    refine: bool
    reason: str


def choose_per_photo(recon, images_dir: Path, mode: str = "auto") -> IntrinsicsChoice:
    """Whether to give the photos that share a camera their own intrinsics, and why.

    "auto": yes when some camera of the model is shared by photos whose EXIF names more than one
    camera (make, model, focal length): a photo collection under one camera. "per-photo": yes
    whenever a camera is shared. "as-given": never."""
    shared = _shared_cameras(recon)
    if mode == "as-given":
        return IntrinsicsChoice(False, "camera intrinsics as the model gives them (--intrinsics as-given)")
    if not shared:
        return IntrinsicsChoice(False, "camera intrinsics as the model gives them: no camera is shared by photos")
    if mode == "per-photo":
        return IntrinsicsChoice(True, "per-photo intrinsics (--intrinsics per-photo): each photo's focal length "
                                      "and distortion refined by bundle adjustment")
    for camera_id, image_ids in shared.items():
        kinds = {exif_camera(images_dir / recon.images[i].name) for i in image_ids} - {None}
        if len(kinds) >= 2:
            return IntrinsicsChoice(True, (
                f"per-photo intrinsics: {len(image_ids)} photos share COLMAP camera {camera_id} but their EXIF names "
                f"{len(kinds)} different cameras or focal lengths (a photo collection); each photo's focal length and "
                "distortion are refined by bundle adjustment (--intrinsics as-given keeps the model's)"))
    return IntrinsicsChoice(False, "camera intrinsics as the model gives them: the photos sharing a camera agree "
                                   "in their EXIF (one camera, one focal length)")


def _shared_cameras(recon) -> dict[int, list[int]]:
    """camera id -> the registered image ids that use it, for cameras used by two or more."""
    users: dict[int, list[int]] = {}
    for image_id, image in recon.images.items():
        if image.has_pose:
            users.setdefault(image.camera_id, []).append(image_id)
    return {c: sorted(ids) for c, ids in users.items() if len(ids) >= 2}


def split_cameras(recon):
    """A copy of `recon` in which every registered image has its own camera (a copy of its own),
    with poses, points and tracks unchanged (point ids kept)."""
    pycolmap = import_pycolmap()
    out = pycolmap.Reconstruction()
    for k, (image_id, image) in enumerate(sorted(recon.images.items())):
        if not image.has_pose:
            continue
        cam = recon.cameras[image.camera_id]
        out.add_camera_with_trivial_rig(pycolmap.Camera(model=cam.model, width=cam.width, height=cam.height,
                                                        params=list(cam.params), camera_id=k + 1))
        points = pycolmap.Point2DList([pycolmap.Point2D(p.xy) for p in image.points2D])
        out.add_image_with_trivial_frame(pycolmap.Image(name=image.name, points2D=points, camera_id=k + 1,
                                                        image_id=image_id), image.cam_from_world())
    for point_id, point in recon.points3D.items():
        track = pycolmap.Track()
        for el in point.track.elements:
            if out.exists_image(el.image_id):
                track.add_element(el.image_id, el.point2D_idx)
        if track.length() >= 2:
            out.add_point3D_with_id(point_id, pycolmap.Point3D(xyz=point.xyz, track=track, color=point.color))
    return out


def refine_per_photo(recon):
    """(refined reconstruction, mean reprojection error before, after) in pixels.

    Raises ValueError when the adjustment does not give usable cameras (focal lengths not
    finite, or moved by more than MAX_FOCAL_CHANGE), so that the caller keeps the model's."""
    pycolmap = import_pycolmap()
    out = split_cameras(recon)
    out.update_point_3d_errors()  # the errors of the model as read are not stored with it
    before = out.compute_mean_reprojection_error()
    options = pycolmap.BundleAdjustmentOptions()
    options.refine_focal_length = True
    options.refine_extra_params = True  # radial distortion
    options.refine_principal_point = False  # unconstrained at narrow fields of view: it diverges
    options.print_summary = False
    options.ceres.solver_options.num_threads = 1  # the same result in every process, run to run
    pycolmap.bundle_adjustment(out, options)
    after = out.compute_mean_reprojection_error()
    for image in out.images.values():
        old = recon.cameras[recon.images[image.image_id].camera_id].mean_focal_length()
        new = out.cameras[image.camera_id].mean_focal_length()
        if not (math.isfinite(new) and new > 0 and 1 / MAX_FOCAL_CHANGE <= new / old <= MAX_FOCAL_CHANGE):
            raise ValueError(f"image {image.name}: focal length went from {old:.1f} to {new:.1f} px")
    if not (math.isfinite(after) and after <= before):
        raise ValueError(f"mean reprojection error went from {before:.3f} to {after:.3f} px")
    return out, before, after


def _cache_key(model_files: dict) -> str:
    pycolmap = import_pycolmap()
    stats = {k: [str(Path(p).resolve()), Path(p).stat().st_size, Path(p).stat().st_mtime_ns]
             for k, p in sorted(model_files.items())}
    payload = json.dumps([REFINE_VERSION, pycolmap.__version__, stats])
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def per_photo_model(recon, model_files: dict, cache_root: Path | None, verbose: bool = True):
    """`recon` with per-photo intrinsics, from the cache when it holds it; `recon` itself (and a
    warning) when the adjustment fails. The cache is written atomically (a folder renamed into place)."""
    pycolmap = import_pycolmap()
    folder = None if cache_root is None else cache_root / "intrinsics" / _cache_key(model_files)
    if folder is not None and (folder / "done").is_file():
        cached = pycolmap.Reconstruction()
        try:
            cached.read_binary(str(folder))
            log(verbose, f"per-photo intrinsics: reused the refined model in {folder}")
            return cached
        except Exception as exc:  # noqa: BLE001 - a damaged cache is recomputed
            warn(f"{folder}: cannot read the cached refined model ({exc}); refining again")
    log(verbose, f"per-photo intrinsics: bundle adjustment of {recon.num_reg_images()} photos and "
                 f"{recon.num_points3D()} points (once; cached)")
    level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 2  # Ceres' per-iteration report would flood the run's log
    try:
        refined, before, after = refine_per_photo(recon)
    except (ValueError, RuntimeError) as exc:
        warn(f"per-photo intrinsics: bundle adjustment gave no usable cameras ({exc}); using the model's own")
        return recon
    finally:
        pycolmap.logging.minloglevel = level
    log(verbose, f"per-photo intrinsics: mean reprojection error {before:.2f} -> {after:.2f} px "
                 f"over {refined.num_reg_images()} photos")
    if folder is not None:
        _write_cache(refined, folder)
    return refined


def _write_cache(recon, folder: Path) -> None:
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
        recon.write_binary(str(tmp))
        (tmp / "done").write_text("ok\n")
        try:
            tmp.rename(folder)
        except OSError:  # another process wrote it first: theirs is the same
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        warn(f"cannot cache the refined model in {folder} ({exc}); it will be refined again next time")

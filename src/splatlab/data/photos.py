"""A folder of photos without poses: structure-from-motion with pycolmap, then a COLMAP scene.

Pipeline (all pycolmap, CPU): SIFT feature extraction on images limited to
``SfMOptions.max_image_size`` pixels on their longer side and ``max_num_features`` features (no
2x upsampling of photos of 1000 px or more: 5x faster, and such photos have features enough);
matching, exhaustive for up to ``exhaustive_max_images`` photos and sequential (by file name,
``sequential_overlap`` neighbours, as phone captures are ordered) above; incremental mapping. The
largest reconstruction is kept, the number of registered photos reported, and the result is
loaded like any COLMAP dataset (so distortion from the SIMPLE_RADIAL model is undistorted).
Bundle adjustment uses fewer iterations than COLMAP's defaults (its "low quality" preset: half
the time, the same reprojection error on a 50-photo phone capture).

Speed on this project's 2-core machine (busy): 12 photos of 400x600, exhaustive: ~7 s; the fox
capture's 50 photos at 720x1280, sequential: ~70 s (about 40 s unloaded).

Cache: ``<cache root>/sfm/`` (in the per-user cache by default, see scene.py) holds ``database.db``,
``sparse/0/`` (COLMAP binary model) and ``inputs.json``, written last, listing the photos (name,
size, modification time) and the options. A later load with the same photos and options reuses
the model; anything else reruns SfM. The photos themselves are never modified.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from .images import DatasetError, import_pycolmap, list_image_files, log, parallel_map, read_exif, read_image, warn
from .scene import LoadOptions, Scene, colmap_model_files

SFM_VERSION = 1


@dataclass
class SfMOptions:
    """Structure-from-motion settings for folders of photos."""

    max_image_size: int = 1600  # features are extracted on images resized to at most this (longer side)
    max_num_features: int = 2048  # SIFT features per image (matching cost grows with its square)
    peak_threshold: float = 0.004  # SIFT contrast threshold; COLMAP's 0.0067 finds too few on small photos
    first_octave: int | None = None  # SIFT first octave; None: -1 (upsampled, slow) below 1000 px, else 0
    fast_bundle_adjustment: bool = True  # fewer BA iterations/refinements (COLMAP's low-quality preset)
    matcher: str = "auto"  # "auto" | "exhaustive" | "sequential"
    exhaustive_max_images: int = 40  # "auto": exhaustive matching up to this many photos, sequential above
    sequential_overlap: int = 10  # sequential matching: each photo is matched with this many following ones
    camera_model: str = "SIMPLE_RADIAL"  # COLMAP camera model to estimate
    single_camera: bool | None = None  # None: one shared camera when all photos have the same size and EXIF camera
    num_threads: int = -1  # -1: all cores
    seed: int = 0  # random seed for the mapper (repeatable results)
    min_registered: int = 2  # fewer registered photos than this is an error


def _manifest(photo_dir: Path, names: list[str], sfm: SfMOptions) -> dict:
    entries = []
    for name in names:
        st = (photo_dir / name).stat()
        entries.append([name, st.st_size, st.st_mtime_ns])
    return {"version": SFM_VERSION, "images": entries, "options": asdict(sfm)}


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def _run_sfm(photo_dir: Path, names: list[str], sfm_dir: Path, sfm: SfMOptions, verbose: bool) -> dict:
    pycolmap = import_pycolmap()
    if sfm_dir.exists():
        for stale in ("database.db", "database.db-wal", "database.db-shm", "inputs.json"):
            (sfm_dir / stale).unlink(missing_ok=True)
        for stale in ("sparse", "models"):
            shutil.rmtree(sfm_dir / stale, ignore_errors=True)
    sfm_dir.mkdir(parents=True, exist_ok=True)
    database = sfm_dir / "database.db"

    single = sfm.single_camera
    if single is None:
        single = len({read_exif(photo_dir / n) for n in names}) == 1
    camera_mode = pycolmap.CameraMode.SINGLE if single else pycolmap.CameraMode.AUTO
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = sfm.camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = int(sfm.max_image_size)
    extraction.num_threads = int(sfm.num_threads)
    extraction.use_gpu = False
    extraction.sift.max_num_features = int(sfm.max_num_features)
    extraction.sift.peak_threshold = float(sfm.peak_threshold)
    first_octave = sfm.first_octave
    if first_octave is None:
        longest = max(max(_size(photo_dir / n)) for n in names)
        first_octave = -1 if min(longest, sfm.max_image_size) < 1000 else 0
    extraction.sift.first_octave = int(first_octave)
    device = pycolmap.Device.cpu

    timings = {}
    t0 = time.perf_counter()
    log(verbose, f"SfM 1/3: extracting features from {len(names)} photos "
        f"(max {sfm.max_image_size} px, {sfm.max_num_features} features, "
        f"{'one shared camera' if single else 'cameras per EXIF/size'}, {sfm.camera_model})")
    pycolmap.extract_features(database, photo_dir, image_names=names, camera_mode=camera_mode,
                              reader_options=reader, extraction_options=extraction, device=device)
    timings["features_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    matcher = sfm.matcher
    if matcher == "auto":
        matcher = "exhaustive" if len(names) <= sfm.exhaustive_max_images else "sequential"
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = int(sfm.num_threads)
    matching.use_gpu = False
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = int(sfm.seed)
    if matcher == "exhaustive":
        log(verbose, f"SfM 2/3: exhaustive matching ({len(names) * (len(names) - 1) // 2} pairs)")
        pycolmap.match_exhaustive(database, matching_options=matching, verification_options=verification,
                                  device=device)
    elif matcher == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = int(sfm.sequential_overlap)
        log(verbose, f"SfM 2/3: sequential matching (overlap {pairing.overlap})")
        pycolmap.match_sequential(database, matching_options=matching, pairing_options=pairing,
                                  verification_options=verification, device=device)
    else:
        raise ValueError(f"SfMOptions.matcher must be 'auto', 'exhaustive' or 'sequential', got {sfm.matcher!r}")
    timings["matching_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    log(verbose, "SfM 3/3: incremental mapping")
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = int(sfm.num_threads)
    mapping.random_seed = int(sfm.seed)
    if sfm.fast_bundle_adjustment:
        mapping.ba_local_max_num_iterations = 12
        mapping.ba_global_max_num_iterations = 25
        mapping.ba_global_frames_ratio = 1.2
        mapping.ba_global_points_ratio = 1.2
        mapping.ba_global_max_refinements = 2
    models_dir = sfm_dir / "models"
    models_dir.mkdir(exist_ok=True)
    progress = {"registered": 0}

    def next_image():
        progress["registered"] += 1
        if verbose and progress["registered"] % 10 == 0:
            log(verbose, f"  ... {progress['registered']} photos registered")

    recons = pycolmap.incremental_mapping(database, photo_dir, models_dir, options=mapping,
                                          next_image_callback=next_image)
    timings["mapping_s"] = time.perf_counter() - t0
    if not recons:
        raise DatasetError(
            f"{photo_dir}: structure-from-motion failed: no reconstruction from {len(names)} photos "
            "(too few matches between them? photos need to overlap, with the scene seen from nearby viewpoints)"
        )
    best = max(recons.values(), key=lambda r: r.num_reg_images())
    out = sfm_dir / "sparse" / "0"
    out.mkdir(parents=True, exist_ok=True)
    best.write_binary(str(out))
    shutil.rmtree(models_dir, ignore_errors=True)
    return {"registered": best.num_reg_images(), "models": len(recons), "matcher": matcher, **timings}


def load_photos(
    photo_dir: Path, opts: LoadOptions, *, dataset_dir: Path, undistort_cache: bool = True
) -> Scene:
    from .colmap import load_colmap

    sfm = opts.sfm if opts.sfm is not None else SfMOptions()
    files = list_image_files(photo_dir)
    if not files:
        raise DatasetError(f"{photo_dir}: no image files for structure-from-motion")
    if len(files) < 2:
        raise DatasetError(f"{photo_dir}: structure-from-motion needs at least 2 photos, found {len(files)}")
    names = [f.name for f in files]
    sfm_dir = opts.cache_root / "sfm"
    manifest = _manifest(photo_dir, names, sfm)
    manifest_file = sfm_dir / "inputs.json"
    model_dir = sfm_dir / "sparse" / "0"
    previous = None
    if manifest_file.is_file() and colmap_model_files(model_dir) is not None:
        try:
            previous = json.loads(manifest_file.read_text())
        except (OSError, json.JSONDecodeError):
            previous = None
    if previous is not None and {k: previous.get(k) for k in manifest} == manifest:
        result = previous.get("result", {})
        log(opts.verbose, f"reusing the structure-from-motion result in {sfm_dir} "
            f"({result.get('registered', '?')} of {len(names)} photos registered)")
    else:
        # Every photo must decode before a long SfM run; errors name the file.
        parallel_map(lambda f: read_image(f).shape, files, desc="checking photos", verbose=opts.verbose)
        pycolmap = import_pycolmap()
        level = pycolmap.logging.minloglevel
        if not opts.verbose:
            pycolmap.logging.minloglevel = 2  # warnings and errors only
        t0 = time.perf_counter()
        try:
            result = _run_sfm(photo_dir, names, sfm_dir, sfm, opts.verbose)
        finally:
            pycolmap.logging.minloglevel = level
        result["total_s"] = time.perf_counter() - t0
        manifest["result"] = result
        manifest_file.write_text(json.dumps(manifest, indent=1))
        log(opts.verbose, f"structure-from-motion: {result['registered']} of {len(names)} photos registered "
            f"in {result['total_s']:.1f} s (features {result['features_s']:.1f} s, matching "
            f"{result['matching_s']:.1f} s, mapping {result['mapping_s']:.1f} s); model in {model_dir}")
    registered = int(result.get("registered", 0))
    if registered < sfm.min_registered:
        raise DatasetError(
            f"{photo_dir}: structure-from-motion registered only {registered} of {len(names)} photos "
            f"(need {sfm.min_registered}); the photos may not overlap enough"
        )
    if registered < len(names):
        warn(f"{photo_dir}: structure-from-motion registered {registered} of {len(names)} photos; "
             "the others are left out")
    info = {"registered": registered, "num_photos": len(names), "sfm_dir": str(sfm_dir), "sfm": result}
    load_opts = opts if undistort_cache else LoadOptions(**{**opts.__dict__, "cache_root": None})
    return load_colmap(dataset_dir, load_opts, model_dir=model_dir, images_dir=photo_dir, kind="photos",
                       info=info, downscaled_folders=False)

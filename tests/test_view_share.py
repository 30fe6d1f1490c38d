"""Loading a share of the views (LoadOptions.share, data-parallel training): the pixels of the
views at index rank, rank + N, ... of each split only; every view's camera, name and alpha /
mask flags exactly as a full load has them, without decoding the others."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fixtures_data import write_blender, write_colmap_text, write_transforms
from splatlab.data import load_scene
from splatlab.data.scene import ViewShare


def _camera(view) -> tuple:
    c = view.camera
    return (c.fx, c.fy, c.cx, c.cy, c.width, c.height, c.name, c.viewmat.tolist())


def check_shares(path: Path, **kwargs) -> None:
    full = load_scene(path, verbose=False, cache_dir=False, **kwargs)
    for rank in range(2):
        part = load_scene(path, verbose=False, cache_dir=False, share=ViewShare(rank, 2), **kwargs)
        assert part.extent == full.extent and part.background == full.background
        for split in ("train", "test"):
            views, reference = getattr(part, split), getattr(full, split)
            assert [v.name for v in views] == [v.name for v in reference]
            for k, (view, ref) in enumerate(zip(views, reference)):
                assert view.loaded == (k % 2 == rank), (split, k, rank)
                assert _camera(view) == _camera(ref), f"{split} {view.name}: camera differs from a full load"
                assert (view.width, view.height, view.has_alpha, view.has_mask) == \
                    (ref.width, ref.height, ref.has_alpha, ref.has_mask)
                if view.loaded:
                    assert torch.equal(view.image, ref.image)
                    for name in ("mask", "alpha"):
                        mine, theirs = getattr(view, name), getattr(ref, name)
                        assert (mine is None) == (theirs is None) and (mine is None or torch.equal(mine, theirs))
                else:
                    assert view.image is view.mask is view.alpha is view.inv_depth is None
                    with pytest.raises(RuntimeError, match="not loaded here"):
                        view.image_float()


def test_blender_share(tmp_path):
    write_blender(tmp_path, n_train=5, n_test=3, size=16)
    check_shares(tmp_path)
    check_shares(tmp_path, downscale=2)


def test_colmap_share_with_distortion_and_masks(tmp_path):
    write_colmap_text(tmp_path, n_images=7, model="SIMPLE_RADIAL", extra_params=(0.05,), with_masks=True)
    check_shares(tmp_path, test_every=3)
    check_shares(tmp_path, test_every=3, downscale=2)


def test_nerfstudio_share_with_distortion(tmp_path):
    write_transforms(tmp_path, n=6, missing=1, distortion={"k1": 0.04})
    check_shares(tmp_path, test_every=3, downscale=2)
    write_transforms(tmp_path / "pinhole", n=5, missing=0)
    check_shares(tmp_path / "pinhole", test_every=2, downscale=2)


def test_view_share_rejects_a_bad_rank():
    with pytest.raises(ValueError, match="rank must be in"):
        ViewShare(2, 2)

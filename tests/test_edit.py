"""`splatlab edit` and splatlab.edit: what each rule removes, and that moved models render the same.

Expectations are computed here independently of the code under test (masks from the definition of
each rule, images from the renderer with a correspondingly moved camera).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from splatlab import Camera, RenderSettings, rasterize
from splatlab.cli import main as cli_main
from splatlab.edit import (
    EditConfig, edit_gaussians, euler_to_rotmat, rotate_sh, similarity_transform,
)
from splatlab.gaussians import Gaussians
from splatlab.geometry import up_from_cameras
from splatlab.io import export_model, read_model, write_ply
from splatlab.metrics import psnr
from splatlab.sh import eval_sh

from fixtures_data import ring_cameras, write_blender
from helpers import make_gaussians, random_scene

try:
    import pxr  # noqa: F401

    HAVE_USD = True
except ImportError:
    HAVE_USD = False


def _cube(n: int = 2000, seed: int = 0) -> Gaussians:
    g = random_scene(n, sh_degree=3, seed=seed, dtype=torch.float32, spread=2.0, depth=0.0)
    return g


def _same_rows(a: Gaussians, b: Gaussians) -> None:
    for name, value in a.params().items():
        assert torch.equal(value, getattr(b, name)), name


# ---- crop ----------------------------------------------------------------------------------------


def test_crop_box_keeps_exactly_the_gaussians_whose_centres_lie_inside():
    g = _cube()
    g.means[0] = torch.tensor([0.5, -0.25, 1.0])  # exactly on the boundary: inclusive
    box = (-0.5, -0.25, -1.0, 0.5, 1.0, 1.0)
    inside = [(box[0] <= x <= box[3]) and (box[1] <= y <= box[4]) and (box[2] <= z <= box[5])
              for x, y, z in g.means.tolist()]
    result = edit_gaussians(g, EditConfig(crop_box=box))
    assert result.kept.tolist() == inside and inside[0]
    _same_rows(result.gaussians, g[torch.tensor(inside)])  # untouched otherwise
    assert result.summary.removed == (("outside the crop box", len(inside) - sum(inside)),)
    line = result.summary.line()
    assert f"kept {sum(inside):,} of 2,000" in line and f"{2000 - sum(inside):,} outside the crop box" in line

    inverted = edit_gaussians(g, EditConfig(crop_box=box, crop_invert=True))
    assert inverted.kept.tolist() == [not v for v in inside]


def test_crop_sphere_and_the_upright_frame():
    g = _cube(seed=1)
    centre, radius = (0.3, -0.2, 0.1), 0.9
    inside = (g.means.double() - torch.tensor(centre, dtype=torch.float64)).norm(dim=1) <= radius
    assert torch.equal(edit_gaussians(g, EditConfig(crop_sphere=(*centre, radius))).kept, inside)

    # Cameras held with their up along -y: in the upright frame, the model's -y is +z.
    cams = [Camera.look_at((4 * math.cos(a), 0.5, 4 * math.sin(a)), (0, 0, 0), up=(0, -1, 0)) for a in
            torch.linspace(0, 6, 8).tolist()]
    up = up_from_cameras([c.c2w for c in cams])
    assert up[1] < -0.99
    upright_top = edit_gaussians(g, EditConfig(crop_box=(-9, -9, 0.5, 9, 9, 9), crop_frame="upright"), cameras=cams)
    expected = (g.means.double() @ up) >= 0.5  # height along the up direction
    near_boundary = ((g.means.double() @ up) - 0.5).abs() < 1e-6
    assert torch.equal(upright_top.kept | near_boundary, expected | near_boundary)
    with pytest.raises(ValueError, match="up direction"):
        edit_gaussians(g, EditConfig(crop_box=(-9, -9, 0.5, 9, 9, 9), crop_frame="upright"))


def test_cropped_model_renders_the_kept_region_as_before():
    # Two clusters, left and right of a camera's view; crop to the left one.
    left = random_scene(200, sh_degree=3, seed=2, dtype=torch.float32, spread=0.4, depth=0.0)
    right = random_scene(200, sh_degree=3, seed=3, dtype=torch.float32, spread=0.4, depth=0.0)
    left.means[:, 0] -= 1.5
    right.means[:, 0] += 1.5
    g = Gaussians.cat([left, right])
    cam = Camera.look_at((0, -6, 0), (0, 0, 0), width=128, height=64, fov_x=math.radians(60))
    result = edit_gaussians(g, EditConfig(crop_box=(-3, -3, -3, 0, 3, 3)))
    assert len(result.gaussians) == 200
    settings = RenderSettings(background=(1, 1, 1))
    with torch.no_grad():
        before = rasterize(g, cam, settings).image
        after = rasterize(result.gaussians, cam, settings).image
    assert torch.equal(after[:, :48], before[:, :48])  # the left cluster's part of the image: bit for bit
    assert (after[:, 80:] == 1.0).all() and (before[:, 80:] < 0.99).any()  # the right one is gone


def test_an_empty_crop_is_an_error_and_nothing_is_written(tmp_path, capsys):
    g = _cube(100)
    with pytest.raises(ValueError, match=r"contains none of the 100 Gaussians.*nothing written"):
        edit_gaussians(g, EditConfig(crop_box=(10, 10, 10, 11, 11, 11)))
    model = write_ply(tmp_path / "m.ply", g)
    out = tmp_path / "out.ply"
    assert cli_main(["edit", str(model), "--output", str(out), "--crop-sphere", "50", "0", "0", "1"]) == 1
    assert "error: the crop sphere" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ply"]


# ---- removal rules -------------------------------------------------------------------------------


def test_opacity_size_and_distance_rules_remove_what_they_say_and_count_each_once():
    g = _cube(seed=4)
    g.means[:10] *= 40.0  # far outside
    opac, biggest = torch.sigmoid(g.logit_opacities), g.log_scales.exp().max(1).values
    cfg = EditConfig(min_opacity=0.3, max_scale=0.12, max_distance=3.0)
    result = edit_gaussians(g, cfg)
    faint = opac < 0.3
    big = (biggest > 0.12) & ~faint
    centre = g.means.double().median(0).values
    radius = torch.quantile((g.means.double() - centre).norm(dim=1), 0.9)
    far = ((g.means.double() - centre).norm(dim=1) > 3.0 * radius) & ~faint & ~big
    counts = dict(result.summary.removed)
    assert counts["with opacity < 0.3"] == int(faint.sum()) > 0
    assert counts["larger than 0.12"] == int(big.sum()) > 0
    assert sum(v for k, v in counts.items() if k.startswith("farther")) == int(far.sum()) > 0
    assert torch.equal(result.kept, ~(faint | big | far))


def test_density_floaters_are_small_detached_clusters_not_big_sparse_gaussians():
    gen = torch.Generator().manual_seed(0)
    body = make_gaussians(torch.rand(3000, 3, generator=gen), log_scale=-2.5, dtype=torch.float32)
    # Big, sparse Gaussians around the body (a background): far apart, but they touch each other.
    ring = torch.stack([torch.tensor([2 * math.cos(a), 2 * math.sin(a), 0.5]) for a in torch.linspace(0, 6.2, 40)])
    background = make_gaussians(ring, log_scale=math.log(0.3), dtype=torch.float32)
    lonely = make_gaussians(torch.tensor([[4.0, 4, 4], [-3.0, 5, 1]]), log_scale=-3.0, dtype=torch.float32)
    clump = make_gaussians(torch.rand(20, 3, generator=gen) * 0.1 + torch.tensor([0.5, 0.5, 3.0]),
                           log_scale=-3.0, dtype=torch.float32)  # dense inside, detached from the body
    bridge = make_gaussians(torch.tensor([[1.55, 0.5, 0.5], [1.2, 0.9, 0.5]]), log_scale=math.log(0.3),
                            dtype=torch.float32)  # ties the background to the body
    g = Gaussians.cat([body, background, bridge, lonely, clump])
    result = edit_gaussians(g, EditConfig(floaters="density"))
    assert result.kept[:3042].all()  # body, background and bridge stay
    assert not result.kept[3042:].any()  # the two lonely ones and the 20-Gaussian clump go
    assert "22 floaters (detached clusters)" in result.summary.line()


def test_visibility_floaters_need_cameras_and_are_what_few_cameras_see():
    cams = ring_cameras(12)  # around the origin at radius 4, height ~1.5
    g = make_gaussians(torch.tensor([[0.0, 0, 0], [0.2, -0.1, 0.3], [0.0, 0.0, 40.0], [0.0, 0.0, -40.0]]),
                       dtype=torch.float32)
    result = edit_gaussians(g, EditConfig(floaters="visibility", floater_min_views=3), cameras=cams)
    seen = [sum(1 for c in cams if 0 <= (p := c.project(g.means[i:i + 1].double())[0])[0] <= c.width
                and 0 <= p[1] <= c.height and p[2] > 0) for i in range(4)]
    assert result.kept.tolist() == [s >= 3 for s in seen] == [True, True, False, False]
    with pytest.raises(ValueError, match="needs the training cameras"):
        edit_gaussians(g, EditConfig(floaters="visibility"))


def test_an_edit_that_removes_everything_is_refused():
    with pytest.raises(ValueError, match="would remove all 50 Gaussians"):
        edit_gaussians(_cube(50), EditConfig(min_opacity=1.0))


def test_sh_bands_are_dropped_on_request():
    result = edit_gaussians(_cube(50), EditConfig(sh_degree=1))
    assert result.gaussians.sh_degree == 1 and "SH degree 3 -> 1" in result.summary.line()
    with pytest.raises(ValueError, match="cannot raise"):
        edit_gaussians(_cube(50).with_sh_degree(0), EditConfig(sh_degree=2))


# ---- transforms ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mirror", [False, True])
def test_rotated_sh_show_the_rotated_colour(mirror):
    rot = euler_to_rotmat((25.0, -70.0, 160.0))
    if mirror:
        rot = rot @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    gen = torch.Generator().manual_seed(0)
    coeffs = torch.randn(50, 16, 3, generator=gen, dtype=torch.float64)
    dirs = torch.nn.functional.normalize(torch.randn(50, 3, generator=gen, dtype=torch.float64), dim=-1)
    turned = torch.cat([coeffs[:, :1], rotate_sh(coeffs[:, 1:], rot)], dim=1)
    for degree in (1, 2, 3):
        torch.testing.assert_close(eval_sh(degree, turned, dirs @ rot.T), eval_sh(degree, coeffs, dirs),
                                   atol=1e-12, rtol=0)


def test_euler_angles_turn_about_x_then_y_then_z():
    e = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(euler_to_rotmat((90, 0, 0)) @ e[1], e[2])  # y -> z about x
    torch.testing.assert_close(euler_to_rotmat((90, 90, 0)) @ e[1], e[0])  # then z -> x about y
    torch.testing.assert_close(euler_to_rotmat((0, 0, 90)) @ e[0], e[1])


def _moved(camera: Camera, rot: torch.Tensor, scale: float, shift: torch.Tensor) -> Camera:
    c2w = camera.c2w.double()
    new = torch.eye(4, dtype=torch.float64)
    new[:3, :3] = rot @ c2w[:3, :3]
    new[:3, 3] = scale * rot @ c2w[:3, 3] + shift
    return Camera(camera.fx, camera.fy, camera.cx, camera.cy, torch.linalg.inv(new), camera.width, camera.height)


def test_a_moved_model_seen_from_the_moved_camera_renders_the_same_image():
    g = random_scene(400, sh_degree=3, seed=5, dtype=torch.float32)
    g.shN *= 4.0  # strong view-dependent colour, so that unrotated SH would show
    cam = Camera.look_at((0.6, -0.8, -1.0), (0, 0, 4), up=(0, -1, 0), width=96, height=80)
    cfg = EditConfig(rotate=(30.0, 40.0, -110.0), scale=2.5, translate=(1.0, -2.0, 0.5))
    result = edit_gaussians(g, cfg)
    assert "rotated x/y/z by 30/40/-110 deg, scaled x2.5, translated by (1, -2, 0.5)" in result.summary.line()
    moved = _moved(cam, euler_to_rotmat(cfg.rotate), 2.5, torch.tensor(cfg.translate, dtype=torch.float64))
    settings = RenderSettings()
    with torch.no_grad():
        before = rasterize(g, cam, settings).image.clamp(0, 1)
        after = rasterize(result.gaussians, moved, settings).image.clamp(0, 1)
        unrotated = Gaussians(result.gaussians.means, result.gaussians.quats, result.gaussians.log_scales,
                              result.gaussians.logit_opacities, result.gaussians.sh0, g.shN)
        wrong = rasterize(unrotated, moved, settings).image.clamp(0, 1)
    assert psnr(before, after) > 60.0, psnr(before, after)
    assert psnr(before, wrong) < 35.0  # the SH rotation is what makes it right


def test_upright_turns_the_camera_up_onto_z_and_similarity_keeps_dtype():
    cams = [Camera.look_at((4 * math.cos(a), 1.0, 4 * math.sin(a)), (0, 0, 0), up=(0, -1, 0))
            for a in torch.linspace(0, 6, 9).tolist()]
    g = _cube(100)
    result = edit_gaussians(g, EditConfig(upright=True), cameras=cams)
    torch.testing.assert_close(result.up, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-9, rtol=0)
    assert "turned upright" in result.summary.line() and result.gaussians.dtype == torch.float32
    # Moving the cameras the same way gives cameras whose up is +z.
    from splatlab.geometry import rotation_to_z_up

    r = rotation_to_z_up(up_from_cameras([c.c2w for c in cams]))
    moved = [_moved(c, r, 1.0, torch.zeros(3, dtype=torch.float64)) for c in cams]
    torch.testing.assert_close(up_from_cameras([c.c2w for c in moved]), result.up, atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="orthogonal"):
        similarity_transform(g, torch.eye(3) * 2)


# ---- the command ---------------------------------------------------------------------------------


@pytest.mark.parametrize("src, dst", [("ply", "glb"), ("glb", "ply"), ("gltf", "splat"), ("splat", "ply")]
                         + ([("ply", "usdz"), ("usda", "gltf"), ("usdc", "usd")] if HAVE_USD else []))
def test_every_format_in_and_out(tmp_path, capsys, src, dst):
    g = _cube(300, seed=7)
    model = export_model(tmp_path / f"in.{src}", g)
    out = tmp_path / f"out.{dst}"
    code = cli_main(["edit", str(model), "--output", str(out), "--crop-box", "-1", "-1", "-1", "1", "1", "1",
                     "--min-opacity", "0.2"])
    assert code == 0, capsys.readouterr().err
    source = read_model(model)  # .splat quantises; compare with what the input file holds
    expected = edit_gaussians(source, EditConfig(crop_box=(-1, -1, -1, 1, 1, 1), min_opacity=0.2)).gaussians
    got = read_model(out)
    assert len(got) == len(expected) > 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"kept {len(expected):,} of 300 Gaussians (removed ") and "outside the crop box" in line


def test_bad_arguments_exit_2_and_existing_outputs_need_force(tmp_path, capsys):
    model = write_ply(tmp_path / "m.ply", _cube(20))
    assert cli_main(["edit", str(model), "--output", str(tmp_path / "o.ply"), "--min-opacity", "1.5"]) == 2
    assert cli_main(["edit", str(model), "--output", str(tmp_path / "o.txt")]) == 2
    assert cli_main(["edit", str(model), "--output", str(tmp_path / "o.ply"), "--format", "obj"]) == 2
    assert "unknown format 'obj'" in capsys.readouterr().err
    assert cli_main(["edit", str(model), "--output", str(tmp_path / "o.bin"), "--format", "glb"]) == 0
    assert (tmp_path / "o.bin").read_bytes()[:4] == b"glTF"
    assert cli_main(["edit", str(model), "--output", str(tmp_path / "m.ply")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["edit", str(model), "--output", str(tmp_path / "m.ply"), "--force", "--sh-degree", "0"]) == 0
    assert read_model(model).sh_degree == 0


def test_a_training_run_brings_its_cameras(tmp_path, capsys):
    data = tmp_path / "data"
    write_blender(data, n_train=8, n_test=2, size=24)
    run = tmp_path / "run"
    (run / "point_cloud" / "iteration_7").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"data": {"path": str(data), "downscale": 1}}))
    g = make_gaussians(torch.tensor([[0.0, 0, 0], [0.3, 0.1, -0.2], [0.0, 0.0, 60.0]]), dtype=torch.float32)
    write_ply(run / "point_cloud" / "iteration_7" / "point_cloud.ply", g)
    out = tmp_path / "clean.ply"
    assert cli_main(["edit", str(run), "--output", str(out), "--floaters", "visibility", "--upright"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "1 floaters (seen by < 2 of 8 cameras)" in line and "turned upright" in line
    assert len(read_model(out)) == 2
    if HAVE_USD:  # the upAxis of a run's USD export comes from its cameras (ring cameras: +z)
        from splatlab.io.usd import read_usd_info

        assert cli_main(["export", str(run), "--format", "usda", "--output", str(tmp_path / "run.usda")]) == 0
        assert read_usd_info(tmp_path / "run.usda").up_axis == "Z"

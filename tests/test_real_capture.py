"""The pieces for real captures: masks, exposure, background sphere, depth priors, resolution."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splatlab import Camera, RenderSettings, rasterize
from splatlab.data.scene import Scene, View
from splatlab.gaussians import Gaussians
from splatlab.metrics import fit_affine_colour, psnr, psnr_exposure_fitted, psnr_masked
from splatlab.train.auto import choose_downscale
from splatlab.train.exposure import Exposure, ExposureConfig
from splatlab.train.init import background_gaussians, background_sphere
from splatlab.train.run import BACKGROUND_OPACITY
from splatlab.train.config import ConfigError, TrainConfig
from splatlab.train.step import StepView, depth_loss, masked_loss

from helpers import random_scene


def ring_scene(colour=(0.2, 0.4, 0.9), n=6, size=24) -> Scene:
    views = []
    for i in range(n):
        a = 2 * math.pi * i / n
        cam = Camera.look_at((3 * math.cos(a), 3 * math.sin(a), 0.5), (0, 0, 0), width=size, height=size)
        image = torch.tensor(colour).mul(255).round().to(torch.uint8).expand(size, size, 3).clone()
        views.append(View(cam, image, f"v{i}"))
    points = torch.rand(200, 3) - 0.5
    return Scene(views, [], points, torch.rand(200, 3), 3.3, None, "synthetic", Path("ring"))


def test_masked_loss_ignores_pixels_outside_the_mask():
    target = torch.rand(16, 16, 3)
    image = target.clone().requires_grad_()
    mask = torch.zeros(16, 16, 1)
    mask[:, :8] = 1
    with torch.no_grad():
        image[:, 8:] = 1 - target[:, 8:]  # wrong only where the mask is 0
    loss, share, mse = masked_loss(image, target, mask, 0.2)
    assert share == pytest.approx(0.5) and loss.item() == pytest.approx(0.0, abs=1e-6)
    assert mse.item() == pytest.approx(0.0, abs=1e-12)
    loss.backward()
    assert image.grad[:, 8:].abs().max() == 0
    # ... and the PSNR over the mask agrees with the metric used at evaluation.
    noisy = (target + 0.05 * torch.randn_like(target)).clamp(0, 1)
    _, _, mse = masked_loss(noisy, target, mask, 0.2)
    assert -10 * math.log10(mse.item()) == pytest.approx(psnr_masked(noisy, target, mask[..., 0].bool()), abs=1e-4)


def test_exposure_starts_as_identity_and_fits_are_recovered():
    exposure = Exposure(3, torch.device("cpu"))
    image = torch.rand(8, 8, 3)
    assert torch.equal(exposure.apply(image, 1), image)
    (exposure.apply(image, 1) * torch.rand(8, 8, 3)).sum().backward()
    exposure.step(0.5, ExposureConfig())
    assert not torch.equal(exposure.apply(image, 1), image)
    # The mean transform stays the identity: the model keeps the collection's average colours.
    assert torch.allclose(exposure.matrices.mean(0), torch.eye(3, 4), atol=1e-6)
    state = exposure.state_dict()
    other = Exposure(3, torch.device("cpu"))
    other.load_state_dict(state)
    assert torch.equal(other.matrices, exposure.matrices)
    # The 3DGS evaluation protocol: an affine colour change is undone by the fit on the left half.
    gt = torch.rand(20, 30, 3)
    changed = (gt @ torch.tensor([[0.8, 0.1, 0.0], [0.0, 0.9, 0.0], [0.05, 0.0, 0.7]]) + 0.1).clamp(0, 1)
    assert psnr(changed, gt) < 25 and psnr_exposure_fitted(changed, gt) > 35
    assert fit_affine_colour(gt, gt).allclose(torch.cat([torch.eye(3), torch.zeros(1, 3)]).double(), atol=1e-4)


def test_background_sphere_is_behind_everything_and_coloured_from_the_views():
    scene = ring_scene()
    centre, radius = background_sphere(scene)
    sky = background_gaussians(scene, 2000, sh_degree=1, opacity=BACKGROUND_OPACITY)
    assert sky is not None and 0 < len(sky) < 2000  # only the directions some view sees
    dist = (sky.means.double() - centre).norm(dim=-1)
    assert torch.allclose(dist, torch.full_like(dist, radius), rtol=1e-5)
    assert radius > 2 * scene.extent * 0.9
    rgb = sky.sh0[:, 0] * 0.28209479177387814 + 0.5
    assert torch.allclose(rgb, torch.tensor([0.2, 0.4, 0.9]).expand_as(rgb), atol=2 / 255)
    # Rendered from a training view, the sphere covers the image: nothing is left to the background.
    out = rasterize(sky, scene.train[0].camera, RenderSettings(background=(1.0, 0.0, 0.0)))
    assert out.alpha.min() > 0.9


def test_depth_loss_is_zero_on_the_truth_and_pulls_towards_it():
    gaussians = random_scene(300, sh_degree=0, seed=4, dtype=torch.float32, opacity_range=(0.9, 0.99),
                             log_scale_range=(-2.0, -1.5))
    camera = Camera.look_at((0, 0, -1), (0, 0, 4), up=(0, -1, 0), width=32, height=32)
    out = rasterize(gaussians, camera, RenderSettings())
    inv = (out.alpha[..., 0] / out.depth[..., 0].clamp_min(1e-6)).detach()
    view = StepView(camera, out.image.detach(), None, (0, 0, 0), 0, inv_depth=inv)
    assert depth_loss(out, view, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    view.inv_depth = inv * 1.5
    assert depth_loss(out, view, 2.0).item() > 0
    # Sparse: the SfM points' (u, v, z).
    uv = torch.tensor([[16.5, 16.5], [10.5, 20.5]])
    z = 1.0 / inv[uv[:, 1].long(), uv[:, 0].long()]
    sparse = StepView(camera, out.image.detach(), None, (0, 0, 0), 0, depth_points=torch.cat([uv, z[:, None]], 1))
    assert depth_loss(out, sparse, 1.0).item() == pytest.approx(0.0, abs=1e-5)


def test_attach_depth_maps_fits_the_sfm_scale_and_warns_about_missing_maps(tmp_path):
    from splatlab.data import DatasetWarning
    from splatlab.data.depths import attach_depth_maps

    scene = ring_scene(n=3, size=32)
    view = scene.train[0]
    gen = torch.Generator().manual_seed(0)
    raw = 0.05 + 0.05 * torch.rand(32, 32, generator=gen, dtype=torch.float64)  # a "monocular" map
    truth = 4.0 * raw + 0.1  # the inverse depth it encodes, up to scale 4 and offset 0.1
    # SfM points: 60 distinct pixels unprojected at their true depth.
    pix = torch.randperm(32 * 32, generator=gen)[:60]
    v, u = pix // 32, pix % 32
    z = 1.0 / truth[v, u]
    cam = view.camera
    rays = torch.stack([(u + 0.5 - cam.cx) / cam.fx, (v + 0.5 - cam.cy) / cam.fy, torch.ones(60, dtype=torch.float64)], 1)
    c2w = cam.c2w.double()
    scene.points = ((rays * z[:, None]) @ c2w[:3, :3].T + c2w[:3, 3]).float()
    for other in scene.train:
        other.point_ids = torch.arange(60)
    (tmp_path / "depths").mkdir()
    Image.fromarray((raw.numpy() * 2**16).astype(np.uint16)).save(tmp_path / "depths" / "v0.png")
    with pytest.warns(DatasetWarning, match="no depth map for 2 of 3"):
        attach_depth_maps(tmp_path, tmp_path, scene.train, scene.points)
    assert torch.allclose(view.inv_depth.double(), truth, rtol=1e-3, atol=1e-3)
    assert scene.train[1].inv_depth is None


def test_resolution_follows_the_budget_and_the_3dgs_cap():
    assert choose_downscale(400, 400, "cpu", 15).downscale == 1
    assert choose_downscale(1080, 1920, "cpu", 15).downscale == 4  # long side 480 <= 800
    assert choose_downscale(720, 1280, "cpu", 15).downscale == 2
    assert choose_downscale(720, 1280, "cpu", 60).downscale == 1
    assert choose_downscale(4000, 3000, "cuda", 15).downscale == 4  # 1000 <= 1600
    assert "640x360" in choose_downscale(1280, 720, "cpu", 15).reason


def test_coarse_to_fine_follows_the_budget_unless_the_config_says(tmp_path):
    from splatlab.train.auto import COARSE_TO_FINE_FRACTION, COARSE_TO_FINE_MAX_MINUTES, choose_coarse_to_fine
    from splatlab.train.run import Run

    assert choose_coarse_to_fine(COARSE_TO_FINE_MAX_MINUTES)[0] == COARSE_TO_FINE_FRACTION
    assert choose_coarse_to_fine(5)[0] == COARSE_TO_FINE_FRACTION
    assert choose_coarse_to_fine(COARSE_TO_FINE_MAX_MINUTES + 1)[0] == 0.0
    assert choose_coarse_to_fine(None)[0] == 0.0  # an iteration count, no budget: as 3DGS
    assert "--coarse-to-fine 0" in choose_coarse_to_fine(5)[1]
    scene = ring_scene(n=2, size=16)
    auto = Run(TrainConfig(output=tmp_path / "a", max_minutes=5), scene)
    assert auto.coarse_to_fine == COARSE_TO_FINE_FRACTION
    assert auto._plan(1).divisor == 4 and auto._plan(auto.steps).divisor == 1
    assert Run(TrainConfig(output=tmp_path / "b", max_minutes=5, coarse_to_fine=0.0), scene)._plan(1).divisor == 1
    assert Run(TrainConfig(output=tmp_path / "c", max_minutes=None), scene)._plan(1).divisor == 1
    with pytest.raises(ConfigError, match="--coarse-to-fine"):
        TrainConfig(coarse_to_fine=1.5).validate()


def test_coarse_to_fine_views_are_exact_downscales():
    from splatlab.train.schedule import resolution_divisor
    from splatlab.train.step import downsampled

    assert [resolution_divisor(p, 0.6) for p in (0.0, 0.19, 0.21, 0.39, 0.41, 0.7)] == [4, 4, 2, 2, 1, 1]
    assert resolution_divisor(0.0, 0.0) == 1
    camera = Camera.look_at((0, -3, 1), (0, 0, 0), width=32, height=24)
    target = torch.rand(24, 32, 3)
    mask = torch.ones(24, 32, 1)
    pts = torch.tensor([[16.0, 12.0, 2.0]])
    small = downsampled(StepView(camera, target, mask, (0, 0, 0), 0, depth_points=pts), 4)
    assert (small.camera.width, small.camera.height) == (8, 6) and small.target.shape == (6, 8, 3)
    assert torch.allclose(small.target[0, 0], target[:4, :4].reshape(-1, 3).mean(0), atol=1e-6)
    assert torch.allclose(small.depth_points, torch.tensor([[4.0, 3.0, 2.0]]))
    # An object mask's `measure` (the pixels the PSNR counts) is downscaled too, not dropped.
    measure = torch.zeros(24, 32, 1)
    measure[:, :16] = 1.0
    half = downsampled(StepView(camera, target, None, (0, 0, 0), 0, measure=measure), 2)
    assert half.mask is None and half.measure.shape == (12, 16, 1)
    assert half.measure[:, :8].eq(1).all() and half.measure[:, 8:].eq(0).all()
    # The same world point lands on the corresponding pixel.
    p = torch.tensor([[0.3, 0.2, 0.1]], dtype=torch.float64)
    assert torch.allclose(small.camera.project(p)[:, :2] * 4, camera.project(p)[:, :2], atol=1e-9)


def test_exposure_leaves_empty_pixels_at_the_background():
    exposure = Exposure(2, torch.device("cpu"))
    with torch.no_grad():  # view 0 halves its colours and adds 0.1; view 1 the opposite (mean: identity)
        exposure.deltas[0] = torch.tensor([[-0.5, 0.0, 0.0, 0.1], [0.0, -0.5, 0.0, 0.1], [0.0, 0.0, -0.5, 0.1]])
        exposure.deltas[1] = -exposure.deltas[0]
    colour = torch.full((2, 2, 3), 0.6)
    alpha = torch.tensor([[1.0, 0.0], [0.5, 0.0]])[..., None]
    bg = (0.2, 0.3, 0.4)
    image = colour * alpha + (1 - alpha) * torch.tensor(bg)
    out = exposure.apply(image, 0, alpha, bg)
    assert torch.allclose(out[0, 1], torch.tensor(bg)) and torch.allclose(out[0, 0], torch.full((3,), 0.4))


def test_bilateral_grid_starts_as_identity_and_fits_what_one_affine_cannot():
    """A photo whose left half is darker: one affine transform per image cannot map the render to
    it; a bilateral grid (transforms that vary across the image) can."""
    from splatlab.train.exposure import BilateralGrids, make_appearance

    config = ExposureConfig(model="bilateral", grid=(8, 8, 4))
    torch.manual_seed(0)
    image = torch.rand(32, 32, 3) * 0.8 + 0.1
    target = image.clone()
    target[:, :16] *= 0.5
    grids = make_appearance(2, torch.device("cpu"), config)
    assert isinstance(grids, BilateralGrids)
    assert torch.allclose(grids.apply(image, 0), image, atol=1e-6)  # identity at the start
    affine = Exposure(2, torch.device("cpu"))
    for model, lr_config in ((grids, config), (affine, ExposureConfig(lr=5e-2, lr_final=5e-2))):
        if model is grids:
            model.optimizer.param_groups[0]["lr"] = 5e-2
        for _ in range(300):
            loss = (model.apply(image, 0) - target).abs().mean()
            reg = model.loss(0)
            (loss if reg is None else loss + 1e-3 * reg / model.tv_weight).backward()
            model.optimizer.step()
            model.optimizer.zero_grad(set_to_none=True)
    err_grid = (grids.apply(image, 0) - target).abs().mean().item()
    err_affine = (affine.apply(image, 0) - target).abs().mean().item()
    assert err_grid < 0.02 < err_affine
    # The grids' mean over the images stays the identity: image 1, never trained, moved opposite.
    mean = (grids.grid(0) + grids.grid(1)) / 2
    assert torch.allclose(mean, grids.eye.expand_as(mean), atol=1e-5)


def test_bilateral_grid_gradients_match_finite_differences():
    """gradcheck (float64) of the grid lookup and the per-pixel transform, grid and image."""
    from splatlab.train.exposure import slice_grid

    torch.manual_seed(1)
    grid = (torch.eye(3, 4).reshape(12, 1, 1, 1) + 0.1 * torch.randn(12, 2, 3, 4)).double().requires_grad_()
    image = torch.rand(6, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g: slice_grid(g, image.detach()), (grid,))
    a = slice_grid(grid.detach(), image.detach())  # the lookup, held fixed

    def apply(img):
        return (a[..., :3] @ img[..., None])[..., 0] + a[..., 3]

    assert torch.autograd.gradcheck(apply, (image,))
    # Corners of the image read the grid's corner cells (align_corners): at brightness 0, level 0.
    dark = torch.zeros(6, 5, 3, dtype=torch.float64)
    assert torch.allclose(slice_grid(grid.detach(), dark)[0, 0].reshape(12), grid.detach()[:, 0, 0, 0])


# ---- per-photo lighting (train/lighting.py) -------------------------------------------------------


def _two_sided_patches(dtype=torch.float32) -> Gaussians:
    """Flat Gaussians facing a camera at (0, -5, 0): those at x = +1 turned right (outward normal
    (1, -1, 0)/sqrt 2), those at x = -1 turned left ((-1, -1, 0)/sqrt 2); grey."""
    from splatlab.sh import rgb_to_sh0

    n = 8
    right = torch.arange(n) % 2 == 0
    means = torch.zeros(n, 3, dtype=dtype)
    means[:, 0] = torch.where(right, 1.0, -1.0).to(dtype)
    means[:, 2] = torch.linspace(-0.5, 0.5, n, dtype=dtype)
    half = torch.where(right, -math.pi / 8, -3 * math.pi / 8).to(dtype)  # half of -45 / -135 degrees about z
    quats = torch.stack([half.cos(), torch.zeros_like(half), torch.zeros_like(half), half.sin()], dim=-1)
    quats[1::2] *= -1  # q and -q are the same rotation
    log_scales = torch.log(torch.tensor([[0.01, 0.2, 0.2]], dtype=dtype)).expand(n, 3).clone()
    sh0 = rgb_to_sh0(torch.full((n, 1, 3), 0.4, dtype=dtype))
    return Gaussians(means, quats, log_scales, torch.zeros(n, dtype=dtype), sh0, torch.zeros(n, 0, 3, dtype=dtype))


FRONT = dict(position=(0.0, -5.0, 0.0), target=(0.0, 0.0, 0.0))


def test_lighting_normals_face_the_camera_and_start_as_no_change():
    from splatlab.train.lighting import Lighting, facing_normals

    g = _two_sided_patches()
    cam = Camera.look_at(FRONT["position"], FRONT["target"], width=16, height=16)
    n = facing_normals(g, cam.position)
    outward = torch.stack([torch.sign(g.means[:, 0]), -torch.ones(len(g)), torch.zeros(len(g))], -1) / math.sqrt(2)
    assert torch.allclose(n, outward, atol=1e-6)  # the shortest axis, on the camera's side
    behind = facing_normals(g, torch.tensor([0.0, 5.0, 0.0]))  # seen from behind: turned round
    assert torch.allclose(behind, -outward, atol=1e-6)
    lighting = Lighting(3, torch.device("cpu"))
    assert torch.equal(lighting.shade(g, 1, cam).sh0, g.sh0)


def test_lighting_fits_a_sun_that_changes_sides_which_one_affine_cannot():
    """Photo 0 has the sun on the right (the right-facing Gaussians x1.5, the left ones x0.5),
    photo 1 on the left. The lighting model fits both; its mean stays 'no change'. One affine
    colour map per photo cannot: both sides have the same colour in the render."""
    from splatlab.constants import SH_C0
    from splatlab.train.lighting import Lighting

    g = _two_sided_patches()
    right = g.means[:, 0] > 0
    cam = Camera.look_at(FRONT["position"], FRONT["target"], width=16, height=16)
    lighting = Lighting(2, torch.device("cpu"))
    config = ExposureConfig(lr=2e-2, lr_final=2e-2)

    def diffuse(index):  # [N, 3] the degree-0 colour as photo `index` lit it
        return SH_C0 * lighting.shade(g, index, cam).sh0[:, 0] + 0.5

    def target(index):
        lit = right if index == 0 else ~right
        return torch.where(lit, 0.6, 0.2)[:, None].expand(len(g), 3)

    for _ in range(400):
        for index in (0, 1):
            (diffuse(index) - target(index)).abs().mean().backward()
            lighting.step(0.0, config)
    for index in (0, 1):
        assert (diffuse(index) - target(index)).abs().max() < 0.03, index
    assert torch.allclose(lighting.coefficients(0) + lighting.coefficients(1), torch.zeros(9, 3), atol=1e-6)
    assert torch.equal(g.sh0[right], g.sh0[~right])  # what an image-wide colour map has to work with


def test_lighting_gradients_match_finite_differences():
    from splatlab.train.lighting import Lighting

    g = _two_sided_patches(torch.float64)
    g.sh0 = g.sh0 + 0.1 * torch.randn_like(g.sh0)
    lighting = Lighting(2, torch.device("cpu"))
    lighting.deltas.data = 0.1 * torch.randn(2, 9, 3, dtype=torch.float64)
    cam = Camera.look_at((3.0, -4.0, 1.0), (0, 0, 0), width=16, height=16)
    sh0 = g.sh0.clone().requires_grad_()
    deltas = lighting.deltas.detach().clone().requires_grad_()

    def shaded(sh0_, deltas_):
        lighting.deltas = deltas_
        return lighting.shade(replace(g, sh0=sh0_), 0, cam).sh0

    assert torch.autograd.gradcheck(shaded, (sh0, deltas))


def test_training_with_lighting_runs_checkpoints_and_resumes(tmp_path):
    from splatlab.train.lighting import Lighting
    from splatlab.train.run import Run

    scene = ring_scene(n=3, size=16)
    cfg = TrainConfig(output=tmp_path / "run", iterations=20, max_minutes=None, progress=False, sh_degree=1,
                      save_at=(), eval_at=(), checkpoint_every=10, exposure=ExposureConfig(lighting=True))
    run = Run(cfg, scene)
    run.train()
    lighting = run.state.extras["lighting"]
    assert isinstance(lighting, Lighting) and lighting.deltas.abs().sum() > 0
    resumed = Run(replace(cfg, iterations=20), scene)
    resumed.train(resume=True)
    assert torch.equal(resumed.state.extras["lighting"].deltas, lighting.deltas)
    with pytest.raises(ConfigError, match="--exposure.lighting"):
        Run(replace(cfg, exposure=ExposureConfig(enabled=False, lighting=True)), scene)


def _photo(path: Path, make: str | None, model: str | None) -> Path:
    exif = Image.Exif()
    if make:
        exif[0x010F] = make
    if model:
        exif[0x0110] = model
    Image.new("RGB", (8, 8), (90, 120, 200)).save(path, exif=exif)
    return path


def test_lighting_is_on_for_a_photo_collection_from_several_cameras(tmp_path):
    """Auto per-photo lighting: photos from two cameras (EXIF) are a collection and get it; one
    camera, no EXIF or no file is one capture; the config decides when it says; the run logs it."""
    from splatlab.train.auto import choose_lighting
    from splatlab.train.events import MessageEvent
    from splatlab.train.lighting import Lighting
    from splatlab.train.run import Run

    canon = [_photo(tmp_path / f"c{i}.jpg", "Canon", "EOS 60D") for i in range(2)]
    fuji = _photo(tmp_path / "f.jpg", "FUJIFILM", "FinePix S4500")
    bare = _photo(tmp_path / "b.jpg", None, None)
    assert choose_lighting([*canon, fuji])[0]
    assert "2 cameras" in choose_lighting([*canon, fuji, bare])[1]
    assert not choose_lighting(canon)[0] and "one camera" in choose_lighting(canon)[1]
    assert not choose_lighting([bare, None, tmp_path / "missing.jpg"])[0]

    scene = ring_scene(n=3, size=16)
    for view, source in zip(scene.train, (canon[0], fuji, canon[1])):
        view.source = source
    cfg = TrainConfig(output=tmp_path / "run", iterations=4, max_minutes=None, progress=False, sh_degree=1,
                      save_at=(), eval_at=())
    run = Run(cfg, scene)
    said: list[str] = []
    run.subscribe(lambda e: said.append(e.text) if isinstance(e, MessageEvent) else None)
    run.train()
    assert isinstance(run.state.extras.get("lighting"), Lighting)
    assert any("per-photo lighting on" in s for s in said), said
    off = Run(replace(cfg, output=tmp_path / "off", exposure=ExposureConfig(lighting=False)), scene)
    off.train()
    assert "lighting" not in off.state.extras
    no_exposure = Run(replace(cfg, output=tmp_path / "ne", exposure=ExposureConfig(enabled=False)), scene)
    assert not no_exposure.lighting  # auto never asks for what exposure-less runs cannot have


def test_statue_photos_are_a_collection_and_fox_is_one_capture():
    from splatlab.train.auto import choose_lighting

    root = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    statue, fox = root / "statue_colmap" / "images", root / "fox" / "images"
    if not (statue.is_dir() and fox.is_dir()):
        pytest.skip(f"{root}: the shared captures are not here")
    on, why = choose_lighting(sorted(statue.glob("*.jpg")))
    assert on, why
    assert not choose_lighting(sorted(fox.glob("*.jpg")))[0]


def masked_ring_scene(n=4, size=32, near=(0.6, 0.7, 0.8), far=(0.1, 0.1, 0.1)) -> Scene:
    """Views of a subject (random pixels in a centred square mask) whose mask is drawn loosely:
    `near` around the subject (the band a loose mask takes in), `far` beyond it."""
    views = ring_scene(n=n, size=size).train
    g = torch.Generator().manual_seed(0)
    for v in views:
        image = torch.tensor(far).mul(255).round().to(torch.uint8).expand(size, size, 3).clone()
        image[4:28, 4:28] = torch.tensor(near).mul(255).round().to(torch.uint8)
        image[8:24, 8:24] = torch.randint(0, 256, (16, 16, 3), generator=g, dtype=torch.uint8)
        v.image = image
        v.mask = torch.zeros(size, size, dtype=torch.bool)
        v.mask[8:24, 8:24] = True
    views.append(View(views[0].camera, views[0].image.clone(), "unmasked"))  # no mask: not measured
    views[-1].image[:] = 255
    return Scene(views, [], torch.rand(200, 3) - 0.5, torch.rand(200, 3), 3.3, None, "synthetic", Path("ring"))


def test_surround_colour_is_the_colour_just_outside_the_masks():
    from splatlab.train.surround import surround_colour

    colour = surround_colour(masked_ring_scene())
    assert colour == pytest.approx((153 / 255, 178 / 255, 204 / 255), abs=1e-4)  # `near`, not `far` or white
    assert surround_colour(ring_scene()) == (0.0, 0.0, 0.0)  # no masks


def test_object_masks_train_over_a_learned_colour_inside_and_a_random_one_outside(tmp_path):
    from splatlab.train.run import Run
    from splatlab.train.step import StepPlan, downsampled, render_view
    from splatlab.train.surround import Surround
    from splatlab.train.views import step_view

    scene = masked_ring_scene()
    near = (153 / 255, 178 / 255, 204 / 255)
    run = Run(TrainConfig(output=tmp_path / "a", max_minutes=None, iterations=30), scene)
    assert run.mask_mode == "object" and run._surround_start == pytest.approx(near, abs=1e-4)
    # `--mask-background render` keeps --render.background (black by default).
    other = Run(TrainConfig(output=tmp_path / "b", max_minutes=None, data=replace(TrainConfig().data, mask_background="render")), scene)
    assert other._surround_start is None and other.background == (0.0, 0.0, 0.0)
    # A background the user gave is not silently dropped: the run says how to use it.
    from splatlab.train.events import MessageEvent

    given = Run(TrainConfig(output=tmp_path / "c", max_minutes=None, iterations=1, progress=False, save_at=(),
                            eval_at=(), render=RenderSettings(background=(1.0, 1.0, 1.0))), scene)
    said: list[tuple[str, str]] = []
    given.subscribe(lambda e: said.append((e.level, e.text)) if isinstance(e, MessageEvent) else None)
    given.train()
    assert ("warning", "--render.background 1 1 1 is not what the masked subject is rendered over: add "
            "--mask-background render to use it") in said

    surround = Surround(near, torch.device("cpu"))
    view = step_view(scene, 0, run.config, "object", (0.0, 0.0, 0.0), torch.device("cpu"))
    behind = surround.behind(view.measure, view.background)
    inside = view.measure[..., 0].bool()
    assert torch.allclose(behind[inside], torch.tensor(near)) and torch.allclose(behind[~inside], torch.tensor(view.background))
    # A render with nothing in front of the camera shows exactly that, and the colour gets a gradient.
    empty = Gaussians.from_points(torch.tensor([[0.0, 0.0, -100.0]]), torch.zeros(1, 3), 0, 0.1)
    from splatlab.train.state import TrainState
    state = TrainState.create(empty, run.config.optim, scene.extent, {}, len(scene.train), 0, torch.device("cpu"))
    small = downsampled(view, 2)
    out = render_view(state, small, RenderSettings(backend="reference"), StepPlan(1, 0.0, 1e-4, 0, divisor=2),
                      behind=surround.behind(small.measure, small.background))
    torch.testing.assert_close(out.image, surround.behind(small.measure, small.background), atol=1e-6, rtol=0)
    out.image.sum().backward()
    assert surround.colour.grad.abs().min() > 0

    # Trained: the colour moves towards what the masked pixels show, is checkpointed, and is what
    # the evaluation renders over and records (metrics.json), where `splatlab eval/render` read it.
    run_said: list[str] = []
    run.subscribe(lambda e: run_said.append(e.level) if isinstance(e, MessageEvent) else None)
    result = run.train()
    assert "warning" not in run_said  # the default background: nothing to warn about
    learned = run.state.extras["surround"].as_tuple()
    assert learned != pytest.approx(near, abs=1e-3)
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())[-1]
    assert tuple(metrics["background"]) == learned == run.background
    from splatlab.cli import _background_of_run
    assert _background_of_run(tmp_path / "a") == learned
    saved = torch.load(tmp_path / "a" / "checkpoints" / "latest.pt", weights_only=False)
    assert torch.equal(saved["state"]["extras"]["surround"]["colour"], run.state.extras["surround"].colour.detach())
    assert result.step == 30

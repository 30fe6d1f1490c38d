"""The reference renderer: hand-computed values, invariances, gradients, an independent oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splatlab import Camera, Gaussians, RenderSettings, rasterize
from splatlab.sh import SH_C0, eval_sh, sh_basis

from helpers import camera_at_origin, make_gaussians, random_scene

REF = RenderSettings(backend="reference")


def ref(**kw) -> RenderSettings:
    return RenderSettings(backend="reference", **kw)


# ---- hand-computed ---------------------------------------------------------------------------


def test_one_gaussian_hand_computed():
    # Camera at the origin, f = 20, principal point at the centre of pixel (7, 7).
    cam = camera_at_origin(16, 16, f=20.0, cx=7.5, cy=7.5)
    z, log_s, o = 2.0, math.log(0.1), 0.6
    g = make_gaussians([[0.0, 0.0, z]], log_scale=log_s, opacity=o, rgb=(0.9, 0.2, 0.4))
    out = rasterize(g, cam, ref(background=(0.1, 0.1, 0.1)))

    # 2D variance: (f/z)^2 s^2 + 0.3 = 100 * 0.01 + 0.3 = 1.3 px^2 on both axes.
    var = (20.0 / z) ** 2 * 0.1**2 + 0.3
    assert out.means2d[0].tolist() == pytest.approx([7.5, 7.5])
    assert int(out.radii[0]) == math.ceil(3 * math.sqrt(var))

    # Centre pixel: alpha = o; colour = c o + (1 - o) bg; expected depth = z.
    assert out.alpha[7, 7, 0].item() == pytest.approx(o, abs=1e-12)
    expected = torch.tensor([0.9, 0.2, 0.4], dtype=torch.float64) * o + (1 - o) * 0.1
    assert torch.allclose(out.image[7, 7], expected, atol=1e-12)
    assert out.depth[7, 7, 0].item() == pytest.approx(z)

    # One pixel to the right: alpha = o exp(-1/(2 var)).
    a = o * math.exp(-0.5 / var)
    assert out.alpha[7, 8, 0].item() == pytest.approx(a, abs=1e-12)
    assert out.image[7, 8, 0].item() == pytest.approx(0.9 * a + (1 - a) * 0.1, abs=1e-12)

    # Far corner: below 1/255, skipped: pure background.
    assert out.alpha[0, 15, 0].item() == 0.0
    assert torch.allclose(out.image[0, 15], torch.full((3,), 0.1, dtype=torch.float64))


def test_alpha_is_clamped_to_0_99_and_compositing_is_front_to_back():
    cam = camera_at_origin(16, 16, f=20.0, cx=7.5, cy=7.5)
    near = make_gaussians([[0.0, 0.0, 2.0]], log_scale=0.0, opacity=0.999, rgb=(1.0, 0.0, 0.0))
    far = make_gaussians([[0.0, 0.0, 3.0]], log_scale=0.0, opacity=0.5, rgb=(0.0, 1.0, 0.0))
    out = rasterize(Gaussians.cat([far, near]), cam, REF)
    # Near: alpha 0.99 (clamped), T = 0.01; far: alpha ~0.5 at the centre.
    a_far = 0.5 * math.exp(-0.0)  # centre pixel of a large Gaussian
    assert out.image[7, 7, 0].item() == pytest.approx(0.99, abs=1e-6)
    assert out.image[7, 7, 1].item() == pytest.approx(0.01 * a_far, abs=1e-6)
    assert out.depth[7, 7, 0].item() == pytest.approx((0.99 * 2 + 0.01 * 0.5 * 3) / (0.99 + 0.005), abs=1e-6)


def test_antialiased_mode_compensates_opacity():
    cam = camera_at_origin(16, 16, f=20.0, cx=7.5, cy=7.5)
    g = make_gaussians([[0.0, 0.0, 2.0]], log_scale=math.log(0.03), opacity=0.8)
    raw = (20.0 / 2.0) ** 2 * 0.03**2  # 2D variance before the low-pass
    out = rasterize(g, cam, ref(antialiased=True))
    assert out.alpha[7, 7, 0].item() == pytest.approx(0.8 * raw / (raw + 0.3), abs=1e-9)


def test_sh_degree_zero_colour_and_basis_values():
    dirs = torch.nn.functional.normalize(torch.randn(5, 3, dtype=torch.float64), dim=-1)
    basis = sh_basis(3, dirs)
    assert basis.shape == (5, 16)
    assert torch.allclose(basis[:, 0], torch.full((5,), SH_C0, dtype=torch.float64))
    x, y, z = dirs.unbind(-1)
    assert torch.allclose(basis[:, 1:4], 0.4886025119029199 * torch.stack([-y, z, -x], -1))
    # The real SH basis is orthonormal on the sphere: check by Monte Carlo.
    many = torch.nn.functional.normalize(torch.randn(400_000, 3, dtype=torch.float64), dim=-1)
    b = sh_basis(3, many)
    gram = 4 * math.pi * (b.T @ b) / len(many)
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=0.03)
    coeffs = torch.zeros(5, 16, 3, dtype=torch.float64)
    assert torch.allclose(eval_sh(3, coeffs, dirs), torch.full((5, 3), 0.5, dtype=torch.float64))


# ---- invariances -----------------------------------------------------------------------------


def test_empty_scene_renders_background():
    cam = camera_at_origin(20, 13)
    out = rasterize(Gaussians.empty(sh_degree=2, dtype=torch.float64), cam, ref(background=(0.2, 0.4, 0.6)))
    assert out.image.shape == (13, 20, 3)
    assert torch.equal(out.image, torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64).expand(13, 20, 3))
    assert torch.equal(out.alpha, torch.zeros(13, 20, 1, dtype=torch.float64))
    assert torch.equal(out.depth, torch.zeros(13, 20, 1, dtype=torch.float64))


def test_gaussians_none_of_which_is_seen_render_the_background():
    # Binning once indexed an [N] buffer through the (empty) list of intersections.
    cam = camera_at_origin(20, 13)
    behind = make_gaussians([[0.0, 0.0, -2.0], [0.01, 0.0, -3.0]], log_scale=0.0, opacity=0.9, sh_degree=1)
    out = rasterize(behind, cam, ref(background=(0.2, 0.4, 0.6)))
    assert torch.equal(out.image, torch.tensor([0.2, 0.4, 0.6], dtype=out.image.dtype).expand(13, 20, 3))
    assert out.num_intersections == 0


def test_gaussian_behind_camera_changes_nothing():
    cam = camera_at_origin(32, 32)
    scene = random_scene(30, seed=1)
    behind = make_gaussians([[0.0, 0.0, -2.0], [0.01, 0.0, 0.005]], log_scale=0.0, opacity=0.9, sh_degree=3)
    a = rasterize(scene, cam, REF)
    b = rasterize(Gaussians.cat([scene, behind]), cam, REF)
    assert torch.equal(a.image, b.image) and torch.equal(a.alpha, b.alpha)
    assert b.radii[-2:].tolist() == [0, 0] and not b.visible[-2:].any()


def test_fully_occluded_gaussian_changes_nothing():
    cam = camera_at_origin(16, 16, f=20.0, cx=7.5, cy=7.5)
    # Three huge, nearly opaque walls: after two, T = 1e-4; the third would take T below, so
    # compositing stops there and nothing behind can contribute.
    walls = make_gaussians([[0, 0, 1.0], [0, 0, 1.1], [0, 0, 1.2]], log_scale=2.0, opacity=0.99999)
    hidden = make_gaussians([[0.0, 0.0, 3.0]], log_scale=-2.0, opacity=0.9, rgb=(0.0, 1.0, 0.0))
    a = rasterize(walls, cam, REF)
    b = rasterize(Gaussians.cat([walls, hidden]), cam, REF)
    assert b.visible[-1]  # it is binned, just never reached
    assert torch.equal(a.image, b.image) and torch.equal(a.alpha, b.alpha)


def test_input_order_does_not_matter():
    cam = camera_at_origin(40, 30, f=30.0)
    scene = random_scene(80, seed=2)
    perm = torch.randperm(80, generator=torch.Generator().manual_seed(0))
    a = rasterize(scene, cam, REF)
    b = rasterize(scene[perm], cam, REF)
    assert torch.allclose(a.image, b.image, atol=1e-12) and torch.allclose(a.depth, b.depth, atol=1e-12)
    assert torch.equal(a.radii[perm], b.radii)


def test_camera_conventions_opencv_and_blender():
    # OpenGL camera at (0, 0, 5) with identity rotation looks down -z at the origin.
    c2w = torch.eye(4)
    c2w[2, 3] = 5.0
    cam = Camera.from_blender(c2w, fov_x=math.radians(90), width=100, height=80)
    uvz = cam.project(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64))
    assert uvz[0].tolist() == pytest.approx([50.0, 40.0, 5.0])
    # World +x is image right, world +y (OpenGL up) is image up, i.e. smaller v.
    assert uvz[1, 0] > 50 and uvz[1, 1] < 40
    assert torch.allclose(cam.position, torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64))
    assert torch.allclose(cam.to_opengl_c2w(), c2w.double())
    # look_at puts the target at the principal point.
    cam2 = Camera.look_at((1.0, -3.0, 2.0), (0.2, 0.1, -0.3), width=64, height=48)
    assert cam2.project(torch.tensor([[0.2, 0.1, -0.3]], dtype=torch.float64))[0, :2].tolist() == pytest.approx([32, 24])
    # scaled() keeps pixel-centre geometry: u' = factor * u.
    half = cam2.scaled(0.5)
    p = torch.tensor([[0.5, 0.3, 0.1]], dtype=torch.float64)
    assert (half.project(p)[0, :2] * 2).tolist() == pytest.approx(cam2.project(p)[0, :2].tolist())


# ---- gradients -------------------------------------------------------------------------------


@pytest.mark.parametrize("antialiased", [False, True])
def test_gradcheck_every_parameter(antialiased):
    cam = camera_at_origin(14, 11, f=18.0, cx=6.3, cy=5.9)
    scene = random_scene(4, sh_degree=3, seed=3, spread=0.5, log_scale_range=(-2.2, -1.6), opacity_range=(0.3, 0.8))
    settings = ref(antialiased=antialiased, background=(0.3, 0.2, 0.1))
    params = [p.clone().requires_grad_(True) for p in scene.params().values()]

    def render(*p):
        out = rasterize(Gaussians(*p), cam, settings)
        return out.image, out.alpha, out.depth

    assert torch.autograd.gradcheck(render, params, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_means2d_gradient_is_readable():
    cam = camera_at_origin(32, 32)
    scene = random_scene(10, seed=4, dtype=torch.float32).requires_grad_()
    out = rasterize(scene, cam, ref(absgrad=True))
    (out.image * torch.rand_like(out.image)).sum().backward()
    grad = out.means2d.grad
    assert grad is not None and grad.shape == (10, 2)
    assert (grad[out.visible].abs().sum(-1) > 0).all()
    assert torch.equal(grad[~out.visible], torch.zeros_like(grad[~out.visible]))
    # absgrad: sum over pixels of |per-pixel gradient| >= |sum| componentwise.
    assert out.means2d.absgrad.shape == (10, 2)
    assert (out.means2d.absgrad + 1e-9 >= grad.abs()).all()


def test_finite_differences_of_a_smooth_scene():
    """Directional derivative vs central differences on a smooth loss (float64)."""
    cam = camera_at_origin(24, 20, f=25.0, cx=11.0, cy=10.4)
    scene = random_scene(6, sh_degree=2, seed=5, spread=0.4, log_scale_range=(-1.8, -1.4), opacity_range=(0.2, 0.6))
    weights = torch.rand(20, 24, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    params = {k: v.clone().requires_grad_(True) for k, v in scene.params().items()}

    def loss(p):
        return (rasterize(Gaussians(**p), cam, REF).image * weights).sum()

    loss(params).backward()
    gen = torch.Generator().manual_seed(2)
    for name, value in params.items():
        direction = torch.randn(value.shape, generator=gen, dtype=torch.float64)
        h = 1e-5
        plus = {k: (v.detach() + h * direction if k == name else v.detach()) for k, v in params.items()}
        minus = {k: (v.detach() - h * direction if k == name else v.detach()) for k, v in params.items()}
        numeric = (loss(plus) - loss(minus)).item() / (2 * h)
        analytic = (value.grad * direction).sum().item()
        assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-7), name


# ---- an independent oracle -------------------------------------------------------------------


def _oracle(g: Gaussians, cam: Camera, bg: np.ndarray) -> np.ndarray:
    """Straight per-pixel 3DGS in NumPy, written from the paper, independent of the package."""
    means = g.means.numpy()
    q = g.quats.numpy() / np.linalg.norm(g.quats.numpy(), axis=1, keepdims=True)
    w, x, y, z = q.T
    R = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(-1, 3, 3)  # fmt: skip
    S = np.exp(g.log_scales.numpy())
    sigma = np.einsum("nij,nj,nkj->nik", R, S**2, R)
    V = cam.viewmat.numpy()
    pc = means @ V[:3, :3].T + V[:3, 3]
    opac = 1 / (1 + np.exp(-g.logit_opacities.numpy()))
    # Colour: SH degree 3 in the direction camera -> Gaussian.
    campos = -V[:3, :3].T @ V[:3, 3]
    d = means - campos
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    sh = np.concatenate([g.sh0.numpy(), g.shN.numpy()], 1)
    basis = sh_basis(3, torch.from_numpy(d)).numpy()  # the basis itself is tested above
    rgb = np.maximum(np.einsum("nk,nkc->nc", basis, sh) + 0.5, 0)

    W, H = cam.width, cam.height
    tiles_x = math.ceil(W / 16)
    items = []
    for n in range(len(means)):
        X, Y, Z = pc[n]
        if Z <= 0.01:
            continue
        limx = (1.3 * cam.cx / cam.fx, 1.3 * (W - cam.cx) / cam.fx)
        limy = (1.3 * cam.cy / cam.fy, 1.3 * (H - cam.cy) / cam.fy)
        tx = Z * min(max(X / Z, -limx[0]), limx[1])
        ty = Z * min(max(Y / Z, -limy[0]), limy[1])
        J = np.array([[cam.fx / Z, 0, -cam.fx * tx / Z**2], [0, cam.fy / Z, -cam.fy * ty / Z**2]])
        cov = J @ V[:3, :3] @ sigma[n] @ V[:3, :3].T @ J.T + 0.3 * np.eye(2)
        det = np.linalg.det(cov)
        lam = 0.5 * (cov[0, 0] + cov[1, 1]) + math.sqrt(max(0.1, (0.5 * (cov[0, 0] + cov[1, 1])) ** 2 - det))
        r = math.ceil(3 * math.sqrt(lam))
        u, v = cam.fx * X / Z + cam.cx, cam.fy * Y / Z + cam.cy
        tile_rect = (math.floor((u - r) / 16), math.floor((v - r) / 16), math.floor((u + r) / 16), math.floor((v + r) / 16))
        items.append((Z, n, np.array([u, v]), np.linalg.inv(cov), tile_rect))
    items.sort(key=lambda it: it[0])

    img = np.zeros((H, W, 3))
    for i in range(H):
        for j in range(W):
            T, c = 1.0, np.zeros(3)
            tx_, ty_ = j // 16, i // 16
            for Z, n, mu, conic, (x0, y0, x1, y1) in items:
                if not (x0 <= tx_ <= x1 and y0 <= ty_ <= y1):
                    continue
                dd = np.array([j + 0.5, i + 0.5]) - mu
                alpha = min(0.99, opac[n] * math.exp(-0.5 * dd @ conic @ dd))
                if alpha < 1 / 255:
                    continue
                if T * (1 - alpha) < 1e-4:
                    break
                c += rgb[n] * alpha * T
                T *= 1 - alpha
            img[i, j] = c + T * bg
    del tiles_x
    return img


def test_matches_independent_per_pixel_oracle():
    # 64x64, SH degree 3, off-centre principal point, some Gaussians partly outside the view.
    cam = camera_at_origin(64, 64, f=55.0, cx=27.3, cy=36.8)
    scene = random_scene(300, sh_degree=3, seed=7, spread=2.4, log_scale_range=(-3.5, -1.8), depth=4.5)
    bg = np.array([0.1, 0.3, 0.2])
    out = rasterize(scene, cam, ref(background=tuple(bg)))
    # The scene really has Gaussians partly and fully outside the image.
    uv = out.means2d.detach()
    r = out.radii.double()
    partly = ((uv[:, 0] - r < 0) | (uv[:, 0] + r > 64) | (uv[:, 1] - r < 0) | (uv[:, 1] + r > 64)) & out.visible
    assert partly.sum() >= 10 and (~out.visible).sum() >= 10
    expected = _oracle(scene, cam, bg)
    assert np.abs(out.image.numpy() - expected).max() < 1e-5


# ---- bad input -------------------------------------------------------------------------------


def test_bad_shapes_are_refused_with_the_parameter_named():
    cam = camera_at_origin()
    g = random_scene(5, sh_degree=1)
    with pytest.raises(ValueError, match="quats"):
        rasterize(Gaussians(g.means, g.quats[:4], g.log_scales, g.logit_opacities, g.sh0, g.shN), cam, REF)
    with pytest.raises(ValueError, match="shN"):
        rasterize(Gaussians(g.means, g.quats, g.log_scales, g.logit_opacities, g.sh0, g.shN[:, :2]), cam, REF)
    with pytest.raises(ValueError, match="log_scales"):
        rasterize(Gaussians(g.means, g.quats, g.log_scales[:, :2], g.logit_opacities, g.sh0, g.shN), cam, REF)
    with pytest.raises(ValueError, match="sh_degree"):
        rasterize(g, cam, ref(sh_degree=3))


@pytest.mark.parametrize("name", ["means", "quats", "log_scales", "logit_opacities", "sh0", "shN"])
def test_non_finite_parameters_fail_loudly(name):
    g = random_scene(5, sh_degree=1)
    bad = getattr(g, name).clone()
    bad.view(-1)[3] = float("nan") if name != "means" else float("inf")
    params = g.params()
    params[name] = bad
    with pytest.raises(ValueError, match=f"{name}.*non-finite"):
        rasterize(Gaussians(**params), camera_at_origin(), REF)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(fx=0.0), "fx"),
        (dict(fy=-3.0), "fy"),
        (dict(width=0), "width"),
        (dict(height=-4), "height"),
        (dict(width=12.5), "width"),
        (dict(cx=float("nan")), "cx"),
        (dict(viewmat=torch.eye(3)), "4x4"),
    ],
)
def test_bad_cameras_are_refused(kwargs, message):
    args = dict(fx=10.0, fy=10.0, cx=5.0, cy=5.0, viewmat=torch.eye(4), width=10, height=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Camera(**args)


def test_bad_settings_are_refused():
    g, cam = random_scene(3), camera_at_origin()
    with pytest.raises(ValueError, match="backend"):
        rasterize(g, cam, RenderSettings(backend="cuda"))
    with pytest.raises(ValueError, match="near_plane"):
        rasterize(g, cam, RenderSettings(backend="reference", near_plane=-1.0))


def test_gaussians_from_points_uses_nearest_neighbour_scales():
    pts = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]])
    g = Gaussians.from_points(pts, torch.rand(4, 3), sh_degree=3)
    g.validate()
    assert g.sh_degree == 3 and g.shN.shape == (4, 15, 3)
    # Point 0's three neighbours are at distances 1, 2, 3: rms = sqrt(14/3).
    assert torch.exp(g.log_scales[0]).tolist() == pytest.approx([math.sqrt(14 / 3)] * 3, rel=1e-5)
    assert torch.allclose(g.opacities, torch.full((4,), 0.1))
    r = Gaussians.random(1000, sh_degree=1, generator=torch.Generator().manual_seed(0))
    assert r.means.min() >= -1 and r.means.max() <= 1 and len(r) == 1000
    with pytest.raises(ValueError, match="empty"):
        Gaussians.from_points(torch.zeros(0, 3))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_render_depth_off_gives_the_same_image_and_no_depth(backend):
    gaussians = random_scene(200, sh_degree=1, seed=3)
    camera = camera_at_origin(48, 40)
    with_depth = rasterize(gaussians, camera, RenderSettings(backend=backend))
    without = rasterize(gaussians, camera, RenderSettings(backend=backend, render_depth=False))
    assert without.depth is None and with_depth.depth is not None
    assert torch.allclose(without.image, with_depth.image, atol=1e-6)
    assert torch.allclose(without.alpha, with_depth.alpha, atol=1e-6)


def test_with_sh_degree_drops_bands_and_refuses_to_add_them():
    g = random_scene(5, sh_degree=3)
    assert g.with_sh_degree(1).shN.shape == (5, 3, 3) and g.with_sh_degree(0).shN.shape == (5, 0, 3)
    assert torch.equal(g.with_sh_degree(2).shN, g.shN[:, :8])
    with pytest.raises(ValueError, match="cannot raise"):
        g.with_sh_degree(1).with_sh_degree(2)

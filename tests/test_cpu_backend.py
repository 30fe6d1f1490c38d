"""backend="cpu" (Numba kernels, hand-written backward) against the PyTorch reference.

Forward outputs and the gradients of every raw parameter are compared over a grid of scene
sizes, image sizes (including non-multiples of 16), SH degrees and anti-aliasing, with random
output gradients on image, alpha and depth. Gradient truth from outside both implementations:
gradcheck in float64. Also: determinism (bit-identical gradients across runs and thread
counts), absgrad against a per-pixel brute force, empty and invisible scenes, and the on-disk
kernel cache (a second process must not compile again).

The kernels are compiled on first use and cached under src/splatlab/render/cpu/__pycache__;
a cold cache adds about a minute of compilation to the first test that renders.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from splatlab import Gaussians, RenderSettings, rasterize
from splatlab.gaussians import PARAM_NAMES

from helpers import camera_at_origin, make_gaussians, random_scene

numba = pytest.importorskip("numba")

BG = (0.1, 0.2, 0.3)


def settings(backend: str, **kw) -> RenderSettings:
    return RenderSettings(backend=backend, background=BG, **kw)


def scene(n, width, height, sh_degree, dtype, seed=0):
    """Random Gaussians well inside the view of a camera at the origin, small and not opaque."""
    g = random_scene(n, sh_degree=sh_degree, seed=seed, dtype=dtype, log_scale_range=(-3.0, -2.0))
    cam = camera_at_origin(width, height, f=float(max(width, height)), dtype=torch.float64)
    return g, cam


def render_and_grads(g: Gaussians, cam, s: RenderSettings, seed=1):
    """Render, backprop random output gradients; returns (output, {param: grad}, means2d.grad)."""
    g = g.clone().requires_grad_()
    out = rasterize(g, cam, s)
    gen = torch.Generator().manual_seed(seed)
    h, w = cam.height, cam.width
    loss = (
        (out.image * torch.randn(h, w, 3, generator=gen, dtype=g.dtype)).sum()
        + (out.alpha * torch.randn(h, w, 1, generator=gen, dtype=g.dtype)).sum()
        + (out.depth * torch.randn(h, w, 1, generator=gen, dtype=g.dtype)).sum()
    )
    loss.backward()
    return out, {k: v.grad for k, v in g.params().items()}, out.means2d.grad


def assert_rel_close(actual, expected, rtol, what):
    scale = expected.abs().max().clamp_min(1e-12)
    err = ((actual - expected).abs().max() / scale).item()
    assert err <= rtol, f"{what}: max error {err:.3g} relative to max |reference| {scale.item():.3g}"


# ---- agreement with the reference -----------------------------------------------------------

GRID = [
    # n, width, height, sh_degree, antialiased, dtype
    (1, 16, 16, 0, False, torch.float64),
    (50, 37, 23, 3, False, torch.float64),
    (50, 37, 23, 1, True, torch.float64),
    (300, 64, 48, 2, True, torch.float64),
    (300, 64, 48, 3, False, torch.float64),
    (300, 64, 48, 0, False, torch.float32),
    (50, 16, 16, 3, True, torch.float32),
]


@pytest.mark.parametrize("n,width,height,sh_degree,antialiased,dtype", GRID)
def test_matches_reference(n, width, height, sh_degree, antialiased, dtype):
    g, cam = scene(n, width, height, sh_degree, dtype)
    ref, ref_grads, ref_m2d = render_and_grads(g, cam, settings("reference", antialiased=antialiased))
    out, grads, m2d = render_and_grads(g, cam, settings("cpu", antialiased=antialiased))

    # float32: depth = sum(w z) / alpha divides by small alphas; compare it relative to its size.
    depth_atol = 1e-5 if dtype == torch.float64 else 1e-4
    for name, atol in (("image", 1e-5), ("alpha", 1e-5), ("depth", depth_atol), ("means2d", 1e-5),
                       ("depths", 1e-5)):  # fmt: skip
        a, b = getattr(out, name), getattr(ref, name)
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert torch.allclose(a, b, rtol=0, atol=atol), f"{name}: max diff {(a - b).abs().max().item():.3g}"
    assert torch.equal(out.radii, ref.radii)
    assert torch.equal(out.visible, ref.visible)
    # The cpu backend bins only tiles where the Gaussian's alpha can reach 1/255: fewer pairs,
    # the same images and gradients.
    assert 0 < out.num_intersections <= ref.num_intersections
    assert ref.visible.any()

    for name in PARAM_NAMES:
        if ref_grads[name].numel():
            assert_rel_close(grads[name], ref_grads[name], 1e-4, f"d/d{name}")
    assert_rel_close(m2d, ref_m2d, 1e-4, "means2d.grad")


def test_matches_reference_with_sh_degree_setting_and_offcentre_camera():
    """settings.sh_degree below the model's, a rotated camera, Gaussians partly outside."""
    g, _ = scene(120, 40, 30, 3, torch.float64, seed=3)
    cam = camera_at_origin(40, 30, f=30.0, cx=12.0, cy=20.0)
    angle = 0.3
    rot = torch.tensor(
        [[math.cos(angle), 0.0, math.sin(angle)], [0.0, 1.0, 0.0], [-math.sin(angle), 0.0, math.cos(angle)]],
        dtype=torch.float64,
    )
    cam.viewmat[:3, :3] = rot
    cam.viewmat[:3, 3] = torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64)
    ref, ref_grads, ref_m2d = render_and_grads(g, cam, settings("reference", sh_degree=2))
    out, grads, m2d = render_and_grads(g, cam, settings("cpu", sh_degree=2))
    assert torch.allclose(out.image, ref.image, rtol=0, atol=1e-5)
    assert torch.allclose(out.depth, ref.depth, rtol=0, atol=1e-5)
    assert torch.equal(out.radii, ref.radii)
    for name in PARAM_NAMES:
        assert_rel_close(grads[name], ref_grads[name], 1e-4, f"d/d{name}")
    assert_rel_close(m2d, ref_m2d, 1e-4, "means2d.grad")


def test_opaque_pixels_stop_early_like_the_reference():
    """Many overlapping, fairly opaque Gaussians: transmittance reaches 1e-4 and compositing
    stops; alpha clamps at 0.99 for opacities above it."""
    g = random_scene(400, sh_degree=0, seed=5, dtype=torch.float64, spread=0.3,
                     log_scale_range=(-2.5, -1.5), opacity_range=(0.5, 0.995))  # fmt: skip
    cam = camera_at_origin(32, 32, f=40.0)
    ref, ref_grads, _ = render_and_grads(g, cam, settings("reference"))
    out, grads, _ = render_and_grads(g, cam, settings("cpu"))
    assert (ref.alpha > 0.999).any()  # T_final close to its 1e-4 floor
    assert torch.allclose(out.image, ref.image, rtol=0, atol=1e-5)
    assert torch.allclose(out.alpha, ref.alpha, rtol=0, atol=1e-5)
    for name in PARAM_NAMES:
        if ref_grads[name].numel():
            assert_rel_close(grads[name], ref_grads[name], 1e-4, f"d/d{name}")


# ---- gradient truth, determinism, absgrad ---------------------------------------------------


def test_gradcheck_float64():
    g, cam = scene(4, 20, 18, 1, torch.float64, seed=2)
    g.log_scales.data += 0.7  # a few pixels wide: smooth over the finite-difference steps
    s = settings("cpu")

    def fn(*params):
        out = rasterize(Gaussians(*params), cam, s)
        return out.image, out.alpha, out.depth

    params = tuple(p.detach().clone().requires_grad_() for p in g.params().values())
    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("absgrad", [True, False])  # two compiled variants of the backward's pass 3
def test_backward_is_deterministic_across_runs_and_threads(absgrad):
    g, cam = scene(300, 64, 48, 3, torch.float32, seed=4)
    runs = []
    for threads in (2, 2, 1):
        out, grads, m2d = render_and_grads(g, cam, settings("cpu", num_threads=threads, absgrad=absgrad))
        runs.append((out.image, grads, m2d, getattr(out.means2d, "absgrad", None)))
    for image, grads, m2d, abs_sums in runs[1:]:
        assert torch.equal(image, runs[0][0])
        assert torch.equal(m2d, runs[0][2])
        assert (abs_sums is None) == (not absgrad)
        if absgrad:
            assert torch.equal(abs_sums, runs[0][3])
        for name in PARAM_NAMES:
            assert torch.equal(grads[name], runs[0][1][name]), name
    # with and without the |.| sums: the same gradients up to the rounding of a fused multiply-add
    _, other, _ = render_and_grads(g, cam, settings("cpu", num_threads=2, absgrad=not absgrad))
    for name in PARAM_NAMES:
        torch.testing.assert_close(other[name], runs[0][1][name], rtol=1e-4, atol=1e-5)


def test_absgrad_matches_per_pixel_brute_force():
    """absgrad = sum over pixels of |dL_pixel / dmeans2d| (componentwise), L = sum of L_pixel."""
    g, cam = scene(6, 20, 20, 0, torch.float64, seed=6)
    g.log_scales.data += 0.5
    gen = torch.Generator().manual_seed(7)
    w_img = torch.randn(20, 20, 3, generator=gen, dtype=torch.float64)
    w_dep = torch.randn(20, 20, 1, generator=gen, dtype=torch.float64)

    ref = rasterize(g.clone().requires_grad_(), cam, settings("reference"))
    per_pixel = (ref.image * w_img).sum(-1) + (ref.depth * w_dep).sum(-1)  # [H, W]
    brute = torch.zeros_like(ref.means2d)
    for value in per_pixel.flatten():
        if value.requires_grad:
            (grad,) = torch.autograd.grad(value, ref.means2d, retain_graph=True, allow_unused=True)
            if grad is not None:
                brute += grad.abs()

    out = rasterize(g.clone().requires_grad_(), cam, settings("cpu", absgrad=True))
    ((out.image * w_img).sum() + (out.depth * w_dep).sum()).backward()
    assert out.means2d.absgrad.shape == out.means2d.shape
    assert brute.abs().sum() > 0
    assert torch.allclose(out.means2d.absgrad, brute, rtol=1e-6, atol=1e-9)
    # Without the flag nothing is attached.
    plain = rasterize(g.clone().requires_grad_(), cam, settings("cpu"))
    plain.image.sum().backward()
    assert not hasattr(plain.means2d, "absgrad")


# ---- edge cases ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_scene_renders_background(dtype):
    cam = camera_at_origin(37, 23, dtype=torch.float64)
    g = Gaussians.empty(sh_degree=1, dtype=dtype).requires_grad_()
    out = rasterize(g, cam, settings("cpu"))
    assert out.image.shape == (23, 37, 3) and out.image.dtype == dtype
    assert torch.allclose(out.image, torch.tensor(BG, dtype=dtype).expand(23, 37, 3))
    assert (out.alpha == 0).all() and (out.depth == 0).all()
    assert out.num_intersections == 0 and out.means2d.shape == (0, 2)
    (out.image.sum() + out.depth.sum()).backward()  # nothing to differentiate, but no crash
    assert g.means.grad is not None and g.means.grad.shape == (0, 3)


def test_gaussians_behind_the_camera_change_nothing():
    cam = camera_at_origin(32, 32, f=30.0)
    front = make_gaussians([[0.0, 0.0, 3.0], [0.3, -0.2, 4.0]], log_scale=-1.5, opacity=0.7)
    behind = make_gaussians([[0.0, 0.0, -3.0], [0.1, 0.1, 0.001]], log_scale=-1.5, opacity=0.7)
    only = rasterize(front, cam, settings("cpu"))
    both = rasterize(Gaussians.cat([behind, front]), cam, settings("cpu"))
    assert torch.allclose(only.image, both.image, atol=1e-12)
    assert both.radii[:2].tolist() == [0, 0]
    none_visible = rasterize(behind, cam, settings("cpu"))
    assert none_visible.num_intersections == 0
    assert torch.allclose(none_visible.image, torch.tensor(BG, dtype=torch.float64).expand(32, 32, 3))


def test_hand_computed_single_gaussian():
    cam = camera_at_origin(16, 16, f=20.0, cx=7.5, cy=7.5)
    z, log_s, o = 2.0, math.log(0.1), 0.6
    g = make_gaussians([[0.0, 0.0, z]], log_scale=log_s, opacity=o, rgb=(0.9, 0.2, 0.4))
    out = rasterize(g, cam, RenderSettings(backend="cpu", background=(0.1, 0.1, 0.1)))
    var = (20.0 / z) ** 2 * 0.1**2 + 0.3
    assert int(out.radii[0]) == math.ceil(3 * math.sqrt(var))
    assert out.alpha[7, 7, 0].item() == pytest.approx(o, abs=1e-12)
    assert out.depth[7, 7, 0].item() == pytest.approx(z)
    a = o * math.exp(-0.5 / var)
    assert out.image[7, 8, 0].item() == pytest.approx(0.9 * a + (1 - a) * 0.1, abs=1e-12)


def test_auto_backend_picks_cpu_for_cpu_tensors():
    from splatlab.render import available_backends, resolve_backend

    assert "cpu" in available_backends()
    assert resolve_backend(RenderSettings(), torch.device("cpu")) == "cpu"


# ---- compiled once, cached on disk ------------------------------------------------------------

_CACHE_PROBE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
import torch
from numba.core.registry import CPUDispatcher
from splatlab import rasterize, RenderSettings
from splatlab.render.cpu import kernels
from helpers import random_scene, camera_at_origin
for dtype in (torch.float32, torch.float64):
    g = random_scene(20, sh_degree=1, dtype=dtype).requires_grad_()
    out = rasterize(g, camera_at_origin(20, 20), RenderSettings(backend="cpu"))
    out.image.sum().backward()
stats = {name: [f.stats.cache_hits, f.stats.cache_misses] for name, f in vars(kernels).items()
         if isinstance(f, CPUDispatcher) and (f.stats.cache_hits or f.stats.cache_misses)}
print(json.dumps({"seconds": time.perf_counter() - t0, "stats": {k: [sum(v[0].values()), sum(v[1].values())]
                  for k, v in stats.items()}}))
"""


def test_kernels_load_from_the_disk_cache_in_a_new_process():
    # Populate the cache in this process (no-op when it is already there).
    for dtype in (torch.float32, torch.float64):
        g = random_scene(20, sh_degree=1, dtype=dtype).requires_grad_()
        rasterize(g, camera_at_origin(20, 20), RenderSettings(backend="cpu")).image.sum().backward()
    env = dict(os.environ, NUMBA_DEBUG_CACHE="0")
    result = subprocess.run(
        [sys.executable, "-c", _CACHE_PROBE, str(Path(__file__).parent)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    stats = report["stats"]
    assert "composite_forward" in stats and "project_backward" in stats, stats
    misses = {name: hm[1] for name, hm in stats.items() if hm[1]}
    assert not misses, f"kernels compiled again instead of loading from the cache: {misses}"
    assert all(hits > 0 for hits, _ in stats.values())

"""The cpu backend stage by stage against the same stage of render/reference.py.

Each autograd Function (ProjectGaussians, CompositeTiles) and the binning is fed the same
inputs as its reference stage, and compared forward and backward in float64, so that a
failure names the stage. Gradient truth from outside both: gradcheck in float64. Also:
bit-identical results run to run and across Numba thread counts, stage by stage.
"""

from __future__ import annotations

import pytest
import torch

from splatlab import RenderSettings
from splatlab.render import reference as ref

from helpers import camera_at_origin, random_scene

pytest.importorskip("numba")

from splatlab.render.cpu import camera_params  # noqa: E402
from splatlab.render.cpu.binning import bin_gaussians  # noqa: E402
from splatlab.render.cpu.composite import CompositeTiles  # noqa: E402
from splatlab.render.cpu.project import ProjectGaussians  # noqa: E402

BG = (0.1, 0.2, 0.3)
RAW = ("means", "quats", "log_scales", "logit_opacities", "sh0", "shN")


def _scene(n=120, width=40, height=30, sh_degree=3, seed=0, dtype=torch.float64):
    g = random_scene(n, sh_degree=sh_degree, seed=seed, dtype=dtype, log_scale_range=(-3.0, -1.5))
    g.means.data[:3, 2] = torch.tensor([-1.0, 0.005, 2e10], dtype=dtype)  # behind, too near, too far
    cam = camera_at_origin(width, height, f=float(max(width, height)), cx=width * 0.45, cy=height * 0.55)
    return g, cam


def _rel_err(actual, expected):
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


def _random_like(tensors, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in tensors]


# ---- stage 1-3: ProjectGaussians ---------------------------------------------------------------


def _reference_projection(params, cam, s: RenderSettings, sh_degree: int):
    from splatlab import Gaussians

    g = Gaussians(*params)
    proj = ref.project_gaussians(g.means, ref.quat_scale_to_covar(g.quats, g.scales), cam, s)
    colors = ref.gaussian_colors(g, cam, sh_degree)
    return proj, (proj.means2d, proj.conics, proj.depths, g.opacities * proj.compensation, colors)


@pytest.mark.parametrize("antialiased", [False, True])
def test_project_matches_reference_stage(antialiased):
    g, cam = _scene()
    s = RenderSettings(backend="cpu", antialiased=antialiased, num_threads=2)
    params = [p.detach().clone().requires_grad_() for p in g.params().values()]
    out = ProjectGaussians.apply(*params, camera_params(g, cam, s))
    proj, expected = _reference_projection(
        [p.detach().clone().requires_grad_() for p in params], cam, s, g.sh_degree
    )
    names = ("means2d", "conics", "depths", "opacities", "colors")
    for name, a, b in zip(names, out[:5], expected):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10), f"project forward {name}: {(a - b).abs().max():.3g}"
    assert torch.equal(out[5], proj.radii), "project forward radii"

    upstream = _random_like(expected, seed=3)
    got = torch.autograd.grad(out[:5], params, upstream)
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    _, expected = _reference_projection(ref_params, cam, s, g.sh_degree)
    want = torch.autograd.grad(expected, ref_params, upstream)
    for name, a, b in zip(RAW, got, want):
        assert _rel_err(a, b) < 1e-9, f"project backward d/d{name}: {_rel_err(a, b):.3g}"


def test_project_backward_of_gaussians_no_pixel_saw():
    """Rows whose upstream gradients are all zero (culled, or in no tile) are skipped by the
    kernel; they must still get exactly zero, and the other rows the reference's gradients."""
    g, cam = _scene()
    s = RenderSettings(backend="cpu", num_threads=2)
    params = [p.detach().clone().requires_grad_() for p in g.params().values()]
    out = ProjectGaussians.apply(*params, camera_params(g, cam, s))
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    _, expected = _reference_projection(ref_params, cam, s, g.sh_degree)
    upstream = _random_like(expected, seed=4)
    unseen = torch.arange(len(g)) % 3 == 0
    for u in upstream:
        u[unseen] = 0.0
    got = torch.autograd.grad(out[:5], params, upstream)
    want = torch.autograd.grad(expected, ref_params, upstream)
    for name, a, b in zip(RAW, got, want):
        assert torch.equal(a[unseen], torch.zeros_like(a[unseen])), f"d/d{name} of unseen rows"
        assert _rel_err(a, b) < 1e-9, f"project backward d/d{name}: {_rel_err(a, b):.3g}"


def test_project_gradcheck_float64():
    g, cam = _scene(n=6, sh_degree=2, seed=1)
    g.means.data[:3, 2] = 3.0  # keep every Gaussian away from the culling boundaries
    s = RenderSettings(backend="cpu", antialiased=True)
    cp = camera_params(g, cam, s)
    params = tuple(p.detach().clone().requires_grad_() for p in g.params().values())
    assert torch.autograd.gradcheck(lambda *p: ProjectGaussians.apply(*p, cp)[:5], params, eps=1e-6, atol=1e-6,
                                    rtol=1e-5)  # fmt: skip


# ---- stage 4: binning --------------------------------------------------------------------------


def _project_detached(g, cam, s):
    with torch.no_grad():
        return ProjectGaussians.apply(*g.params().values(), camera_params(g, cam, s))


def test_binning_matches_reference_stage():
    g, cam = _scene(n=300, seed=2)
    s = RenderSettings(backend="cpu")
    means2d, _conics, depths, _op, _col, radii, rect = _project_detached(g, cam, s)
    expected = ref.bin_gaussians(means2d, radii, depths, cam.width, cam.height)

    # With the reference's rectangles (the full 3-sigma squares) the order is the same.
    x0, y0, x1, y1 = ref.tile_rect(means2d, radii.to(means2d.dtype), cam.width, cam.height)
    square = torch.stack([x0, y0, x1, y1], dim=1).to(torch.int32)
    full = bin_gaussians(radii, square, depths, cam.width, cam.height, 2)
    assert full.isect_gid.tolist() == expected.gaussian_ids.tolist(), "binning order"
    assert full.tile_offsets.tolist() == expected.tile_offsets.tolist(), "binning tile offsets"

    # With the projection's rectangles (cut to where alpha can reach 1/255): per tile, a
    # subsequence of the reference's list, in the same order.
    cut = bin_gaussians(radii, rect, depths, cam.width, cam.height, 2)
    assert 0 < cut.num_intersections <= full.num_intersections
    for t in range(cut.tiles_x * cut.tiles_y):
        mine = cut.isect_gid[cut.tile_offsets[t] : cut.tile_offsets[t + 1]].tolist()
        theirs = expected.gaussian_ids[expected.tile_offsets[t] : expected.tile_offsets[t + 1]].tolist()
        kept = set(mine)
        assert mine == [gid for gid in theirs if gid in kept], f"binning tile {t}"


# ---- stage 5: CompositeTiles (+ finish_output) -----------------------------------------------


def _composite_inputs(seed=4, n=200, width=37, height=29):
    g = random_scene(n, sh_degree=1, seed=seed, dtype=torch.float64, log_scale_range=(-3.0, -1.5),
                     opacity_range=(0.2, 0.995))  # fmt: skip
    cam = camera_at_origin(width, height, f=35.0)
    s = RenderSettings(backend="cpu", background=BG, num_threads=2)
    means2d, conics, depths, opacities, colors, radii, rect = _project_detached(g, cam, s)
    leaves = [t.clone().requires_grad_() for t in (means2d, conics, opacities, colors, depths)]
    return leaves, radii, rect, cam


def _reference_composite(leaves, radii, cam, render_depth):
    means2d, conics, opacities, colors, depths = leaves
    binning = ref.bin_gaussians(means2d, radii, depths, cam.width, cam.height)
    features = torch.cat([colors, depths[:, None]], dim=-1) if render_depth else colors
    accum, t_final = ref.composite_tiles(means2d, conics, opacities, features, binning, cam.width, cam.height)
    proj = ref.Projection(means2d, conics, depths, radii, torch.ones_like(opacities))
    s = RenderSettings(background=BG, render_depth=render_depth)
    out = ref.finish_output(accum, t_final, proj, binning, s)
    return (out.image, out.alpha, out.depth) if render_depth else (out.image, out.alpha)


def _cpu_composite(leaves, radii, rect, cam, render_depth, threads=2):
    binning = bin_gaussians(radii, rect, leaves[4], cam.width, cam.height, threads)
    out = CompositeTiles.apply(*leaves, binning, cam.width, cam.height, BG, threads, False, render_depth)
    return out if render_depth else out[:2]


@pytest.mark.parametrize("render_depth", [True, False])
def test_composite_matches_reference_stage(render_depth):
    leaves, radii, rect, cam = _composite_inputs()
    got = _cpu_composite(leaves, radii, rect, cam, render_depth)
    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]
    expected = _reference_composite(ref_leaves, radii, cam, render_depth)
    for name, a, b in zip(("image", "alpha", "depth"), got, expected):
        assert torch.allclose(a, b, rtol=0, atol=1e-10), f"composite forward {name}: {(a - b).abs().max():.3g}"
    assert (expected[1] > 0.999).any(), "some pixels should saturate (early termination)"

    upstream = _random_like(expected, seed=5)
    g_cpu = torch.autograd.grad(got, leaves, upstream, allow_unused=True)
    g_ref = torch.autograd.grad(expected, ref_leaves, upstream, allow_unused=True)
    for name, a, b in zip(("means2d", "conics", "opacities", "colors", "depths"), g_cpu, g_ref):
        if b is None:  # depths without render_depth: no gradient from compositing
            assert a is None or not a.abs().any(), f"composite backward d/d{name} should be empty"
            continue
        assert _rel_err(a, b) < 1e-9, f"composite backward d/d{name}: {_rel_err(a, b):.3g}"


def test_composite_gradcheck_float64():
    leaves, radii, rect, cam = _composite_inputs(seed=6, n=5, width=18, height=17)
    leaves[1].data *= 0.05  # wide, smooth footprints over the finite-difference steps
    leaves[2].data.clamp_(max=0.8)
    binning = bin_gaussians(radii, rect, leaves[4], cam.width, cam.height, 1)

    def fn(*inputs):
        return CompositeTiles.apply(*inputs, binning, cam.width, cam.height, BG, 1, False, True)

    inputs = tuple(t.detach().clone().requires_grad_() for t in leaves)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-7, atol=1e-6, rtol=1e-4, fast_mode=True)


# ---- determinism ---------------------------------------------------------------------------------


@pytest.mark.parametrize("render_depth", [True, False])
def test_stages_bit_identical_across_runs_and_thread_counts(render_depth):
    from splatlab import rasterize

    g, cam = _scene(n=400, width=70, height=50, seed=7, dtype=torch.float32)
    results = []
    for threads in (1, 2, 2, 1):
        params = g.clone().requires_grad_()
        s = RenderSettings(backend="cpu", background=BG, num_threads=threads, render_depth=render_depth)
        out = rasterize(params, cam, s)
        gen = torch.Generator().manual_seed(9)
        loss = (out.image * torch.randn(out.image.shape, generator=gen)).sum() + out.alpha.sum()
        if render_depth:
            loss = loss + (out.depth * torch.rand(out.depth.shape, generator=gen)).sum()
        loss.backward()
        grads = [p.grad for p in params.params().values()]
        results.append([out.image, out.alpha, out.means2d, out.means2d.grad, *grads])
    for run in results[1:]:
        for i, (a, b) in enumerate(zip(run, results[0])):
            assert torch.equal(a, b), f"tensor {i} differs between runs / thread counts"

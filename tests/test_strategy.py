"""Densification: train/ops.py (parameter + Adam-state surgery) and the strategies."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
import torch

from splatlab import Camera, Gaussians, RenderOutput, RenderSettings, rasterize
from splatlab.gaussians import PARAM_NAMES
from splatlab.render.reference import quat_scale_to_covar
from splatlab.train import ops
from splatlab.train.strategy import (
    DefaultStrategy,
    DefaultStrategyConfig,
    MCMCStrategy,
    MCMCStrategyConfig,
    Strategy,
    make_strategy,
)

# ---- helpers ---------------------------------------------------------------------------------


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def as_training(g: Gaussians, seed: int = 0, adam_steps: int = 1):
    """Parameters + one Adam per field, stepped with random gradients so every row has state."""
    params = g.map(lambda t: torch.nn.Parameter(t.detach().float().clone()))
    optimizers = {
        name: torch.optim.Adam([{"params": [p], "lr": 1e-3, "name": name}]) for name, p in params.params().items()
    }
    gen = torch.Generator().manual_seed(seed)
    for _ in range(adam_steps):
        for name, p in params.params().items():
            p.grad = torch.randn(p.shape, generator=gen)
            optimizers[name].step()
            p.grad = None
    return params, optimizers


def random_training(n: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    g = Gaussians.random(n, sh_degree=1, generator=gen)
    g.quats = torch.randn(n, 4, generator=gen)
    g.log_scales = g.log_scales + 0.3 * torch.randn(n, 3, generator=gen)
    return as_training(g, seed)


def snapshot(params: Gaussians, optimizers) -> dict:
    """Detached copies of every parameter and every per-row state tensor."""
    out = {}
    for name, p in params.params().items():
        state = optimizers[name].state[p]
        out[name] = (p.detach().clone(), state["exp_avg"].clone(), state["exp_avg_sq"].clone(), state["step"].clone())
    return out


def assert_aligned(params: Gaussians, optimizers) -> None:
    """The optimizer holds exactly gaussians.<name>, its state has that param's shape, no stale key."""
    n = len(params)
    for name in PARAM_NAMES:
        p = getattr(params, name)
        assert isinstance(p, torch.nn.Parameter) and p.shape[0] == n
        opt = optimizers[name]
        assert opt.param_groups[0]["params"][0] is p
        assert opt.param_groups[0]["name"] == name
        assert list(opt.state.keys()) == [p] or len(opt.state) == 0
        for key in ("exp_avg", "exp_avg_sq") if len(opt.state) else ():
            assert opt.state[p][key].shape == p.shape, (name, key)
    DefaultStrategy().check_sanity(params, optimizers)


def adam_step_updates(params: Gaussians, optimizers, rows: torch.Tensor) -> None:
    """One more Adam step with unit gradients runs and moves the given rows of every field."""
    before = {name: p.detach().clone() for name, p in params.params().items()}
    for name, p in params.params().items():
        p.grad = torch.ones_like(p)
        optimizers[name].step()
        p.grad = None
    for name, p in params.params().items():
        assert not torch.equal(p.detach()[rows], before[name][rows]), name


def fake_output(means2d_grad: torch.Tensor, visible=None, radii=None, width=64, height=32) -> RenderOutput:
    """A RenderOutput with a hand-set screen-space gradient (as backward would leave it)."""
    n = means2d_grad.shape[0]
    means2d = torch.zeros(n, 2, requires_grad=True)
    means2d.grad = means2d_grad.clone()
    visible = torch.ones(n, dtype=torch.bool) if visible is None else visible
    radii = torch.where(visible, 3, 0).to(torch.int32) if radii is None else radii.to(torch.int32)
    return RenderOutput(
        image=torch.zeros(height, width, 3),
        alpha=torch.zeros(height, width, 1),
        depth=torch.zeros(height, width, 1),
        means2d=means2d,
        radii=radii,
        visible=visible,
        depths=torch.ones(n),
        num_intersections=0,
    )


# ---- ops: clone / split / prune / reset --------------------------------------------------------


def test_duplicate_copies_rows_and_aligns_state():
    params, opts = random_training(8)
    before = snapshot(params, opts)
    mask = torch.tensor([0, 1, 0, 0, 1, 1, 0, 0], dtype=torch.bool)
    src = ops.duplicate(params, opts, mask)
    assert len(params) == 11
    assert src.tolist() == list(range(8)) + [1, 4, 5]
    assert_aligned(params, opts)
    for name, (value, m, v, step) in before.items():
        p = getattr(params, name)
        state = opts[name].state[p]
        assert torch.equal(p.detach()[:8], value)
        assert torch.equal(p.detach()[8:], value[mask])  # clones equal their originals
        assert torch.equal(state["exp_avg"][:8], m) and torch.equal(state["exp_avg_sq"][:8], v)
        assert (state["exp_avg"][8:] == 0).all() and (state["exp_avg_sq"][8:] == 0).all()
        assert torch.equal(state["step"], step)
    adam_step_updates(params, opts, torch.arange(8, 11))


def test_split_samples_children_shrinks_scales_and_removes_parents():
    params, opts = random_training(6)
    before = snapshot(params, opts)
    mask = torch.tensor([1, 0, 0, 1, 0, 0], dtype=torch.bool)
    src = ops.split(params, opts, mask, n=2, generator=torch.Generator().manual_seed(1))
    keep = torch.tensor([1, 2, 4, 5])
    assert len(params) == 4 + 2 * 2
    assert src.tolist() == [1, 2, 4, 5, 0, 3, 0, 3]
    assert_aligned(params, opts)
    log_s = before["log_scales"][0]
    children_log_s = params.log_scales.detach()[4:]
    assert torch.allclose(children_log_s, log_s[[0, 3, 0, 3]] - math.log(1.6), atol=1e-6)  # scale / 1.6
    assert torch.allclose(params.log_scales.detach()[:4], log_s[keep])
    for name in ("quats", "logit_opacities", "sh0", "shN"):  # copied from the parents
        assert torch.equal(getattr(params, name).detach()[4:], before[name][0][[0, 3, 0, 3]])
    # children are near their parent (within a few of its standard deviations), not on it
    parent_means = before["means"][0][[0, 3, 0, 3]]
    offsets = params.means.detach()[4:] - parent_means
    assert (offsets.norm(dim=-1) > 0).all()
    assert (offsets.norm(dim=-1) < 6 * torch.exp(log_s[[0, 3, 0, 3]]).amax(-1)).all()
    for name, (value, m, v, _) in before.items():
        state = opts[name].state[getattr(params, name)]
        assert torch.equal(state["exp_avg"][:4], m[keep]) and torch.equal(state["exp_avg_sq"][:4], v[keep])
        assert (state["exp_avg"][4:] == 0).all() and (state["exp_avg_sq"][4:] == 0).all()
    adam_step_updates(params, opts, torch.arange(4, 8))


def test_split_children_follow_the_parent_distribution():
    """Many children of one anisotropic, rotated Gaussian have its mean and covariance."""
    g = Gaussians.random(1, sh_degree=0, generator=torch.Generator().manual_seed(3))
    g.quats = torch.tensor([[0.8, 0.3, -0.4, 0.2]])
    g.log_scales = torch.log(torch.tensor([[0.5, 0.1, 0.2]]))
    params, opts = as_training(g)
    covar = quat_scale_to_covar(params.quats.detach(), torch.exp(params.log_scales.detach()))[0]
    mean = params.means.detach()[0].clone()
    ops.split(params, opts, torch.tensor([True]), n=20000, scale_factor=1.6, generator=torch.Generator().manual_seed(0))
    samples = params.means.detach().double()
    assert len(params) == 20000
    assert torch.allclose(samples.mean(0), mean.double(), atol=0.02)
    assert torch.allclose(torch.cov(samples.T), covar.double(), atol=0.01, rtol=0.05)


def test_remove_keeps_the_rest_with_their_state():
    params, opts = random_training(7)
    before = snapshot(params, opts)
    mask = torch.tensor([1, 0, 1, 0, 0, 0, 1], dtype=torch.bool)
    src = ops.remove(params, opts, mask)
    assert src.tolist() == [1, 3, 4, 5]
    assert len(params) == 4
    assert_aligned(params, opts)
    for name, (value, m, v, _) in before.items():
        p = getattr(params, name)
        state = opts[name].state[p]
        assert torch.equal(p.detach(), value[~mask])
        assert torch.equal(state["exp_avg"], m[~mask]) and torch.equal(state["exp_avg_sq"], v[~mask])
    adam_step_updates(params, opts, torch.arange(4))


def test_reset_opacity_clamps_and_zeroes_only_opacity_state():
    params, opts = random_training(6)
    with torch.no_grad():
        params.logit_opacities.copy_(torch.logit(torch.tensor([0.001, 0.005, 0.02, 0.5, 0.9, 0.999])))
    before = snapshot(params, opts)
    ops.reset_opacity(params, opts, 0.01)
    assert_aligned(params, opts)
    expected = torch.minimum(torch.tensor([0.001, 0.005, 0.02, 0.5, 0.9, 0.999]), torch.tensor(0.01))
    assert torch.allclose(params.opacities.detach(), expected, rtol=1e-4)
    state = opts["logit_opacities"].state[params.logit_opacities]
    assert (state["exp_avg"] == 0).all() and (state["exp_avg_sq"] == 0).all()
    for name in ("means", "quats", "log_scales", "sh0", "shN"):
        p = getattr(params, name)
        assert torch.equal(p.detach(), before[name][0])
        assert torch.equal(opts[name].state[p]["exp_avg"], before[name][1])
    adam_step_updates(params, opts, torch.arange(6))


def test_ops_reject_bad_masks_and_check_sanity_catches_misalignment():
    params, opts = random_training(4)
    with pytest.raises(ValueError, match="mask"):
        ops.remove(params, opts, torch.tensor([True, False]))
    strategy = DefaultStrategy()
    strategy.check_sanity(params, opts)
    params.means = torch.nn.Parameter(params.means.detach().clone())  # swapped behind the optimizer's back
    with pytest.raises(ValueError, match="does not hold gaussians.means"):
        strategy.check_sanity(params, opts)
    params, opts = random_training(4)
    p = params.log_scales
    opts["log_scales"].state[p]["exp_avg"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="shape"):
        strategy.check_sanity(params, opts)
    params, opts = random_training(4)
    del opts["sh0"]
    with pytest.raises(ValueError, match="no optimizer"):
        strategy.check_sanity(params, opts)


# ---- default strategy: statistics, growth, pruning, reset, budget ------------------------------


def test_gradient_statistic_is_ndc_norm_averaged_over_visible_views():
    params, opts = random_training(3)
    strategy = DefaultStrategy(DefaultStrategyConfig(refine_start=1000))
    state = strategy.initialize_state(1.0)
    grad = torch.tensor([[1e-3, 0.0], [0.0, 1e-3], [3e-4, 4e-4]])
    visible = torch.tensor([True, True, False])
    strategy.step_post_backward(params, opts, state, 1, fake_output(grad, visible), 0.0)  # W=64, H=32
    strategy.step_post_backward(params, opts, state, 2, fake_output(grad), 0.0)
    ndc = torch.tensor([[1e-3 * 32, 0.0], [0.0, 1e-3 * 16], [3e-4 * 32, 4e-4 * 16]]).norm(dim=-1)
    assert torch.allclose(state["grad2d"], ndc * torch.tensor([2.0, 2.0, 1.0]))
    assert state["count"].tolist() == [2.0, 2.0, 1.0]
    assert torch.allclose(state["max_radii"], torch.full((3,), 3 / 64))


def test_pixel_weighted_statistic_grows_from_the_views_where_a_gaussian_looks_large():
    """Pixel-GS weighting: a Gaussian with a large gradient in one close-up view (radius 12 px)
    and none in three wide views (radius 1 px) averages above the threshold; one vote per view
    averages it below."""
    grads = [torch.tensor([[1e-4, 0.0]]), *[torch.zeros(1, 2)] * 3]  # NDC norm: 3.2e-3, then 0
    radii = [torch.tensor([12]), *[torch.tensor([1])] * 3]
    averages = {}
    for weighted in (False, True):
        params, opts = random_training(1)
        strategy = DefaultStrategy(DefaultStrategyConfig(refine_start=1000, pixel_weighted=weighted))
        state = strategy.initialize_state(1.0)
        for step, (grad, r) in enumerate(zip(grads, radii), start=1):
            strategy.step_post_backward(params, opts, state, step, fake_output(grad, radii=r), 0.0)
        averages[weighted] = float(state["grad2d"][0] / state["count"][0])
    close_up = math.pi * 144
    assert averages[False] == pytest.approx(3.2e-3 / 4)
    assert averages[True] == pytest.approx(3.2e-3 * close_up / (close_up + 3 * math.pi))
    assert averages[True] > 3 * averages[False]
    # A Gaussian larger than the image weighs as the image; an invisible one not at all.
    params, opts = random_training(2)
    strategy = DefaultStrategy(DefaultStrategyConfig(refine_start=1000, pixel_weighted=True))
    state = strategy.initialize_state(1.0)
    out = fake_output(torch.full((2, 2), 1e-4), visible=torch.tensor([True, False]), radii=torch.tensor([500, 7]))
    strategy.step_post_backward(params, opts, state, 1, out, 0.0)
    assert state["count"].tolist() == [64.0 * 32.0, 0.0]


def _two_gaussian_scene(shift_a: float, shift_b: float):
    """A and B, left and right of centre; the target has A moved by shift_a, B by shift_b."""
    cam = Camera.look_at((0.0, 0.0, -4.0), (0.0, 0.0, 0.0), up=(0.0, -1.0, 0.0), width=32, height=32)
    n = 2
    g = Gaussians(
        means=torch.tensor([[-0.8, 0.0, 0.0], [0.8, 0.0, 0.0]]),
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        log_scales=torch.full((n, 3), math.log(0.08)),
        logit_opacities=torch.full((n,), logit(0.8)),
        sh0=torch.full((n, 1, 3), 1.0),
        shN=torch.zeros(n, 0, 3),
    )
    target_g = g.clone()
    target_g.means = g.means + torch.tensor([[shift_a, 0.0, 0.0], [shift_b, 0.0, 0.0]])
    settings = RenderSettings(backend="reference")
    with torch.no_grad():
        target = rasterize(target_g, cam, settings).image
    return g, cam, settings, target


def _render_and_backward(params, cam, settings, target, strategy, opts, state, step):
    out = rasterize(params, cam, settings)
    strategy.step_pre_backward(params, opts, state, step, out)
    loss = ((out.image - target) ** 2).mean()
    loss.backward()
    return out


@pytest.mark.parametrize("extent, op", [(10.0, "clone"), (1.0, "split")])
def test_real_render_grows_only_the_gaussian_with_a_large_gradient(extent, op):
    g, cam, settings, target = _two_gaussian_scene(shift_a=0.15, shift_b=0.0001)
    params, opts = as_training(g, adam_steps=0)
    cfg = DefaultStrategyConfig(refine_start=1, refine_every=2, reset_every=10_000)
    strategy = DefaultStrategy(cfg)
    state = strategy.initialize_state(extent)
    # step 1: statistics only; step 2: statistics, then refine
    for step in (1, 2):
        out = _render_and_backward(params, cam, settings, target, strategy, opts, state, step)
        if step == 1:
            events = strategy.step_post_backward(params, opts, state, step, out, 1e-3)
            assert events == [] and state["count"].tolist() == [1.0, 1.0]
            avg = state["grad2d"] / state["count"]
            assert avg[0] > 10 * cfg.effective_grad_threshold and 0 < avg[1] < 0.1 * cfg.effective_grad_threshold, avg
            for p in params.params().values():
                p.grad = None
        else:
            before = params.means.detach().clone()
            events = strategy.step_post_backward(params, opts, state, step, out, 1e-3)
    assert len(params) == 3
    if op == "clone":
        assert events == ["clone 1, split 0, prune 0"]
        assert torch.equal(params.means.detach()[2], before[0]) and torch.equal(params.means.detach()[:2], before)
    else:
        assert events == ["clone 0, split 1, prune 0"]
        assert torch.equal(params.means.detach()[0], before[1])  # B kept, first
        assert torch.allclose(params.log_scales.detach()[1:], torch.full((2, 3), math.log(0.08 / 1.6)))
    assert_aligned(params, opts)
    assert state["grad2d"].shape == (3,) and (state["count"] == 0).all()  # statistics reset


def test_budget_grows_only_the_largest_gradients_and_reports():
    params, opts = random_training(5)
    with torch.no_grad():
        params.log_scales.fill_(math.log(0.001))  # all small: clone candidates
        params.logit_opacities.fill_(logit(0.5))
    grad = torch.tensor([[1e-4, 0], [5e-4, 0], [2e-4, 0], [4e-4, 0], [1e-8, 0]])  # NDC x 32
    cfg = DefaultStrategyConfig(refine_start=0, refine_every=1, max_gaussians=7)
    strategy = DefaultStrategy(cfg)
    state = strategy.initialize_state(1.0)
    before = params.means.detach().clone()
    events = strategy.step_post_backward(params, opts, state, 1, fake_output(grad), 0.0)
    assert len(params) == 7
    assert events[0] == "clone 2, split 0, prune 0"
    assert events[1].startswith("budget reached: 7 Gaussians")
    assert torch.equal(params.means.detach()[5:], before[[1, 3]])  # the two largest gradients
    events = strategy.step_post_backward(params, opts, state, 2, fake_output(torch.cat([grad, grad[:2]])), 0.0)
    assert len(params) == 7 and events[0] == "clone 0, split 0, prune 0" and "budget reached" in events[1]
    assert_aligned(params, opts)


def test_prune_rules_and_opacity_reset():
    params, opts = random_training(5)
    with torch.no_grad():
        params.log_scales.fill_(math.log(0.02))
        params.log_scales[3] = math.log(0.5)  # too big in world space (> 0.1 * extent 1)
        params.logit_opacities.copy_(torch.logit(torch.tensor([0.001, 0.5, 0.5, 0.5, 0.5])))
    grad = torch.zeros(5, 2)
    radii = torch.tensor([3, 3, 3, 3, 40])  # Gaussian 4 covers 40/64 > 0.15 of the image
    cfg = DefaultStrategyConfig(refine_start=0, refine_every=10, reset_every=20)
    strategy = DefaultStrategy(cfg)
    state = strategy.initialize_state(1.0)
    # before the first reset: only transparency prunes
    events = strategy.step_post_backward(params, opts, state, 10, fake_output(grad, radii=radii), 0.0)
    assert events == ["clone 0, split 0, prune 1"] and len(params) == 4
    # at the reset: opacities clamped to 2 * prune_opacity, their Adam state zeroed
    events = strategy.step_post_backward(params, opts, state, 20, fake_output(grad[:4], radii=radii[1:]), 0.0)
    assert events == ["clone 0, split 0, prune 0", "opacity reset"]
    assert torch.allclose(params.opacities.detach(), torch.full((4,), 0.01), rtol=1e-4)
    st = opts["logit_opacities"].state[params.logit_opacities]
    assert (st["exp_avg"] == 0).all()
    with torch.no_grad():
        params.logit_opacities.fill_(logit(0.5))
    # after the first reset, with the screen rules on: the one too big in world space is pruned;
    # the one too big on screen is split (grow_scale2d) and its children, which inherit its
    # on-screen size, are pruned (prune_scale2d) -- the rule the original 3DGS code never fires
    strategy.config = dataclasses.replace(cfg, refine_scale2d_stop=100)
    events = strategy.step_post_backward(params, opts, state, 30, fake_output(grad[:4], radii=radii[1:]), 0.0)
    assert events == ["clone 0, split 1, prune 3"] and len(params) == 2
    assert_aligned(params, opts)


def test_screen_size_rules_split_when_on_and_are_off_by_default():
    params, opts = random_training(3)
    with torch.no_grad():
        params.log_scales.fill_(math.log(0.02))
        params.logit_opacities.fill_(logit(0.5))
    cfg = DefaultStrategyConfig(refine_start=0, refine_every=10, reset_every=50)
    strategy = DefaultStrategy(cfg)
    state = strategy.initialize_state(1.0)
    out = fake_output(torch.zeros(3, 2), radii=torch.tensor([3, 60, 3]))
    events = strategy.step_post_backward(params, opts, state, 10, out, 0.0)
    assert events == ["clone 0, split 0, prune 0"] and len(params) == 3
    strategy.config = dataclasses.replace(cfg, refine_scale2d_stop=100)
    events = strategy.step_post_backward(params, opts, state, 20, out, 0.0)
    assert events == ["clone 0, split 1, prune 0"] and len(params) == 4  # before the first reset: no prune


def test_no_refinement_outside_the_window_and_absgrad_needs_the_renderer():
    params, opts = random_training(3)
    strategy = DefaultStrategy(DefaultStrategyConfig(refine_start=5, refine_stop=50, refine_every=5))
    state = strategy.initialize_state(1.0)
    big = torch.full((3, 2), 1.0)
    assert strategy.step_post_backward(params, opts, state, 5, fake_output(big), 0.0) == []  # step == start
    assert strategy.step_post_backward(params, opts, state, 50, fake_output(big), 0.0) == []  # stopped
    assert len(params) == 3
    strategy = DefaultStrategy(DefaultStrategyConfig(absgrad=True))
    assert strategy.config.effective_grad_threshold == 8e-4
    with pytest.raises(RuntimeError, match="absgrad"):
        strategy.step_post_backward(params, opts, strategy.initialize_state(1.0), 1, fake_output(big), 0.0)


def test_scaled_configs():
    cfg = DefaultStrategyConfig(refine_start=0).scaled(0.01)
    # A compressed schedule keeps its floors: refine every >= 20 steps, resets >= 1000 apart.
    assert (cfg.refine_start, cfg.refine_stop, cfg.refine_every, cfg.reset_every) == (20, 150, 20, 1000)
    assert DefaultStrategyConfig().scaled(0.1).reset_every == 1000 and DefaultStrategyConfig().scaled(1.0).reset_every == 3000
    assert DefaultStrategyConfig(refine_every=5).scaled(0.5).refine_every == 5  # never raised above its own value
    assert cfg.grad_threshold is None and cfg.prune_opacity == 0.005
    m = MCMCStrategyConfig().scaled(2.0)
    assert (m.refine_start, m.refine_stop, m.refine_every, m.cap_max) == (1000, 50_000, 200, 1_000_000)
    with pytest.raises(ValueError):
        MCMCStrategyConfig().scaled(0.0)


# ---- MCMC -----------------------------------------------------------------------------------


def _scales_formula(o: float, s: float, n: int) -> float:
    o_new = 1 - (1 - o) ** (1 / n)
    denom = sum(
        math.comb(i - 1, k) * (-1) ** k * o_new ** (k + 1) / math.sqrt(k + 1) for i in range(1, n + 1) for k in range(i)
    )
    return o / denom * s


def test_relocation_update_matches_the_paper_and_preserves_the_profile():
    o = torch.tensor([0.3, 0.9, 0.999, 0.5])
    s = torch.tensor([[1.0, 2.0, 0.5]]).repeat(4, 1)
    copies = torch.tensor([1, 3, 40, 7])
    o_new, s_new = ops.relocation_update(o, s, copies, ops.binomial_table())
    for j in range(4):
        n = int(copies[j])
        assert o_new[j].item() == pytest.approx(1 - (1 - o[j].item()) ** (1 / n), rel=1e-5)
        assert s_new[j, 0].item() == pytest.approx(_scales_formula(o[j].item(), 1.0, n), rel=1e-4)
        assert torch.allclose(s_new[j], s_new[j, 0] * s[j])
        # N copies composited on top of each other integrate (1D) to the original profile
        x = torch.linspace(-30, 30, 60001, dtype=torch.float64)
        a = o_new[j].double() * torch.exp(-(x**2) / (2 * s_new[j, 0].double() ** 2))
        assert torch.trapezoid(1 - (1 - a) ** n, x).item() == pytest.approx(
            torch.trapezoid(o[j].double() * torch.exp(-(x**2) / 2), x).item(), rel=1e-5
        )


def test_relocate_moves_dead_onto_live_and_keeps_the_count():
    params, opts = random_training(4)
    with torch.no_grad():
        params.logit_opacities.copy_(torch.logit(torch.tensor([0.001, 0.6, 0.002, 0.004])))
    live_mean = params.means.detach()[1].clone()
    live_scale = torch.exp(params.log_scales.detach()[1]).clone()
    dead = params.opacities.detach() <= 0.005
    moved = ops.relocate(params, opts, dead, generator=torch.Generator().manual_seed(0))
    assert moved == 3 and len(params) == 4
    assert torch.equal(params.means.detach(), live_mean.expand(4, 3))  # all moved onto the one live
    assert torch.allclose(params.opacities.detach(), torch.full((4,), 1 - 0.4 ** (1 / 4)), rtol=1e-5)
    expected_scale = _scales_formula(0.6, 1.0, 4) * live_scale
    assert torch.allclose(torch.exp(params.log_scales.detach()), expected_scale.expand(4, 3), rtol=1e-4)
    assert_aligned(params, opts)
    for name in PARAM_NAMES:  # every row changed: all moments restart
        assert (opts[name].state[getattr(params, name)]["exp_avg"] == 0).all()


def test_relocate_samples_live_gaussians_proportionally_to_opacity():
    params, opts = random_training(300, seed=2)
    o = torch.full((300,), 0.001)
    o[:3] = torch.tensor([0.1, 0.3, 0.6])
    with torch.no_grad():
        params.logit_opacities.copy_(torch.logit(o))
    means = params.means.detach().clone()
    before = snapshot(params, opts)
    ops.relocate(params, opts, o <= 0.005, generator=torch.Generator().manual_seed(0))
    new_means = params.means.detach()[3:]
    counts = torch.stack([(new_means == means[i]).all(-1).sum() for i in range(3)]).float()
    assert counts.sum() == 297  # every dead one sits on a live one
    assert torch.allclose(counts / 297, torch.tensor([0.1, 0.3, 0.6]), atol=0.08)
    assert torch.equal(params.sh0.detach()[:3], before["sh0"][0][:3])  # live ones keep their colour


def test_mcmc_refine_adds_five_percent_up_to_the_cap():
    params, opts = random_training(40)
    with torch.no_grad():
        params.logit_opacities.fill_(logit(0.5))
    strategy = MCMCStrategy(MCMCStrategyConfig(refine_start=0, refine_every=10, cap_max=43, noise_lr=0.0))
    state = strategy.initialize_state(1.0)
    out = fake_output(torch.zeros(40, 2))
    events = strategy.step_post_backward(params, opts, state, 10, out, 1e-3)
    assert len(params) == 42 and events == ["relocate 0, add 2"]  # int(40 * 1.05) = 42
    events = strategy.step_post_backward(params, opts, state, 20, out, 1e-3)
    assert len(params) == 43 and events == ["relocate 0, add 1", "budget reached: 43 Gaussians (cap_max)"]
    events = strategy.step_post_backward(params, opts, state, 30, out, 1e-3)
    assert len(params) == 43 and events == ["relocate 0, add 0"]  # reported once
    assert strategy.step_post_backward(params, opts, state, 31, out, 1e-3) == []  # not a refine step
    assert_aligned(params, opts)
    # sample_add alone: parents and copies share the relocation opacity
    params, opts = random_training(2)
    with torch.no_grad():
        params.logit_opacities.copy_(torch.logit(torch.tensor([0.5, 1e-6])))
    assert ops.sample_add(params, opts, 1, generator=torch.Generator().manual_seed(0)) == 1
    assert torch.allclose(params.opacities.detach()[[0, 2]], torch.full((2,), 1 - 0.5**0.5), rtol=1e-5)
    assert_aligned(params, opts)


def test_noise_moves_transparent_gaussians_not_opaque_ones():
    params, opts = random_training(2)
    with torch.no_grad():
        params.logit_opacities.copy_(torch.logit(torch.tensor([0.001, 0.9])))
        params.log_scales.fill_(math.log(0.1))
    before = params.means.detach().clone()
    strategy = MCMCStrategy(MCMCStrategyConfig(), generator=torch.Generator().manual_seed(0))
    state = strategy.initialize_state(1.0)
    strategy.step_post_backward(params, opts, state, 1, fake_output(torch.zeros(2, 2)), 1.6e-4)
    moved = (params.means.detach() - before).norm(dim=-1)
    # scale = 5e5 * 1.6e-4 = 80, covariance 0.01: a step of about 0.8 * |eta| for the transparent one
    assert moved[0] > 0.1
    assert moved[1] < 1e-12 * moved[0]
    assert_aligned(params, opts)


def test_mcmc_loss_is_the_l1_regularisers():
    params, _ = random_training(5)
    strategy = MCMCStrategy(MCMCStrategyConfig(opacity_reg=0.1, scale_reg=0.2))
    loss = strategy.loss(params, strategy.initialize_state(1.0), 0)
    expected = 0.1 * params.opacities.mean() + 0.2 * params.scales.mean()
    assert torch.allclose(loss, expected)
    loss.backward()
    assert params.logit_opacities.grad is not None and params.log_scales.grad is not None
    assert DefaultStrategy().loss(params, {}, 0) is None


# ---- state, factory ---------------------------------------------------------------------------


def test_state_round_trips_through_torch_save():
    params, opts = random_training(4)
    strategy = make_strategy("default")
    state = strategy.initialize_state(2.5)
    strategy.step_post_backward(params, opts, state, 1, fake_output(torch.rand(4, 2) * 1e-3), 0.0)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf)  # weights_only: the state is plain data
    assert loaded.keys() == state.keys() and loaded["scene_extent"] == 2.5
    for key in ("grad2d", "count", "max_radii"):
        assert torch.equal(loaded[key], state[key])
    strategy.step_post_backward(params, opts, loaded, 2, fake_output(torch.rand(4, 2) * 1e-3), 0.0)
    assert loaded["count"].tolist() == [2.0] * 4
    for name in ("mcmc",):
        s = make_strategy(name)
        st = s.initialize_state(1.0)
        buf = io.BytesIO()
        torch.save(st, buf)
        buf.seek(0)
        assert torch.load(buf) == st


def test_make_strategy():
    assert isinstance(make_strategy("default"), DefaultStrategy)
    assert isinstance(make_strategy("3dgs", max_gaussians=10), Strategy)
    assert make_strategy("absgrad").config.absgrad
    m = make_strategy("MCMC", cap_max=1000)
    assert isinstance(m, MCMCStrategy) and m.config.cap_max == 1000
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("nope")
    with pytest.raises(ValueError, match="cap_max"):
        make_strategy("default", cap_max=3)

"""The fused CPU SSIM (render/cpu/ssim.py) against its readable PyTorch twin, forward and backward."""

from __future__ import annotations

import pytest
import torch

from splatlab import losses

pytest.importorskip("numba")


def _pair(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=gen)
    render = (target + 0.1 * torch.randn(shape, generator=gen)).clamp(0, 1)
    return render, target


def _twin(x, y):
    x4 = x if x.dim() == 4 else x.unsqueeze(0)
    y4 = y if y.dim() == 4 else y.unsqueeze(0)
    return losses._ssim_map_torch(x4.permute(0, 3, 1, 2), y4.permute(0, 3, 1, 2))


@pytest.mark.parametrize("shape", [(37, 23, 3), (2, 16, 40, 3), (5, 4, 1)])
def test_fused_ssim_matches_the_torch_twin(shape):
    render, target = _pair(shape)
    assert losses._fused_ssim_applies(render.unsqueeze(0), target.unsqueeze(0))
    x = render.clone().requires_grad_()
    fused = losses.ssim_map(x, target)
    x_ref = render.clone().requires_grad_()
    twin = _twin(x_ref, target)
    assert fused.shape == twin.shape
    assert torch.allclose(fused, twin, rtol=0, atol=2e-6), (fused - twin).abs().max()
    weights = torch.rand(twin.shape, generator=torch.Generator().manual_seed(1))
    (g_fused,) = torch.autograd.grad((fused * weights).sum(), x)
    (g_twin,) = torch.autograd.grad((twin * weights).sum(), x_ref)
    err = ((g_fused - g_twin).abs().max() / g_twin.abs().max()).item()
    assert err < 1e-4, err


def test_fused_ssim_mean_loss_gradient_and_float64_truth():
    """losses.ssim (the mean) in float32 through the fused path against float64 PyTorch."""
    render, target = _pair((48, 33, 3), seed=2)
    x = render.clone().requires_grad_()
    value = losses.ssim(x, target)
    value.backward()
    x64 = render.double().requires_grad_()
    value64 = losses.ssim(x64, target.double())  # float64: the PyTorch twin
    value64.backward()
    assert abs(value.item() - value64.item()) < 1e-5
    assert ((x.grad.double() - x64.grad).abs().max() / x64.grad.abs().max()).item() < 1e-4


def test_fused_ssim_is_deterministic_and_only_for_cpu_float32():
    render, target = _pair((40, 30, 3), seed=3)
    runs, previous = [], torch.get_num_threads()
    try:
        for threads in (1, 2, 2):
            torch.set_num_threads(threads)
            x = render.clone().requires_grad_()
            m = losses.ssim_map(x, target)
            m.sum().backward()
            runs.append((m.detach(), x.grad))
    finally:
        torch.set_num_threads(previous)
    for m, g in runs[1:]:
        assert torch.equal(m, runs[0][0]) and torch.equal(g, runs[0][1])
    x4, y4 = render.unsqueeze(0), target.unsqueeze(0)
    assert not losses._fused_ssim_applies(x4.double(), y4.double())
    assert not losses._fused_ssim_applies(x4, y4.clone().requires_grad_())

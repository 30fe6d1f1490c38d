"""One training step, and nothing else: no files, no clock, no events.

    render every view of the batch -> loss (1-l) L1 + l (1-SSIM) over the pixels that count
    (+ the strategy's regularisers) -> backward -> [reduce: all-reduce across processes]
    -> Adam -> densification strategy -> zero grads

The run (train/run.py) decides which views, the schedule values and when to save; a
distributed run passes `reduce` to sum gradients across processes before the optimizer
step. Everything here works on whatever device the state lives on, and never copies a tensor
to the host: the loss and PSNR come back as tensors, read when the run logs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch

from ..camera import Camera
from ..losses import photometric_loss
from ..render import RenderOutput, RenderSettings, rasterize
from .exposure import ExposureConfig
from .pose import PoseConfig
from .state import TrainState
from .strategy import Strategy


@dataclass
class StepView:
    """One training view, ready on the training device."""

    camera: Camera
    target: torch.Tensor  # [H, W, 3] float in [0, 1]
    mask: Optional[torch.Tensor]  # [H, W, 1] float 0/1: the pixels that count; None = all
    background: tuple[float, float, float]
    index: int  # position in the scene's training views
    inv_depth: Optional[torch.Tensor] = None  # [H, W] inverse-depth prior, 0 = unknown (depth maps)
    depth_points: Optional[torch.Tensor] = None  # [K, 3] (u, v, z) of the SfM points the view saw
    measure: Optional[torch.Tensor] = None  # [H, W, 1] pixels the PSNR counts, when not `mask`


def downsampled(view: StepView, divisor: int) -> StepView:
    """The view at 1/divisor of its resolution: camera scaled exactly, pixels area-averaged."""
    if divisor == 1:
        return view
    camera = view.camera.scaled(1.0 / divisor)
    size = (camera.height, camera.width)

    def area(image):  # [H, W, C] -> [h, w, C]
        return torch.nn.functional.interpolate(image.permute(2, 0, 1)[None], size=size, mode="area")[0].permute(1, 2, 0)

    def binary(m):  # a 0/1 mask [H, W, 1] -> [h, w, 1], a pixel counts when most of it did
        return None if m is None else (area(m) > 0.5).to(m.dtype)

    inv_depth = None if view.inv_depth is None else area(view.inv_depth[..., None])[..., 0]
    points = None
    if view.depth_points is not None:
        scale = view.depth_points.new_tensor([camera.width / view.camera.width, camera.height / view.camera.height, 1.0])
        points = view.depth_points * scale
    # Every field, so that none is dropped: `measure` once was, and object masks then trained
    # the coarse steps against the whole frame (exposure applied to the empty background too).
    return replace(view, camera=camera, target=area(view.target), mask=binary(view.mask),
                   inv_depth=inv_depth, depth_points=points, measure=binary(view.measure))


@dataclass
class StepPlan:
    """What the schedule says for this step."""

    iteration: int  # 1-based: iterations completed once this step ends
    progress: float  # fraction of the schedule, in [0, 1]
    means_lr: float
    sh_degree: int
    depth_weight: float = 0.0  # weight of the depth term this step (0 = no depth rendered)
    divisor: int = 1  # train at 1/divisor of the resolution (coarse to fine)


@dataclass
class LossSettings:
    """How the step's loss is made (from TrainConfig)."""

    ssim_lambda: float = 0.2
    exposure: Optional[ExposureConfig] = None  # learn per-image exposure (state.extras["exposure"])
    depth_scale: float = 1.0  # inverse depths are multiplied by this (the scene extent): unit-free
    pose: Optional[PoseConfig] = None  # refine the training cameras' poses (state.extras["pose"])


@dataclass
class StepResult:
    loss: torch.Tensor  # [] detached photometric loss over the counted pixels, mean over the batch
    mse: torch.Tensor  # [] detached, over the counted pixels of the batch (PSNR = -10 log10 mse)
    messages: list[str]  # what densification did

    @property
    def psnr(self) -> float:
        mse = float(self.mse)
        return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


Reduce = Callable[[TrainState], None]  # makes gradients (and statistics) agree across processes


def masked_loss(image: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor], ssim_lambda: float,
                measure: Optional[torch.Tensor] = None):
    """(loss, share, mse) of a render against its target over the pixels where mask = 1
    (`mse` over `measure` instead, when given: the pixels the PSNR counts).

    Masked-out pixels are replaced by the target's own values, so they add no error and no
    gradient. `loss` keeps the per-pixel weight of an unmasked image (1 / all pixels), so that
    the screen-space gradients densification reads mean the same with and without masks;
    `loss / share` is its mean over the counted pixels (what the progress bar shows), and
    `mse` is over the counted pixels too (PSNR). SSIM windows at the mask edge see target pixels.
    """
    if mask is None:
        loss = photometric_loss(image, target, ssim_lambda)
        error = (image.detach().clamp(0, 1) - target) ** 2  # [H, W, 3]
        if measure is None:
            return loss, 1.0, error.mean()
        return loss, 1.0, (error * measure).mean() / measure.mean().clamp_min(1.0 / measure.numel())
    image = image * mask + target * (1 - mask)
    share = mask.mean().clamp_min(1.0 / mask.numel())  # fraction of pixels that count
    loss = photometric_loss(image, target, ssim_lambda)
    mse = torch.mean((image.detach().clamp(0, 1) - target) ** 2) / share
    return loss, share, mse


def depth_loss(out: RenderOutput, view: StepView, scale: float) -> Optional[torch.Tensor]:
    """L1 between the rendered inverse depth (alpha / expected depth: 0 where nothing is drawn)
    and the view's prior, dense maps or the SfM points it saw, times `scale`; None without one.
    This is 3DGS train.py's depth_l1 term; the 3DGS rasterizer composites inverse depth, we
    invert the expected depth, which agrees on opaque surfaces."""
    inv = out.alpha[..., 0] / out.depth[..., 0].clamp_min(1e-6)  # [H, W]
    if view.inv_depth is not None:
        known = view.inv_depth > 0
        return (inv - view.inv_depth).abs()[known].mean() * scale if known.any() else None
    if view.depth_points is not None and len(view.depth_points):
        u, v, z = view.depth_points.unbind(-1)
        return (inv[v.long(), u.long()] - 1.0 / z).abs().mean() * scale
    return None


def render_view(state: TrainState, view: StepView, settings: RenderSettings, plan: StepPlan,
                lighting=None, pose=None, behind: Optional[torch.Tensor] = None) -> RenderOutput:
    """The training render of `view` (lit as its photo was, when a `lighting` model is given;
    from its corrected camera, when a `pose` correction is; over `behind` [H, W, 3] instead of
    the view's background colour, when given)."""
    settings = replace(settings, background=view.background, sh_degree=plan.sh_degree,
                       render_depth=plan.depth_weight > 0 and (view.inv_depth is not None or view.depth_points is not None))
    smoothing = state.extras.get("smoothing")  # Mip-Splatting's 3D filter, before anything else
    gaussians = state.params if smoothing is None else smoothing.apply(state.params)
    if lighting is not None:
        gaussians = lighting.shade(gaussians, view.index, view.camera)
    if pose is not None:
        gaussians = pose.apply(gaussians, view.index, view.camera)
    out = rasterize(gaussians, view.camera, settings)
    if behind is None:
        return out
    shift = behind - torch.tensor(view.background, dtype=out.image.dtype, device=out.image.device)
    return replace(out, image=out.image + (1 - out.alpha) * shift)  # T bg -> T behind


def train_step(
    state: TrainState,
    strategy: Strategy,
    views: list[StepView],
    plan: StepPlan,
    settings: RenderSettings,
    losses: LossSettings,
    reduce: Optional[Reduce] = None,
) -> StepResult:
    """One optimisation step over a batch of views (their losses are averaged)."""
    exposure = state.extras.get("exposure") if losses.exposure is not None else None
    lighting = state.extras.get("lighting") if losses.exposure is not None else None
    pose = state.extras.get("pose") if losses.pose is not None and plan.progress >= losses.pose.start else None
    surround = state.extras.get("surround")  # object masks: the learned colour behind the subject
    for opt in state.optimizers.values():
        for group in opt.param_groups:
            if group.get("name") == "means":
                group["lr"] = plan.means_lr
    if "smoothing" in state.extras:
        state.extras["smoothing"].refresh(state.params, plan.iteration)
    outs, view_losses, shown, mses = [], [], [], []
    for view in views:
        view = downsampled(view, plan.divisor)
        behind = None if surround is None or view.measure is None else surround.behind(view.measure, view.background)
        out = render_view(state, view, settings, plan, lighting, pose, behind)
        strategy.step_pre_backward(state.params, state.optimizers, state.strategy_state, plan.iteration, out)
        image = out.image  # [H, W, 3]
        if exposure is not None:
            under = view.background if behind is None else behind  # what empty pixels keep
            image = exposure.apply(image, view.index, out.alpha, under) if view.measure is not None \
                else exposure.apply(image, view.index)
        loss, share, mse = masked_loss(image, view.target, view.mask, losses.ssim_lambda, view.measure)
        shown.append(loss.detach() / share)
        regulariser = exposure.loss(view.index) if exposure is not None else None
        if regulariser is not None:
            loss = loss + regulariser
        if out.depth is not None:
            term = depth_loss(out, view, losses.depth_scale)
            loss = loss if term is None else loss + plan.depth_weight * term
        outs.append(out)
        view_losses.append(loss)
        mses.append(mse)
    loss = torch.stack(view_losses).mean()
    photometric_shown = torch.stack(shown).mean()
    extra = strategy.loss(state.params, state.strategy_state, plan.iteration)
    total = loss if extra is None else loss + extra
    if surround is not None:  # a gradient (zero when no view of the batch has a mask) on every process
        total = total + 0.0 * surround.colour.sum()
    total.backward()
    if reduce is not None:
        reduce(state)
    for opt in state.optimizers.values():
        opt.step()
    for module in (exposure, lighting):
        if module is not None:
            module.step(plan.progress, losses.exposure)
    if pose is not None:
        pose.step_at(plan.progress, losses.pose)
    if surround is not None:
        surround.step(plan.progress)
    state.step = plan.iteration
    messages = strategy.step_post_backward(
        state.params, state.optimizers, state.strategy_state, plan.iteration, outs, lr_means=plan.means_lr
    )
    for opt in state.optimizers.values():
        opt.zero_grad(set_to_none=True)
    return StepResult(photometric_shown, torch.stack(mses).mean(), list(messages or []))

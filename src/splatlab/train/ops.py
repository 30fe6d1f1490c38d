"""Operations that change the set of Gaussians while training, keeping every Adam consistent.

During training the six fields of a `Gaussians` are `torch.nn.Parameter`s and there is one
optimizer per field (`optimizers[name]`, one param group holding that Parameter). An operation
that adds, removes or rewrites rows must therefore

1. build a new `nn.Parameter` for every field it changes and store it in `gaussians.<name>`;
2. carry the optimizer's per-row state (`exp_avg`, `exp_avg_sq`, ... any tensor whose first
   dimension is N) along with the rows: kept rows keep their moments exactly, new or rewritten
   rows start from zero; scalar state (`step`) is kept as is;
3. swap the Parameter in the optimizer's param group and re-key `optimizer.state` from the
   old Parameter to the new one (the old key is removed, so nothing stale keeps memory alive).

All of that happens once, in `_rebuild`. Every public operation below only says *which* old
row each new row comes from (`src`), what the new values of the rewritten fields are, and
which rows' optimizer state must start from zero.

Row-returning operations (`duplicate`, `split`, `remove`) return `src`: a LongTensor [M] with,
for each row of the new set, the index of the row it came from, so that a strategy can carry
its own per-Gaussian statistics along (`stat = stat[src]`).

References: Kerbl et al. 2023 (3DGS: clone / split / prune / opacity reset); Kheradmand et al.
2024 (3DGS as MCMC: relocation, sample-add, noise on positions).
"""

from __future__ import annotations

import math

import torch

from ..gaussians import PARAM_NAMES, Gaussians
from ..geometry import quat_scale_to_covar, quat_to_rotmat

Optimizers = dict[str, torch.optim.Optimizer]

__all__ = [
    "duplicate",
    "split",
    "remove",
    "reset_opacity",
    "relocate",
    "sample_add",
    "inject_noise",
    "binomial_table",
    "relocation_update",
    "check_optimizer_sync",
]


# ---- the one place where parameters and optimizer state are rebuilt --------------------------


def _find_group_slot(optimizer: torch.optim.Optimizer, param: torch.Tensor, name: str) -> tuple[dict, int]:
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is param:
                return group, i
    raise ValueError(
        f"optimizers[{name!r}] does not hold gaussians.{name}: the Parameter was replaced outside "
        "splatlab.train.ops, or the optimizer was built for another Gaussians"
    )


@torch.no_grad()
def _rebuild(
    gaussians: Gaussians,
    optimizers: Optimizers,
    *,
    src: torch.Tensor | None = None,
    values: dict[str, torch.Tensor] | None = None,
    fresh: torch.Tensor | None = None,
) -> None:
    """Replace parameters and move their optimizer state, in one place for every operation.

    src:    LongTensor [M] or None. New row i is old row src[i] (for the parameters not given in
            `values`, and for the optimizer state of every field). None: the rows do not move,
            and only the fields named in `values` are touched.
    values: new tensors [M, ...] for some fields (e.g. moved means, smaller scales).
    fresh:  BoolTensor [M] or None: rows whose optimizer state is set to zero (new Gaussians, or
            rewritten ones whose old moments no longer describe them).
    """
    values = values or {}
    names = PARAM_NAMES if src is not None else tuple(n for n in PARAM_NAMES if n in values)
    for name in names:  # check every optimizer first: fail before anything has changed
        if name in optimizers:
            _find_group_slot(optimizers[name], getattr(gaussians, name), name)
    for name in names:
        old = getattr(gaussians, name)
        new_value = values[name] if name in values else old.detach()[src]
        new_param = torch.nn.Parameter(new_value.detach().contiguous(), requires_grad=old.requires_grad)

        optimizer = optimizers.get(name)
        if optimizer is not None:
            group, slot = _find_group_slot(optimizer, old, name)
            state = optimizer.state.pop(old, None)
            if state:
                for key, v in state.items():
                    if not (torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == old.shape[0]):
                        continue  # scalar state such as `step`: unchanged
                    v = v[src] if src is not None else v.clone()  # [M, ...]
                    if fresh is not None:
                        v[fresh] = 0
                    state[key] = v
                optimizer.state[new_param] = state
            group["params"][slot] = new_param
        setattr(gaussians, name, new_param)


def _randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal samples shaped `shape`, like `like`; drawn on the generator's device."""
    device = like.device if generator is None else generator.device
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=device).to(like.device)


def _as_mask(mask: torch.Tensor, n: int, what: str) -> torch.Tensor:
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool or tuple(mask.shape) != (n,):
        raise ValueError(f"{what}: mask must be a bool tensor of shape [{n}], got {mask.dtype} {list(mask.shape)}")
    return mask


# ---- adaptive density control (3DGS) ----------------------------------------------------------


def duplicate(gaussians: Gaussians, optimizers: Optimizers, mask: torch.Tensor) -> torch.Tensor:
    """Clone the Gaussians in `mask` [N] bool: exact copies appended at the end (3DGS "clone").

    The copies' optimizer state is zero; the originals keep theirs. Returns `src` [N + k].
    """
    n = len(gaussians)
    mask = _as_mask(mask, n, "duplicate")
    device = gaussians.device
    idx = mask.to(device).nonzero(as_tuple=True)[0]  # [k]
    src = torch.cat([torch.arange(n, device=device), idx])  # [N + k]
    fresh = torch.arange(len(src), device=device) >= n
    _rebuild(gaussians, optimizers, src=src, fresh=fresh)
    return src


def split(
    gaussians: Gaussians,
    optimizers: Optimizers,
    mask: torch.Tensor,
    n: int = 2,
    scale_factor: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Replace each Gaussian in `mask` [N] bool by `n` smaller ones (3DGS "split").

    Each child's mean is drawn from its parent's distribution, mean + R(q) (s ⊙ ε), ε ~ N(0, I);
    its scales are the parent's divided by `scale_factor` (default 0.8·n, i.e. 1.6 for n = 2 as in
    3DGS); rotation, opacity and colour are copied. The parents are removed; the kept Gaussians
    come first (in their order), then the children (all first children, then all second...).
    Children's optimizer state is zero. Returns `src` [N - k + n·k].
    """
    if n < 1:
        raise ValueError(f"split: n must be >= 1, got {n}")
    factor = 0.8 * n if scale_factor is None else float(scale_factor)
    if not factor > 0:
        raise ValueError(f"split: scale_factor must be positive, got {scale_factor}")
    num = len(gaussians)
    mask = _as_mask(mask, num, "split")
    device = gaussians.device
    mask = mask.to(device)
    keep = (~mask).nonzero(as_tuple=True)[0]  # [N - k]
    sel = mask.nonzero(as_tuple=True)[0]  # [k]
    src = torch.cat([keep, sel.repeat(n)])  # [N - k + n k]

    with torch.no_grad():
        means, quats, log_scales = gaussians.means.detach(), gaussians.quats.detach(), gaussians.log_scales.detach()
        scales = torch.exp(log_scales[sel]).repeat(n, 1)  # [n k, 3]
        rotmats = quat_to_rotmat(quats[sel]).repeat(n, 1, 1)  # [n k, 3, 3]
        eps = _randn(scales.shape, scales, generator)  # [n k, 3]
        offsets = (rotmats @ (scales * eps).unsqueeze(-1)).squeeze(-1)  # [n k, 3]
        new_means = torch.cat([means[keep], means[sel].repeat(n, 1) + offsets])
        new_log_scales = torch.cat([log_scales[keep], log_scales[sel].repeat(n, 1) - math.log(factor)])

    fresh = torch.arange(len(src), device=device) >= len(keep)
    _rebuild(gaussians, optimizers, src=src, values={"means": new_means, "log_scales": new_log_scales}, fresh=fresh)
    return src


def remove(gaussians: Gaussians, optimizers: Optimizers, mask: torch.Tensor) -> torch.Tensor:
    """Delete the Gaussians in `mask` [N] bool (3DGS "prune"). Returns `src` (the kept indices)."""
    mask = _as_mask(mask, len(gaussians), "remove")
    src = (~mask.to(gaussians.device)).nonzero(as_tuple=True)[0]
    _rebuild(gaussians, optimizers, src=src)
    return src


def reset_opacity(gaussians: Gaussians, optimizers: Optimizers, value: float) -> None:
    """Clamp every opacity to at most `value` (3DGS opacity reset) and zero that field's state.

    Only `logit_opacities` and its optimizer state change; the moments of the other fields stay.
    """
    if not 0.0 < value < 1.0:
        raise ValueError(f"reset_opacity: value must be in (0, 1), got {value}")
    logits = gaussians.logit_opacities.detach()
    new = torch.clamp_max(logits, math.log(value / (1.0 - value)))
    fresh = torch.ones(len(logits), dtype=torch.bool, device=logits.device)
    _rebuild(gaussians, optimizers, values={"logit_opacities": new}, fresh=fresh)


# ---- MCMC (Kheradmand et al. 2024) ------------------------------------------------------------


def binomial_table(n_max: int = 51, dtype=torch.float64, device=None) -> torch.Tensor:
    """[n_max, n_max] table of binomial coefficients C(n, k) (0 where k > n).

    The relocation update needs C(i - 1, k) for i up to the number of copies of one Gaussian;
    more than n_max copies are treated as n_max (see `relocation_update`).
    """
    table = torch.zeros(n_max, n_max, dtype=dtype, device=device)
    for n in range(n_max):
        for k in range(n + 1):
            table[n, k] = math.comb(n, k)
    return table


def relocation_update(
    opacities: torch.Tensor, scales: torch.Tensor, copies: torch.Tensor, binoms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Opacity and scales for N copies of a Gaussian that render like the one original.

    opacities [M], scales [M, 3], copies [M] int (N >= 1, total number of Gaussians sharing the
    parameters after the move, the original included). From the MCMC paper:

        o_new = 1 - (1 - o)^(1/N)
        s_new = o / D · s,   D = sum_{i=1..N} sum_{k=0..i-1} C(i-1, k) (-1)^k o_new^(k+1) / sqrt(k+1)

    (the paper states it for the covariance: Σ_new = (o / D)^2 Σ). N is clamped to the table size.
    Computed in float64: the alternating sum cancels. Returns (o_new [M], s_new [M, 3]).
    """
    n_max = binoms.shape[0]
    binoms = binoms.to(device=opacities.device, dtype=torch.float64)
    n = copies.to(opacities.device).long().clamp(1, n_max)  # [M]
    o = opacities.double()
    o_new = 1.0 - torch.pow(1.0 - o, 1.0 / n.double())  # [M]
    k = torch.arange(n_max, device=o.device, dtype=torch.float64)  # [K]
    # inner[m, i] = sum_k C(i, k) (-1)^k o_new^(k+1) / sqrt(k+1), for i = 0..n_max-1 (= i' - 1)
    terms = (-1.0) ** k * o_new[:, None] ** (k + 1) / torch.sqrt(k + 1)  # [M, K]
    inner = terms @ binoms.T  # [M, n_max]
    use = torch.arange(n_max, device=o.device)[None, :] < n[:, None]  # i' = i + 1 <= N
    denom = (inner * use).sum(-1)  # [M]
    s_new = (o / denom)[:, None] * scales.double()
    return o_new.to(opacities.dtype), s_new.to(scales.dtype)


def _sample_proportional(weights: torch.Tensor, num: int, generator: torch.Generator | None) -> torch.Tensor:
    """`num` indices drawn with replacement with probability ∝ weights [M] (>= 0, not all 0).

    Inverse-CDF sampling in float64: no 2^24-category limit as torch.multinomial has.
    """
    cdf = torch.cumsum(weights.double(), 0)
    device = cdf.device if generator is None else generator.device
    u = torch.rand(num, generator=generator, dtype=torch.float64, device=device).to(cdf.device) * cdf[-1]
    return torch.searchsorted(cdf, u, right=True).clamp_max(len(weights) - 1)


def _copies_count(sampled: torch.Tensor, n: int) -> torch.Tensor:
    """For each sampled index, 1 + how many times it was sampled: copies after the move."""
    return torch.bincount(sampled, minlength=n)[sampled] + 1


def relocate(
    gaussians: Gaussians,
    optimizers: Optimizers,
    dead_mask: torch.Tensor,
    binoms: torch.Tensor | None = None,
    min_opacity: float = 0.005,
    generator: torch.Generator | None = None,
) -> int:
    """Move every dead Gaussian (`dead_mask` [N] bool) onto a live one sampled ∝ opacity (MCMC).

    A live Gaussian chosen c times ends up as N = c + 1 identical Gaussians (itself and the c dead
    ones moved onto it), all with the opacity and scales of `relocation_update`, so that the
    rendered image barely changes. The count stays N. The optimizer state of the moved and of the
    sampled rows is zeroed (their parameters changed). New opacities are clamped to
    [min_opacity, 1 - eps]. Returns the number of relocated Gaussians (0 if none are dead or
    none alive).
    """
    num = len(gaussians)
    dead_mask = _as_mask(dead_mask, num, "relocate").to(gaussians.device)
    dead = dead_mask.nonzero(as_tuple=True)[0]  # [d]
    alive = (~dead_mask).nonzero(as_tuple=True)[0]
    if len(dead) == 0 or len(alive) == 0:
        return 0
    binoms = binomial_table() if binoms is None else binoms
    with torch.no_grad():
        opacities = gaussians.opacities.detach()
        sampled = alive[_sample_proportional(opacities[alive], len(dead), generator)]  # [d]
        new_o, new_s = relocation_update(
            opacities[sampled], torch.exp(gaussians.log_scales.detach()[sampled]), _copies_count(sampled, num), binoms
        )
        new_o = new_o.clamp(min_opacity, 1.0 - torch.finfo(new_o.dtype).eps)

        src = torch.arange(num, device=gaussians.device)
        src[dead] = sampled  # [N]: dead rows take their new parent's parameters
        logits = gaussians.logit_opacities.detach()[src]
        log_scales = gaussians.log_scales.detach()[src]
        new_logit, new_log_s = torch.logit(new_o), torch.log(new_s)
        for rows in (sampled, dead):  # same values for the parents and the moved copies
            logits[rows] = new_logit
            log_scales[rows] = new_log_s
        fresh = torch.zeros(num, dtype=torch.bool, device=gaussians.device)
        fresh[dead] = True
        fresh[sampled] = True
    _rebuild(gaussians, optimizers, src=src, values={"logit_opacities": logits, "log_scales": log_scales}, fresh=fresh)
    return int(len(dead))


def sample_add(
    gaussians: Gaussians,
    optimizers: Optimizers,
    num_new: int,
    binoms: torch.Tensor | None = None,
    min_opacity: float = 0.005,
    generator: torch.Generator | None = None,
) -> int:
    """Append `num_new` Gaussians as copies of existing ones sampled ∝ opacity (MCMC growth).

    Parents and copies get the `relocation_update` opacity and scales (N = 1 + times sampled);
    the copies' and parents' optimizer state is zeroed. Returns the number added.
    """
    num = len(gaussians)
    num_new = int(num_new)
    if num_new <= 0 or num == 0:
        return 0
    binoms = binomial_table() if binoms is None else binoms
    device = gaussians.device
    with torch.no_grad():
        opacities = gaussians.opacities.detach()
        if not (opacities > 0).any():
            return 0
        sampled = _sample_proportional(opacities, num_new, generator)  # [a]
        new_o, new_s = relocation_update(
            opacities[sampled], torch.exp(gaussians.log_scales.detach()[sampled]), _copies_count(sampled, num), binoms
        )
        new_o = new_o.clamp(min_opacity, 1.0 - torch.finfo(new_o.dtype).eps)

        src = torch.cat([torch.arange(num, device=device), sampled])  # [N + a]
        added = torch.arange(num, num + num_new, device=device)
        logits = gaussians.logit_opacities.detach()[src]
        log_scales = gaussians.log_scales.detach()[src]
        new_logit, new_log_s = torch.logit(new_o), torch.log(new_s)
        for rows in (sampled, added):
            logits[rows] = new_logit
            log_scales[rows] = new_log_s
        fresh = torch.zeros(num + num_new, dtype=torch.bool, device=device)
        fresh[sampled] = True
        fresh[added] = True
    _rebuild(gaussians, optimizers, src=src, values={"logit_opacities": logits, "log_scales": log_scales}, fresh=fresh)
    return num_new


@torch.no_grad()
def inject_noise(
    gaussians: Gaussians,
    scale: float,
    k: float = 100.0,
    t: float = 0.005,
    generator: torch.Generator | None = None,
) -> None:
    """Perturb positions as SGLD (MCMC paper): means += σ(-k (o - t)) · scale · Σ η, η ~ N(0, I).

    Σ = R S Sᵀ Rᵀ is each Gaussian's covariance (so the step follows its shape and size), and the
    gate σ(-k (o - t)) is ~1 for opacity o well below t and ~0 above it: only nearly transparent
    Gaussians wander, opaque ones stay. `scale` is noise_lr · (current means learning rate).
    The paper writes the gate with t = 1 - 0.005 applied to 1 - o; it is the same function:
    σ(k ((1 - o) - (1 - t))). Positions change in place; optimizer state is untouched.
    """
    means = gaussians.means
    opacities = gaussians.opacities.detach()  # [N]
    covars = quat_scale_to_covar(gaussians.quats.detach(), torch.exp(gaussians.log_scales.detach()))  # [N, 3, 3]
    eta = _randn(means.shape, means, generator)  # [N, 3]
    gate = torch.sigmoid(-k * (opacities - t))  # [N]
    noise = (covars @ eta.unsqueeze(-1)).squeeze(-1)  # [N, 3]
    means.add_(gate[:, None] * scale * noise)


# ---- consistency check ---------------------------------------------------------------------


def check_optimizer_sync(gaussians: Gaussians, optimizers: Optimizers) -> None:
    """Raise ValueError if shapes disagree or an optimizer does not hold exactly its Parameter.

    Checks: the Gaussians are well formed (shapes, not values); every optimizer key is a field
    name; optimizers[name] has its group param *identical* to gaussians.<name>; its state holds
    no other tensor (no stale key left by a swap); per-row state has the param's shape.
    """
    gaussians.validate(check_finite=False)
    for name, optimizer in optimizers.items():
        if name not in PARAM_NAMES:
            raise ValueError(f"optimizers has a key {name!r} that is not a Gaussians field ({', '.join(PARAM_NAMES)})")
        param = getattr(gaussians, name)
        held = [p for group in optimizer.param_groups for p in group["params"]]
        if not any(p is param for p in held):
            raise ValueError(f"optimizers[{name!r}] does not hold gaussians.{name} (a stale Parameter?)")
        if len(held) != 1:
            raise ValueError(f"optimizers[{name!r}] must hold exactly one Parameter, holds {len(held)}")
        for key in optimizer.state:
            if key is not param:
                raise ValueError(f"optimizers[{name!r}].state has an entry for a Parameter it no longer holds")
        for key, v in optimizer.state.get(param, {}).items():
            if torch.is_tensor(v) and v.dim() > 0 and v.shape != param.shape:
                raise ValueError(
                    f"optimizers[{name!r}].state[{key!r}] has shape {list(v.shape)}, "
                    f"but gaussians.{name} has shape {list(param.shape)}"
                )

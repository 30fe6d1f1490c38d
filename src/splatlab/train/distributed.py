"""Data-parallel training over views on torch.distributed (gloo for CPU tensors, NCCL for CUDA).

Every process holds the whole model. Each step, each process renders and backpropagates its
own views; the gradients (one all-reduce per tensor, in flight together) and the densification statistics
(screen-space gradient sums and counts: sum; max radii: max) are all-reduced before the
optimizer step, so every process takes the same Adam step and makes the same clone / split /
prune / reset decisions from the same numbers: the models never diverge.

    rank r of N owns the training views r, r+N, r+2N, ...      (shard; it loads only those,
                                                                and the test views r, r+N, ...)
    a step: each rank takes `batch_size` views of its shard    (ShardSampler, stateless)
    effective batch B = N * batch_size                         (learning-rate rule: batch_rule)

`Group` is the one object the run talks to; with one process (`Group.single`) every method
is a no-op and no process group exists. Collectives carry a timeout: a process that dies or
hangs makes the others fail within it, with a `DistributedError` naming this rank and what
it was waiting for. The launcher (`splatlab train --nproc N`) lives in train/launch.py.
"""

from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

import torch

from .config import ConfigError

Backend = Literal["auto", "gloo", "nccl"]
BatchRule = Literal["gsplat", "grendel"]


class DistributedError(RuntimeError):
    """Another process died, hung, or could not be reached."""


# ---- topology and setup --------------------------------------------------------------------


@dataclass(frozen=True)
class Topology:
    rank: int
    world: int
    local_rank: int
    local_world: int


def env_topology() -> Optional[Topology]:
    """This process's place, from the variables torchrun (and `--nproc`) set; None when absent."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    except ValueError as exc:
        raise ConfigError(f"RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE must be integers: {exc}") from None
    if not (world >= 1 and 0 <= rank < world and 0 <= local_rank < local_world):
        raise ConfigError(f"inconsistent RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local_rank} "
                          f"LOCAL_WORLD_SIZE={local_world}")
    return Topology(rank, world, local_rank, local_world)


def threads_per_process(local_world: int) -> int:
    """This machine's cores (the ones this process may use) shared among its processes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_world))


def set_threads(n: int) -> None:
    """Torch and Numba threads of this process (so N processes do not oversubscribe the cores)."""
    torch.set_num_threads(n)
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # the CPU backend is not installed: nothing to set
        pass


def setup(topology: Topology, device: str, backend: Backend = "auto", timeout_s: float = 300.0) -> "Group":
    """Join the process group (env:// rendezvous: MASTER_ADDR / MASTER_PORT) within `timeout_s`."""
    import torch.distributed as dist

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(topology.local_rank)
        dev = torch.device("cuda", topology.local_rank)
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" and dist.is_nccl_available() else "gloo"
    address = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    _import_before_the_group()
    try:
        dist.init_process_group(backend, rank=topology.rank, world_size=topology.world,
                                timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=dev if dev.type == "cuda" else None)
    except (RuntimeError, ValueError, OSError) as exc:  # DistStoreError, DistNetworkError, bad env
        raise DistributedError(
            f"rank {topology.rank}: could not join the {topology.world} processes at the rendezvous {address} "
            f"within {timeout_s:g} s ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "check MASTER_ADDR / MASTER_PORT and that every process was started") from None
    return Group(topology, dev, backend, timeout_s)


def _import_before_the_group() -> None:
    """Import torch.distributed.nn before the process group exists. Its functions take
    `group=group.WORLD` as a default argument, evaluated at import; torch.optim imports it
    (through torch._dynamo) at the first optimizer, and imported then it keeps the group alive
    past destroy_process_group. The group's gloo threads then outlive teardown, and one still
    releasing a finished collective's tensors at interpreter exit aborts the process (SIGABRT)."""
    import torch.distributed.nn  # noqa: F401 - imported for the side effect above


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


# ---- the group the run talks to ------------------------------------------------------------


class Group:
    """Collectives of a data-parallel run; all no-ops with one process."""

    def __init__(self, topology: Topology, device: torch.device, backend: str = "none", timeout_s: float = 0.0):
        self.topology, self.device, self.backend, self.timeout_s = topology, device, backend, timeout_s

    @classmethod
    def single(cls, device) -> "Group":
        return cls(Topology(0, 1, 0, 1), torch.device(device))

    @property
    def rank(self) -> int:
        return self.topology.rank

    @property
    def world(self) -> int:
        return self.topology.world

    @property
    def is_main(self) -> bool:
        return self.topology.rank == 0

    @property
    def distributed(self) -> bool:
        return self.topology.world > 1

    def shard(self, n: int) -> list[int]:
        """The indices of n items this rank owns: rank, rank + N, rank + 2N, ..."""
        return list(range(self.rank, n, self.world))

    def view_share(self):
        """What this rank loads of a dataset (the same rule as `shard`, in each split), or None
        (everything) with one process."""
        from ..data.scene import ViewShare

        return ViewShare(self.rank, self.world) if self.distributed else None

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run a collective; a dead or hung peer becomes a DistributedError naming this rank."""
        try:
            return fn()
        except (RuntimeError, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DistributedError(
                f"rank {self.rank} of {self.world}: {what} failed: another process died or did not answer "
                f"within {self.timeout_s:g} s ({first})") from None

    # -- per step ---------------------------------------------------------------------------

    def reduce_gradients(self, state) -> None:
        """Average the gradients of every parameter (and of per-image extras) over the ranks:
        one all-reduce per tensor, in place, all in flight at once. (Packing them into one
        flat buffer saves a few latencies but costs two copies of the whole gradient, which
        cost more than the all-reduce on one machine: benchmarks/bench_distributed.py.)
        A gradient is None on every rank or on none: whether a parameter took part depends
        only on the step's plan, which all share."""
        if not self.distributed:
            return
        import torch.distributed as dist

        params = list(state.params.params().values())
        params += [p for module in state.extras.values() for p in vars(module).values()
                   if isinstance(p, torch.nn.Parameter)]  # per-image exposure
        grads = [p.grad for p in params if p.grad is not None]

        def reduce():
            for work in [dist.all_reduce(g, async_op=True) for g in grads]:
                work.wait()

        self._call("the gradient all-reduce", reduce)
        for g in grads:
            g.mul_(1.0 / self.world)

    def reduce_statistics(self, sums: list[torch.Tensor], maxima: list[torch.Tensor]) -> None:
        """Densification statistics of this step, in place: `sums` summed, `maxima` max-ed."""
        if not self.distributed:
            return
        import torch.distributed as dist

        for tensors, op in ((sums, dist.ReduceOp.SUM), (maxima, dist.ReduceOp.MAX)):
            flat = torch.cat([t.reshape(-1) for t in tensors])
            self._call("the densification-statistics all-reduce", lambda: dist.all_reduce(flat, op=op))
            for t, chunk in zip(tensors, flat.split([t.numel() for t in tensors])):
                t.copy_(chunk.view_as(t))

    def sum_(self, *tensors: torch.Tensor, what: str) -> None:
        """Sum each tensor over the ranks, in place (every rank gets the same bits)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        for t in tensors:
            self._in_place(t, lambda x: dist.all_reduce(x, op=dist.ReduceOp.SUM), what)

    def broadcast_(self, tensors: list[torch.Tensor], what: str) -> None:
        """Rank 0's values of `tensors` (same shapes on every rank), in place on every rank."""
        if not self.distributed:
            return
        import torch.distributed as dist

        for t in tensors:
            self._in_place(t, lambda x: dist.broadcast(x, src=0), what)

    def _in_place(self, t: torch.Tensor, collective: Callable[[torch.Tensor], Any], what: str) -> None:
        """A collective on `t` where the backend can reach it (NCCL: the GPU), the result in `t`."""
        moved = t.to(self.device).contiguous()  # t itself when it already is
        self._call(what, lambda: collective(moved))
        if moved is not t:
            t.copy_(moved)

    def agree(self, elapsed: float, stop: bool) -> tuple[float, bool]:
        """The slowest rank's training time and whether any rank was asked to stop: every
        rank then re-plans its budget and stops at the same step."""
        if not self.distributed:
            return elapsed, stop
        import torch.distributed as dist

        t = torch.tensor([elapsed, float(stop)], dtype=torch.float64, device=self.device)
        self._call("the step barrier", lambda: dist.all_reduce(t, op=dist.ReduceOp.MAX))
        return float(t[0]), bool(t[1] > 0)

    def max(self, value: float) -> float:
        return self.agree(value, False)[0]

    # -- objects ----------------------------------------------------------------------------

    def gather(self, obj: Any, what: str) -> list[Any]:
        """Every rank's `obj`, on every rank, in rank order."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        self._call(what, lambda: dist.all_gather_object(out, obj))
        return out

    def on_main(self, fn: Callable[[], Any], what: str) -> Any:
        """fn() on rank 0, its result (or its exception) on every rank."""
        if not self.distributed:
            return fn()
        import torch.distributed as dist

        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except Exception as exc:  # noqa: BLE001 - handed to every rank, then raised
                box[0] = ("error", exc)
        self._call(what, lambda: dist.broadcast_object_list(box, src=0))
        kind, value = box[0]
        if kind == "error":
            raise value
        return value

    def check_same(self, what: dict) -> None:
        """ConfigError before training when any rank's settings or data differ from rank 0's."""
        parts = self.gather(_flatten(what), "the configuration check")
        reference = parts[0]
        for rank, theirs in enumerate(parts[1:], start=1):
            diff = [k for k in sorted(set(reference) | set(theirs)) if reference.get(k) != theirs.get(k)]
            if diff:
                k = diff[0]
                raise ConfigError(f"rank {rank} differs from rank 0 in {k}: {theirs.get(k)!r} "
                                  f"(rank 0: {reference.get(k)!r}); every process must train the same "
                                  f"config on the same dataset ({len(diff)} difference(s))")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def dataset_fingerprint(scene) -> dict:
    """What every rank must agree on about its dataset (cameras and names, not pixels)."""
    return {"kind": scene.kind, "path": str(scene.path), "train_views": [v.name for v in scene.train],
            "test_views": [v.name for v in scene.test], "size": [scene.train[0].width, scene.train[0].height],
            "extent": round(float(scene.extent), 6)}


def share_points(group: "Group", scene) -> None:
    """Every rank starts from rank 0's points: they may be triangulated (data/triangulate.py), which
    is done once, on rank 0, and need not be bit-identical between two runs of COLMAP."""
    if not group.distributed:
        return
    points, colors, ids, random_points = group.on_main(
        lambda: (scene.points, scene.point_colors, [v.point_ids for v in scene.train],
                 scene.info.get("random_points", False)), "sharing the initial points")
    scene.points, scene.point_colors = points, colors
    scene.info["random_points"] = random_points
    for view, view_ids in zip(scene.train, ids):
        view.point_ids = view_ids


# ---- views ---------------------------------------------------------------------------------


class ShardSampler:
    """A rank's training views in random order without replacement, epoch after epoch; a pure
    function of (seed, N, rank, step), so a resumed run continues with no sampler state."""

    def __init__(self, views: list[int], seed: int, rank: int, world: int) -> None:
        self.views, self.seed, self.rank, self.world = views, seed, rank, world
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            self._orders = {}  # one epoch at a time
            g = torch.Generator().manual_seed(((self.seed * 1_000_003 + self.world) * 10_007 + self.rank) * 1009 + epoch)
            self._orders[epoch] = torch.randperm(len(self.views), generator=g).tolist()
        return self._orders[epoch]

    def take(self, step: int, n: int) -> list[int]:
        """The n views (indices into the scene's training views) of step `step` (0-based)."""
        out = []
        for k in range(step * n, step * n + n):
            epoch, pos = divmod(k, len(self.views))
            out.append(self.views[self._order(epoch)[pos]])
        return out


# ---- batch hyperparameters -----------------------------------------------------------------


def batch_hyperparameters(batch: int, rule: BatchRule) -> tuple[float, tuple[float, float], float]:
    """(lr factor, Adam betas, eps factor) for an effective batch of `batch` views.

    gsplat (simple_trainer): lr * sqrt(B), betas 1 - B (1 - beta), eps / sqrt(B).
    Grendel (Zhao et al. 2024, "On Scaling Up 3DGS Training"): lr * sqrt(B), betas beta^B
    (momentum scaled so a batch step matches B single-view steps), eps unchanged.
    With B = 1 both are the plain 3DGS Adam.
    """
    b1, b2 = 0.9, 0.999
    if rule == "gsplat":
        return math.sqrt(batch), (max(0.0, 1 - batch * (1 - b1)), max(0.0, 1 - batch * (1 - b2))), 1 / math.sqrt(batch)
    return math.sqrt(batch), (b1 ** batch, b2 ** batch), 1.0


def apply_batch_rule(optimizers: dict, base_lrs: dict[str, float], eps: float, batch: int, rule: BatchRule) -> None:
    """Set every Gaussian optimizer's lr, betas and eps for the batch (after create or load)."""
    if batch == 1:
        return
    lr_factor, betas, eps_factor = batch_hyperparameters(batch, rule)
    for name, opt in optimizers.items():
        for group in opt.param_groups:
            group["lr"] = base_lrs[name] * lr_factor
            group["betas"] = betas
            group["eps"] = eps * eps_factor


def convert_steps(saved: dict, new_batch: int) -> None:
    """A checkpoint of a run with another effective batch, in this run's steps: the same number
    of views seen (step * batch) and the same place in the schedule."""
    old = int(saved.get("batch", 1))
    if old == new_batch:
        return
    ratio = old / new_batch
    saved["state"]["step"] = int(round(saved["state"]["step"] * ratio))
    if saved.get("budget") is not None:
        b = saved["budget"]
        for key in ("total", "anchor_step", "mark_step", "next_replan"):
            b[key] = max(0, int(round(b[key] * ratio)))
        b["cap"] = max(1, int(round(b["cap"] * ratio)))
    saved["batch"] = new_batch


# ---- evaluation ----------------------------------------------------------------------------


def merge_evaluations(parts: list[tuple[list[int], dict]], views: list) -> dict:
    """Each rank's (view indices, evaluate_views result) -> one result over all `views`, in order."""
    from ..metrics import pixels_counted

    rows: list[Optional[dict]] = [None] * len(views)
    for indices, result in parts:
        for i, row in zip(indices, result["per_image"]):
            rows[i] = row
    per_image = [r for r in rows if r is not None]
    merged: dict = {}
    for key in ("psnr", "ssim", "psnr_exposure", "lpips"):
        if per_image and all(key in r for r in per_image):
            merged[key] = sum(r[key] for r in per_image) / len(per_image)
    merged["pixels"] = pixels_counted(views)
    merged["per_image"] = per_image
    return merged


class SharedFolder:
    """A RunFolder that rank 0 alone writes and reads; the other ranks get what it read."""

    WRITES = {"write_config", "save_checkpoint", "save_ply", "save_render", "append_metrics",
              "truncate_log", "write_history"}

    def __init__(self, folder, group: Group) -> None:
        self.folder, self.group = folder, group

    def __getattr__(self, name: str):
        attr = getattr(self.folder, name)
        if name in self.WRITES and not self.group.is_main:
            return lambda *args, **kwargs: None
        return attr

    def prepare(self, resume: bool, force: bool) -> bool:
        return self.group.on_main(lambda: self.folder.prepare(resume, force), "preparing the output folder")

    def load_checkpoint(self) -> dict:
        return self.group.on_main(self.folder.load_checkpoint, "loading the checkpoint")

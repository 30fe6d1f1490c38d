"""Data-parallel training (train/distributed.py) with 2 processes and gloo on this machine.

- ranks end bit-identical after steps with densification and an opacity reset;
- 2 processes x batch 1 equal 1 process x batch 2 on the same views;
- each rank loads the pixels of its own share of the views only, and the initial Gaussians, the
  background sphere's colours and the mask coverage computed from the shares equal one process's;
- `splatlab train --nproc 2` and `torchrun --standalone --nproc-per-node 2` train a small scene;
- a killed rank fails the run with a message naming it, the checkpoint stays intact, and
  --resume (with another number of processes) finishes the run;
- bad input: --nproc 0 or more than the views, ranks with different configs, no rendezvous.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fixtures_data import write_colmap_text
from helpers import write_demo_blender
from splatlab.train.launch import free_port

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}
CLI = [sys.executable, "-m", "splatlab.cli", "train"]
OPTIONS = ["--max-minutes", "None", "--no-progress", "--init-num-random", "500", "--sh-degree", "1",
           "--no-save-renders", "--dist-timeout", "20", "strategy:default", "--strategy.refine-start", "8",
           "--strategy.refine-every", "8", "--strategy.reset-every", "20"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_demo_blender(tmp_path_factory.mktemp("dist") / "data", num_views=8, size=16)


def train_config(out: Path, batch_size: int):
    from splatlab.train.config import TrainConfig
    from splatlab.train.strategy import DefaultStrategyConfig

    strategy = DefaultStrategyConfig(refine_start=4, refine_every=4, reset_every=10, refine_stop=40)
    return TrainConfig(output=out, iterations=40, batch_size=batch_size, max_minutes=None, init_num_random=500,
                       sh_degree=1, progress=False, save_renders=False, strategy=strategy)


def two_view_run(scene, out: Path, batch_size: int, group=None) -> dict:
    """Train on the first two training views; the final parameters and what densification did."""
    from splatlab.train.events import StepEvent
    from splatlab.train.run import Run

    scene.train = scene.train[:2]
    run = Run(train_config(out, batch_size), scene, group)
    messages: list[str] = []
    run.subscribe(lambda e: messages.extend(e.messages) if isinstance(e, StepEvent) else None)
    result = run.train()
    return {"params": {k: v.clone() for k, v in result.gaussians.params().items()}, "messages": messages,
            "step": result.step}


def from_the_views(scene, masked_scene, group=None) -> dict:
    """What a run computes from every training view's pixels: initial Gaussians (hull), the
    background sphere's Gaussians, the mask coverage (of a scene with masks)."""
    from splatlab.train.init import background_gaussians, initial_gaussians
    from splatlab.train.surround import surround_colour
    from splatlab.train.views import mask_cover

    hull, region = initial_gaussians(scene, "hull", 300, 1, 0.1, seed=0, group=group)
    sky = background_gaussians(scene, 200, 1, 0.8, group)
    return {"hull": hull.params(), "region": region, "sky": sky.params(), "cover": mask_cover(masked_scene, group),
            "surround": surround_colour(masked_scene, group)}


def _rank_main(rank: int, port: int, data: str, masked: str, out: str) -> None:
    from splatlab.data import load_scene
    from splatlab.train import distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    distributed.set_threads(1)
    group = distributed.setup(distributed.Topology(rank, 2, rank, 2), "cpu", "gloo", 30.0)
    try:
        scene = load_scene(Path(data), verbose=False, share=group.view_share())
        shares = {split: [v.loaded for v in getattr(scene, split)] for split in ("train", "test")}
        masked_scene = load_scene(Path(masked), verbose=False, test_every=0, share=group.view_share())
        computed = from_the_views(scene, masked_scene, group)
        result = two_view_run(scene, Path(out), 1, group)
        torch.save({**result, "shares": shares, "computed": computed}, Path(out).parent / f"rank{rank}.pt")
    finally:
        distributed.teardown()
    (Path(out).parent / f"threads{rank}.json").write_text(json.dumps(gloo_threads()))


def gloo_threads() -> list[str] | None:
    """Names of this process's gloo threads (None where /proc does not list threads)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    names = [(t / "comm").read_text().strip() for t in tasks.iterdir() if (t / "comm").exists()]
    return [n for n in names if "gloo" in n]


def test_two_ranks_agree_bit_for_bit_and_equal_one_process_with_batch_2(data, tmp_path):
    import torch.multiprocessing as mp

    from splatlab.data import load_scene

    masked = tmp_path / "masked"
    write_colmap_text(masked, n_images=5, with_masks=True)
    mp.spawn(_rank_main, args=(free_port(), str(data), str(masked), str(tmp_path / "two")), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for r in (0, 1):  # teardown ended the group: no gloo thread is left to run at interpreter exit
        assert json.loads((tmp_path / f"threads{r}.json").read_text()) in ([], None)

    full = load_scene(data, verbose=False)
    for rank, r in enumerate((r0, r1)):  # rank r holds views r, r + 2, ... of each split, and no others
        assert r["shares"] == {split: [k % 2 == rank for k in range(len(getattr(full, split)))]
                               for split in ("train", "test")}, r["shares"]
    one = from_the_views(full, load_scene(masked, verbose=False, test_every=0))
    for r in (r0, r1):
        computed = r["computed"]
        assert computed["region"] == one["region"] == "hull"
        assert computed["cover"] == one["cover"] == 0.5  # (left halves)
        assert computed["surround"] == one["surround"] != (0.0, 0.0, 0.0)  # per-view medians gathered
        for name, value in one["sky"].items():  # per-view samples gathered: exactly one process's median
            assert torch.equal(computed["sky"][name], value), f"background {name}"
        for name, value in one["hull"].items():  # the same points; colour sums differ in rounding only
            torch.testing.assert_close(computed["hull"][name], value, rtol=0, atol=1e-6, msg=f"hull {name}")
        assert torch.equal(computed["hull"]["means"], one["hull"]["means"])
    for name, value in r0["computed"]["hull"].items():
        assert torch.equal(value, r1["computed"]["hull"][name]), f"initial {name} differs between the ranks"
    assert any(m.startswith("clone") for m in r0["messages"]) and "opacity reset" in r0["messages"], r0["messages"]
    for name, value in r0["params"].items():
        assert torch.equal(value, r1["params"][name]), f"{name} differs between the ranks"
    assert r0["step"] == 20  # 40 views, 2 per step

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = two_view_run(load_scene(data, verbose=False), tmp_path / "one", batch_size=2)
    finally:
        torch.set_num_threads(threads)
    assert one["messages"] == r0["messages"]
    for name, value in r0["params"].items():
        torch.testing.assert_close(one["params"][name], value, rtol=1e-4, atol=1e-5, msg=f"{name}: 2x1 vs 1x2")


def psnr(out: Path) -> float:
    return json.loads((out / "metrics.json").read_text())[-1]["psnr"]


def test_nproc_2_and_torchrun_train_like_one_process(data, tmp_path):
    options = ["--iterations", "60", *OPTIONS]
    single = subprocess.run([*CLI, str(data), "--output", str(tmp_path / "one"), *options],
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    launched = subprocess.run([*CLI, str(data), "--output", str(tmp_path / "nproc"), "--nproc", "2", *options],
                              env=ENV, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr
    assert "completed after 30 steps of 2 views (60 iterations)" in launched.stdout
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    splatlab = shutil.which("splatlab", path=os.path.dirname(sys.executable))
    elastic = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", splatlab, "train", str(data),
                              "--output", str(tmp_path / "torchrun"), *options],
                             env=ENV, capture_output=True, text=True, timeout=300)
    assert elastic.returncode == 0, elastic.stderr[-3000:]
    base = psnr(tmp_path / "one")
    for name in ("nproc", "torchrun"):
        assert abs(psnr(tmp_path / name) - base) < 1.5, f"{name}: {psnr(tmp_path / name):.2f} vs {base:.2f} dB"


def test_killed_rank_names_it_keeps_the_checkpoint_and_resume_finishes(data, tmp_path):
    out = tmp_path / "run"
    options = ["--iterations", "80", "--checkpoint-every", "10", *OPTIONS]
    proc = subprocess.Popen([*CLI, str(data), "--output", str(out), "--nproc", "2", *options],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = out / "checkpoints" / "latest.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), "no checkpoint was written"
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    rank1 = [int(p) for p in children
             if "RANK=1" in Path(f"/proc/{p}/environ").read_bytes().replace(b"\0", b" ").decode(errors="ignore")]
    os.kill(rank1[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)  # well within --dist-timeout 20 + the grace
    assert proc.returncode == 1
    assert "rank 1 of 2 was killed by signal SIGKILL" in stderr, stderr
    saved = torch.load(checkpoint, weights_only=False)  # intact
    assert 0 < saved["state"]["step"] < 40
    done = subprocess.run([*CLI, str(data), "--output", str(out), "--resume", *options],  # one process now
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resumed from step {saved['state']['step'] * 2}" in done.stderr  # 2 views per step before, 1 now
    assert "completed after 80 iterations" in done.stdout


def test_bad_nproc_exits_2(tmp_path):
    data = write_demo_blender(tmp_path / "data", num_views=3, size=16)  # 2 training views
    for nproc, expected in (("0", "--nproc must be >= 1"), ("3", "only 2 training views")):
        r = subprocess.run([*CLI, str(data), "--output", str(tmp_path / nproc), "--nproc", nproc, "--iterations", "4",
                            *OPTIONS], env=ENV, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and expected in r.stderr, r.stderr


def test_ranks_with_different_configs_fail_before_training(data, tmp_path):
    port = free_port()
    procs = []
    for rank, seed in ((0, "0"), (1, "1")):
        env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([*CLI, str(data), "--output", str(tmp_path / "o"), "--iterations", "4",
                                       "--seed", seed, *OPTIONS], env=env, stderr=subprocess.PIPE, text=True))
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [2, 2]
    assert "rank 1 differs from rank 0 in config.seed: 1 (rank 0: 0)" in errs[0], errs[0]
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_unreachable_rendezvous_fails_within_the_timeout(data, tmp_path):
    env = {**ENV, "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}  # nobody listens there
    t0 = time.monotonic()
    r = subprocess.run([*CLI, str(data), "--output", str(tmp_path / "o"), "--iterations", "4", *OPTIONS[:-7],
                        "--dist-timeout", "3"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "rank 1: could not join the 2 processes at the rendezvous 127.0.0.1" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 60


def test_batch_rules_shards_and_step_conversion():
    from splatlab.train.distributed import Group, ShardSampler, Topology, batch_hyperparameters, convert_steps

    for rule in ("gsplat", "grendel"):
        assert batch_hyperparameters(1, rule) == (1.0, (0.9, 0.999), 1.0)
    lr, betas, eps = batch_hyperparameters(4, "gsplat")
    assert lr == 2.0 and betas == pytest.approx((0.6, 0.996)) and eps == 0.5
    lr, betas, eps = batch_hyperparameters(4, "grendel")
    assert lr == 2.0 and betas == pytest.approx((0.9 ** 4, 0.999 ** 4)) and eps == 1.0

    groups = [Group(Topology(r, 3, r, 3), torch.device("cpu")) for r in range(3)]
    shards = [g.shard(7) for g in groups]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    sampler = ShardSampler(shards[0], seed=0, rank=0, world=3)
    epochs = [sampler.take(step, 3) for step in range(4)]
    assert all(sorted(e) == [0, 3, 6] for e in epochs)  # each epoch sees every view of the shard once
    assert ShardSampler(shards[0], 0, 0, 3).take(2, 3) == epochs[2]  # a pure function of the step

    saved = {"batch": 2, "state": {"step": 30},
             "budget": {"total": 100, "cap": 150, "anchor_step": 10, "mark_step": 20, "next_replan": 40}}
    convert_steps(saved, 1)  # 2 views per step before, 1 now: the same views seen
    assert saved["state"]["step"] == 60 and saved["budget"]["total"] == 200 and saved["budget"]["cap"] == 300

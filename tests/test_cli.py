"""The `splatlab` command run as a user runs it (subprocesses), checking the files it leaves."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import write_demo_blender  # noqa: E402

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def splatlab(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splatlab.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def blender_dataset(tmp_path_factory) -> Path:
    """A tiny Blender-layout dataset made from the ray-cast demo scene."""
    return write_demo_blender(tmp_path_factory.mktemp("data") / "demo32")


@pytest.fixture(scope="module")
def trained(blender_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    r = splatlab("train", blender_dataset, "--output", out, "--iterations", 40, "--no-progress",
                 "--init-num-random", 2000, "--save-at", 20, "--checkpoint-every", 20, "--sh-degree", 1)
    assert r.returncode == 0, r.stderr
    assert "test PSNR" in r.stdout
    return out


def test_train_writes_a_complete_run(trained):
    assert (trained / "point_cloud" / "iteration_20" / "point_cloud.ply").exists()
    assert (trained / "point_cloud" / "iteration_40" / "point_cloud.ply").exists()
    assert (trained / "checkpoints" / "latest.pt").exists()
    metrics = json.loads((trained / "metrics.json").read_text())[-1]
    assert metrics["step"] == 40 and metrics["num_test_views"] == 3 and math.isfinite(metrics["psnr"])
    assert json.loads((trained / "config.json").read_text())["iterations"] == 40
    renders = sorted((trained / "renders" / "test").glob("*.png"))
    assert len(renders) == 3 and Image.open(renders[0]).size == (64, 32)  # render | ground truth
    assert Image.open(trained / "curve.png").size[0] > 100
    events = [json.loads(line)["event"] for line in (trained / "log.jsonl").read_text().splitlines()]
    assert "step" in events and events[-1] == "end"


def test_train_refuses_to_overwrite_and_resumes(trained, blender_dataset):
    r = splatlab("train", blender_dataset, "--output", trained, "--iterations", 40, "--no-progress")
    assert r.returncode == 1 and "already exists" in r.stderr and "--force" in r.stderr
    r = splatlab("train", "--output", trained, "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "after 40 iterations" in r.stdout


def test_bad_arguments_exit_2_and_bad_data_exits_1(tmp_path):
    r = splatlab("train", tmp_path, "--iterations", "many")
    assert r.returncode == 2
    (tmp_path / "empty").mkdir()
    r = splatlab("train", tmp_path / "empty", "--output", tmp_path / "o", "--no-progress")
    assert r.returncode == 1 and "empty" in r.stderr
    r = splatlab("train")  # changed on purpose (issue 10): a missing argument exits 2
    assert r.returncode == 2 and "missing DATA" in r.stderr
    for bad in (["--iterations", "-5"], ["--max-minutes", "0"], ["--optim.means-lr", "nan"]):
        r = splatlab("train", tmp_path / "empty", "--output", tmp_path / "bad", *bad)
        assert r.returncode == 2 and r.stderr.count("error:") == 1, (bad, r.stderr)
        assert not (tmp_path / "bad").exists()


def test_eval_prints_a_table(trained, blender_dataset):
    r = splatlab("eval", trained, "--output", trained / "eval.json")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^mean\s+\d+\.\d+\s+0\.\d+", r.stdout, re.M)
    assert len(json.loads((trained / "eval.json").read_text())["per_image"]) == 3


def test_render_orbit_and_test_views(trained, tmp_path):
    r = splatlab("render", trained, "--frames", 6, "--output", tmp_path / "orbit")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "orbit").glob("*.png"))) == 6
    assert (tmp_path / "orbit" / "orbit.mp4").stat().st_size > 1000  # named as the demo's
    assert str(tmp_path / "orbit" / "orbit.mp4") in r.stdout
    r = splatlab("render", trained, "--camera-path", "test", "--output", tmp_path / "test", "--no-video")
    assert r.returncode == 0, r.stderr
    frames = sorted((tmp_path / "test").glob("*.png"))
    assert len(frames) == 3 and Image.open(frames[0]).size == (64, 32)
    r = splatlab("render", trained, "--frames", 6, "--output", tmp_path / "orbit")
    assert r.returncode == 1 and "--force" in r.stderr
    r = splatlab("render", trained, "--frames", 0, "--output", tmp_path / "none")
    assert r.returncode == 2 and not (tmp_path / "none").exists()


def test_export_every_format(trained, tmp_path):
    from splatlab.io import read_ply

    ply = sorted(trained.glob("point_cloud/iteration_40/point_cloud.ply"))[0]
    n = len(read_ply(ply))
    for fmt in ("ply", "splat", "gltf", "glb"):
        out = tmp_path / f"model.{fmt}"
        r = splatlab("export", trained, "--format", fmt, "--output", out)
        assert r.returncode == 0, r.stderr
        assert out.exists()
    assert (tmp_path / "model.splat").stat().st_size == 32 * n
    assert (tmp_path / "model.ply").read_bytes() == ply.read_bytes()
    gltf = json.loads((tmp_path / "model.gltf").read_text())
    assert "KHR_gaussian_splatting" in gltf["extensionsUsed"]
    assert (tmp_path / "model.glb").read_bytes()[:4] == b"glTF"
    r = splatlab("export", trained, "--format", "splat", "--output", tmp_path / "model.splat")
    assert r.returncode == 1 and "already exists" in r.stderr


def test_export_refuses_a_broken_ply(tmp_path):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\nend_header\n" + b"\0" * 8)
    r = splatlab("export", bad, "--format", "splat", "--output", tmp_path / "x.splat")
    assert r.returncode == 1 and "bad.ply" in r.stderr and "missing" in r.stderr
    assert not (tmp_path / "x.splat").exists()


def test_fit2d(tmp_path):
    yy, xx = np.mgrid[0:40, 0:48]
    img = np.stack([xx / 48, yy / 40, ((xx - 24) ** 2 + (yy - 20) ** 2 < 100) * 1.0], -1)
    Image.fromarray((img * 255).astype(np.uint8)).save(tmp_path / "img.png")
    out = tmp_path / "fit"
    r = splatlab("fit2d", tmp_path / "img.png", "--num-gaussians", 300, "--iterations", 60, "--output", out,
                 "--frames-every", 20)
    assert r.returncode == 0, r.stderr
    for name in ("reconstruction.png", "comparison.png", "psnr.png", "metrics.json"):
        assert (out / name).exists(), name
    assert (out / "fit.mp4").exists() or (out / "fit.gif").exists()
    assert json.loads((out / "metrics.json").read_text())["psnr"] > 20
    r = splatlab("fit2d", tmp_path / "missing.png", "--output", tmp_path / "fit2")
    assert r.returncode == 1 and "missing.png" in r.stderr


def test_demo_short(tmp_path):
    out = tmp_path / "demo"
    r = splatlab("demo", "--iterations", 30, "--views", 16, "--size", 48, "--output", out)
    assert r.returncode == 0, r.stderr
    assert "test PSNR" in r.stdout
    assert list(out.glob("point_cloud/iteration_*/point_cloud.ply"))
    assert (out / "curve.png").exists() and (out / "orbit.mp4").stat().st_size > 1000
    assert len(list((out / "renders" / "test").glob("*.png"))) == 2
    # Re-running never overwrites: a numbered folder is used instead.
    r = splatlab("demo", "--iterations", 10, "--views", 8, "--size", 32, "--output", out)
    assert r.returncode == 0 and (tmp_path / "demo-2" / "metrics.json").exists()


def test_view_serves_the_model(trained):
    proc = subprocess.Popen([sys.executable, "-m", "splatlab.cli", "view", str(trained), "--port", "8197"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    try:
        url, deadline = None, time.time() + 60
        while url is None and time.time() < deadline:
            line = proc.stdout.readline()
            m = re.search(r"http://[\w.:\-]+", line)
            url = m.group(0) if m else None
        assert url, "the viewer did not print its URL"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200 and b"<html" in resp.read(2000).lower()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_help_shows_defaults():
    for cmd in ("train", "render", "eval", "export", "view", "fit2d", "demo"):
        r = splatlab(cmd, "--help")
        assert r.returncode == 0 and "usage" in r.stdout.lower(), cmd
    wide = subprocess.run([sys.executable, "-m", "splatlab.cli", "train", "--help"], capture_output=True,
                          text=True, env={**ENV, "COLUMNS": "200"}).stdout
    assert "(default: 30000)" in wide


def _option_defaults(help_text: str) -> dict[str, str]:
    """{--option: its default} from tyro's one-column --help: an option starts a line of its box,
    its description and "(default: ...)" run on until the next option."""
    defaults, current, text = {}, None, []

    def close():
        if current:
            d = re.search(r"\(default: ([^)]*)\)", " ".join(" ".join(text).split()))
            for name in current:
                defaults.setdefault(name, d.group(1) if d else "")

    for line in help_text.splitlines():
        body = line.strip().strip("│").strip()
        if body.startswith("--") or body.startswith("-h"):
            close()
            current, text = re.findall(r"--[\w.-]+", body.split("  ")[0]), [body]
        elif current:
            text.append(body)
    close()
    return defaults


def _same(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def test_readme_synopsis_matches_help():
    """Every `[--option VALUE]` of the README's command synopsis exists in that command's --help,
    and a literal VALUE (a number, or the first of a|b|c choices) is its default there."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    helps: dict[str, dict[str, str]] = {}
    command = None
    for line in block.splitlines():
        m = re.match(r"splatlab (\w+)", line.strip())
        if m:
            command = m.group(1)
        if command is None:
            continue
        if command not in helps:
            out = subprocess.run([sys.executable, "-m", "splatlab.cli", command, "--help"], capture_output=True,
                                 text=True, env={**ENV, "COLUMNS": "80"}).stdout  # one column
            helps[command] = _option_defaults(out)
        for name, value in re.findall(r"\[(--[\w.-]+)(?: ([^\]\s]+))?\]", line):
            options = helps[command]
            assert name in options or name.replace("--no-", "--", 1) in options, \
                f"README shows {name} for `splatlab {command}`, but --help has no such option"
            literal = value.split("|")[0] if value else ""
            if literal and not literal.isupper():
                assert _same(options[name], literal), \
                    f"README shows `{name} {value}` for `splatlab {command}`; --help's default is {options[name]!r}"


def test_render_and_eval_hold_out_the_views_the_run_held_out():
    """A run trained with --test-every 7 --intrinsics as-given is evaluated on its own test views,
    with its own cameras (the defaults, 8 and auto, would pick other views and cameras)."""
    from dataclasses import replace

    from splatlab.cli import _split_options
    from splatlab.train.config import TrainConfig

    cfg = TrainConfig()
    cfg = replace(cfg, data=replace(cfg.data, test_every=7, intrinsics="as-given"))
    assert _split_options(TrainConfig.from_dict(cfg.to_dict())) == {"test_every": 7, "intrinsics": "as-given"}
    assert _split_options(None) == {}


def test_render_and_eval_use_the_filter_the_run_trained_with(tmp_path):
    """A model trained with --render.antialiased is evaluated and rendered with it (without it,
    its small Gaussians come out brighter than they trained); a bare model file gets the defaults."""
    from dataclasses import replace

    from splatlab.cli import _settings_of_run
    from splatlab.train.config import TrainConfig

    cfg = TrainConfig()
    cfg = replace(cfg, render=replace(cfg.render, antialiased=True, eps2d=0.1, near_plane=0.2))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    settings = _settings_of_run(run, "cpu", (0.1, 0.2, 0.3))
    assert settings.antialiased and settings.eps2d == 0.1 and settings.near_plane == 0.2
    assert settings.backend == "cpu" and settings.background == (0.1, 0.2, 0.3)
    bare = _settings_of_run(None, "auto", (0, 0, 0))
    assert not bare.antialiased and bare.eps2d == TrainConfig().render.eps2d

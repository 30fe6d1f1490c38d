"""Initial Gaussians from the views: visual hull, camera frusta, or the dataset's points."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from splatlab import Camera
from splatlab.data.scene import Scene, View
from splatlab.train.config import TrainConfig
from splatlab.train.init import random_init, resolve_region
from splatlab.train.events import MessageEvent
from splatlab.train.run import Run

RADIUS = 0.5  # a ball at the origin, red, seen over white
RED = (200, 30, 30)


def ball_scene(num_views: int = 16, size: int = 48, with_alpha: bool = True, points=None, random_points=True) -> Scene:
    """Cameras on two rings around a red ball; alpha = 255 where the pixel's ray hits the ball."""
    views = []
    for i in range(num_views):
        a = 2 * math.pi * i / num_views
        h = 1.2 if i % 2 else -0.8
        cam = Camera.look_at((3 * math.cos(a), 3 * math.sin(a), h), (0, 0, 0), width=size, height=size,
                             fov_x=math.radians(45), name=f"v{i:02d}")
        ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
        dirs_cam = torch.stack([(xs - cam.cx) / cam.fx, (ys - cam.cy) / cam.fy, torch.ones_like(xs)], -1).double()
        rot = cam.viewmat[:3, :3]
        dirs = torch.nn.functional.normalize(dirs_cam @ rot, dim=-1)  # world directions [H, W, 3]
        o = cam.position
        b = (dirs * o).sum(-1)
        disc = b * b - (o @ o - RADIUS**2)
        hit = (disc > 0) & (-b - disc.clamp_min(0).sqrt() > 0)
        image = torch.full((size, size, 3), 255, dtype=torch.uint8)
        image[hit] = torch.tensor(RED, dtype=torch.uint8)
        alpha = (hit.to(torch.uint8) * 255) if with_alpha else None
        views.append(View(cam, image, cam.name, alpha=alpha))
    cams = torch.stack([v.camera.position for v in views])
    extent = 1.1 * (cams - cams.mean(0)).norm(dim=1).max().item()
    colors = None if points is None else torch.rand(len(points), 3)
    return Scene(views, [], points, colors, extent, (1.0, 1.0, 1.0), "synthetic", Path("ball"),
                 info={"random_points": random_points})


def test_hull_places_points_inside_the_object_with_its_colour():
    scene = ball_scene()
    g, used = random_init(scene, 2000, "hull", sh_degree=1, generator=torch.Generator().manual_seed(0))
    assert used == "hull" and len(g) == 2000
    r = g.means.norm(dim=-1)
    # 16 views carve a polyhedron around the ball: a little larger, never far outside it.
    assert r.max() < 1.25 * RADIUS
    assert (r < RADIUS).float().mean() > 0.6
    colour = g.sh0[:, 0] * 0.28209479177387814 + 0.5  # DC colour
    assert torch.allclose(colour.mean(0), torch.tensor(RED) / 255.0, atol=0.05)
    assert torch.isfinite(g.log_scales).all() and (g.log_scales.exp() < 0.2).all()


def test_frusta_bound_the_region_all_views_see():
    scene = ball_scene()
    g, used = random_init(scene, 1000, "frusta", generator=torch.Generator().manual_seed(0))
    assert used == "frusta" and len(g) == 1000
    half_width = 3 * math.tan(math.radians(22.5))  # what a camera sees at the origin's distance
    assert g.means.norm(dim=-1).max() < 3 * half_width  # well inside the camera box (extent ~3.3)
    seen = torch.zeros(len(g))
    for view in scene.train:
        uvz = view.camera.project(g.means.double())
        seen += (uvz[:, 2] > 0) & (uvz[:, 0] >= 0) & (uvz[:, 0] < 48) & (uvz[:, 1] >= 0) & (uvz[:, 1] < 48)
    assert (seen >= 0.5 * len(scene.train)).all()  # at least half the views see every point


def test_box_is_the_camera_box():
    scene = ball_scene()
    g, used = random_init(scene, 500, "box", generator=torch.Generator().manual_seed(0))
    assert used == "box" and len(g) == 500
    assert g.means.norm(dim=-1).max() > 1.5  # most of the box is empty space around the ball


def test_resolve_region_auto():
    points = torch.rand(50, 3)
    assert resolve_region(ball_scene(), "auto") == "hull"  # random points (none here), alpha
    assert resolve_region(ball_scene(points=points, random_points=True), "auto") == "hull"
    assert resolve_region(ball_scene(points=points, random_points=False), "auto") == "points"  # SfM points
    assert resolve_region(ball_scene(with_alpha=False), "auto") == "frusta"
    assert resolve_region(ball_scene(with_alpha=False, points=points), "auto") == "points"
    assert resolve_region(ball_scene(), "frusta") == "frusta"


def test_bad_regions_are_clear_errors():
    with pytest.raises(ValueError, match="no point cloud"):
        resolve_region(ball_scene(), "points")
    with pytest.raises(ValueError, match="unknown init region"):
        resolve_region(ball_scene(), "sphere")
    with pytest.raises(ValueError, match="alpha"):
        random_init(ball_scene(with_alpha=False), 100, "hull")
    with pytest.raises(ValueError, match="positive"):
        random_init(ball_scene(), 0, "hull")


def test_training_starts_inside_the_hull(tmp_path):
    scene = ball_scene()
    scene.test = scene.train[:2]
    cfg = TrainConfig(output=tmp_path / "run", iterations=5, max_minutes=None, init_num_random=500, sh_degree=0, progress=False,
                      save_renders=False, save_at=(), eval_at=())
    trainer = Run(cfg, scene)
    said = []
    trainer.subscribe(lambda e: said.append(e.text) if isinstance(e, MessageEvent) else None)
    result = trainer.train()
    assert any("initial Gaussians from hull" in text for text in said)
    assert len(result.gaussians) == 500 and result.gaussians.means.norm(dim=-1).max() < 1.25 * RADIUS
    with pytest.raises(ValueError, match="no point cloud"):
        Run(replace(cfg, init_region="points", output=tmp_path / "b"), scene).train()

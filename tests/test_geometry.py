"""geometry.py: quaternions, covariances and the orientation of a capture."""

import math

import pytest
import torch

from splatlab.camera import Camera
from splatlab.geometry import (
    quat_multiply,
    quat_scale_to_covar,
    quat_to_rotmat,
    rotation_to_z_up,
    rotmat_to_quat,
    slerp,
    up_from_cameras,
)


def test_rotmat_quat_round_trip_in_every_branch():
    gen = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(500, 4, generator=gen, dtype=torch.float64), dim=-1)
    q = torch.where(q[:, :1] < 0, -q, q)
    # Near-180-degree turns (w ~ 0) exercise the branches that do not divide by the trace.
    q[:3] = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [1e-9, 0.0, 0.0, 1.0]], dtype=torch.float64)
    q = torch.nn.functional.normalize(q, dim=-1)
    back = rotmat_to_quat(quat_to_rotmat(q))
    assert torch.allclose(back, q, atol=1e-12) or torch.allclose(
        quat_to_rotmat(back), quat_to_rotmat(q), atol=1e-12
    )
    assert torch.allclose(quat_to_rotmat(back), quat_to_rotmat(q), atol=1e-12)


def test_quat_multiply_composes_rotations_and_covariance_is_r_s2_rt():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 10, 4, generator=gen, dtype=torch.float64)
    a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
    assert torch.allclose(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b), atol=1e-12)
    s = torch.rand(10, 3, generator=gen, dtype=torch.float64) + 0.1
    r = quat_to_rotmat(a)
    assert torch.allclose(quat_scale_to_covar(a, s), r @ torch.diag_embed(s**2) @ r.transpose(-1, -2), atol=1e-12)


def test_slerp_halfway_is_half_the_angle():
    q0 = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    q1 = torch.tensor([math.cos(0.5), 0.0, 0.0, math.sin(0.5)], dtype=torch.float64)  # 1 rad about z
    half = slerp(q0, q1, 0.5)
    assert torch.allclose(half, torch.tensor([math.cos(0.25), 0, 0, math.sin(0.25)], dtype=torch.float64))


def test_up_from_cameras_finds_a_tilted_world_up():
    tilt = quat_to_rotmat(torch.tensor([[math.cos(0.3), math.sin(0.3), 0.0, 0.0]], dtype=torch.float64))[0]
    true_up = tilt @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    cams = []
    for k in range(8):  # a ring of upright cameras looking at the origin, in a tilted world
        t = 2 * math.pi * k / 8
        eye = tilt @ torch.tensor([3 * math.cos(t), 3 * math.sin(t), 0.5], dtype=torch.float64)
        cams.append(Camera.look_at(eye.tolist(), (0, 0, 0), true_up.tolist(), width=32, height=32))
    up = up_from_cameras([c.c2w for c in cams])
    assert torch.allclose(up, true_up, atol=0.05)
    r = rotation_to_z_up(up)
    assert torch.allclose(r @ up, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    flipped = rotation_to_z_up(torch.tensor([0.0, 0.0, -1.0]))
    assert torch.allclose(flipped @ torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64),
                          torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


def test_up_from_cameras_is_not_tilted_by_cameras_looking_up():
    """Cameras on one side of a tall subject, all pitched up 25 degrees: the mean of their up
    axes tilts by about that much; the level right axes give the true up."""
    cams = []
    for k in range(7):
        a = math.radians(-60 + 20 * k)  # a 120-degree arc in front of the subject
        eye = torch.tensor([5 * math.cos(a), 5 * math.sin(a), 0.0], dtype=torch.float64)
        target = torch.tensor([0.0, 0.0, 5 * math.tan(math.radians(25))], dtype=torch.float64)
        cams.append(Camera.look_at(eye.tolist(), target.tolist(), (0, 0, 1), width=32, height=32))
    c2ws = [c.c2w for c in cams]
    mean_up = -torch.stack([c[:3, 1].double() for c in c2ws]).mean(0)
    tilt = math.degrees(math.acos(float(mean_up[2] / mean_up.norm())))
    assert tilt > 15  # the naive estimate is off
    assert torch.allclose(up_from_cameras(c2ws), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-6)


def test_orbit_circles_the_capture_with_its_median_field_of_view():
    """A ring of cameras around the origin whose first photo is a telephoto: the orbit keeps
    the ring's height, distance and centre, and frames with the median field of view."""
    from splatlab.camera_paths import orbit_from_cameras

    fovs = [12.0, 30.0, 40.0, 45.0, 50.0]  # degrees; the first is the odd one
    cams = []
    for k, fov in enumerate(fovs):
        t = 2 * math.pi * k / len(fovs)
        cams.append(Camera.look_at([4 * math.cos(t), 4 * math.sin(t), 1.0], (0, 0, 0), (0, 0, 1),
                                   fov_x=math.radians(fov), width=60, height=40))
    orbit = orbit_from_cameras(cams, 6)
    assert len(orbit) == 6
    for cam in orbit:
        assert (cam.width, cam.height) == (60, 40)
        assert math.degrees(2 * math.atan(0.5 * cam.width / cam.fx)) == pytest.approx(40.0)
        p = cam.position.double()
        assert float(p[2]) == pytest.approx(1.0, abs=1e-6)
        assert float(p[:2].norm()) == pytest.approx(4.0, abs=1e-6)
        centre = cam.c2w.double()[:3, 3] + float(p.norm()) * cam.c2w.double()[:3, 2]  # looks at the origin
        assert float(centre.norm()) < 1e-6

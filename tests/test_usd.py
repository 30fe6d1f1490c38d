"""OpenUSD export and import: UsdVol.ParticleField3DGaussianSplat through usd-core.

What is checked against what:
- a trained model's .usda, opened by usd-core alone in a separate process (no splatlab), has one
  prim of the schema's type, every per-particle attribute has one value per Gaussian, and the
  values are in the schema's units (linear scales, opacities in [0, 1], unit quaternions);
- read back through splatlab, it renders the same images (PSNR >= 50 dB, float32 storage);
- usd-core's own validators (what `usdchecker` runs) find nothing to complain about;
- a .usda written by hand from the schema documentation (not by the writer) is read with the
  documented layouts: quaternion (real, i, j, k), SH grouped by particle, coefficient-major;
- bad files fail naming the prim and the attribute; without usd-core, the error gives the pip command.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from splatlab import Camera, RenderSettings, rasterize
from splatlab.cli import main as cli_main
from splatlab.io import FORMATS, export_model, read_model
from splatlab.metrics import psnr

from helpers import random_scene

from splatlab.io.usd import (
    UPRIGHT_OP_SUFFIX, UsdFormatError, check_usd_compliance, read_usd, read_usd_info, stage_up, write_usd,
)

try:
    import pxr  # noqa: F401

    HAVE_USD = True
except ImportError:
    HAVE_USD = False
needs_usd = pytest.mark.skipif(not HAVE_USD, reason='usd-core is not installed (pip install "splatlab[usd]")')

SH_C0 = 0.28209479177387814


def _ring(n: int, size: int = 40) -> list[Camera]:
    cams = []
    for i in range(n):
        a = 2 * math.pi * i / n
        cams.append(Camera.look_at((3 * math.cos(a), 3 * math.sin(a), 1.2), (0, 0, 0), width=size, height=size,
                                   fov_x=math.radians(50), name=f"v{i:02d}"))
    return cams


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained for a few hundred steps with SH degree 3 on views of a random scene."""
    from splatlab.data.scene import Scene, View
    from splatlab.train.config import TrainConfig
    from splatlab.train.strategy import DefaultStrategyConfig
    from splatlab.train.run import Run

    truth = random_scene(150, sh_degree=3, seed=1, dtype=torch.float32, spread=0.8, depth=0.0,
                         log_scale_range=(-2.8, -2.0), opacity_range=(0.5, 0.95))
    views = []
    for cam in _ring(12, 32):
        with torch.no_grad():
            img = rasterize(truth, cam, RenderSettings(background=(1, 1, 1))).image
        views.append(View(cam, (img.clamp(0, 1) * 255).round().to(torch.uint8), cam.name))
    gen = torch.Generator().manual_seed(2)
    scene = Scene([v for i, v in enumerate(views) if i % 4], views[::4], torch.rand(300, 3, generator=gen) * 2 - 1,
                  torch.rand(300, 3, generator=gen), 3.3, (1.0, 1.0, 1.0), "synthetic", Path("synthetic"))
    out = tmp_path_factory.mktemp("usd_run") / "run"
    strategy = DefaultStrategyConfig(refine_start=20, refine_stop=100, refine_every=20, reset_every=1000,
                                    max_gaussians=1500)
    cfg = TrainConfig(output=out, iterations=150, sh_degree=3, sh_degree_interval=20, save_at=(150,), eval_at=(),
                      max_minutes=None, checkpoint_every=1000, progress=False, save_renders=False, strategy=strategy,
                      seed=3)
    result = Run(cfg, scene).train()
    assert result.gaussians.sh_degree == 3 and result.gaussians.shN.abs().sum() > 0
    return out, scene


_PXR_ONLY_CHECK = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from pxr import Usd, UsdGeom
    stage = Usd.Stage.Open(sys.argv[1])
    prims = [p for p in stage.Traverse() if p.GetTypeName() == "ParticleField3DGaussianSplat"]
    p = prims[0]
    get = lambda name: p.GetAttribute(name).Get()
    arrays = {name: np.asarray(get(name), dtype=np.float64) for name in
              ("positions", "orientations", "scales", "opacities", "radiance:sphericalHarmonicsCoefficients")}
    np.savez(sys.argv[2], **{k.replace(":", "_"): v for k, v in arrays.items()})
    print(json.dumps({
        "num_splat_prims": len(prims),
        "all_types": sorted({q.GetTypeName() for q in stage.Traverse()}),
        "applied": list(p.GetAppliedSchemas()),
        "lengths": {k: len(v) for k, v in arrays.items()},
        "degree": get("radiance:sphericalHarmonicsDegree"),
        "types": {k: str(p.GetAttribute(k).GetTypeName()) for k in arrays},
        "upAxis": UsdGeom.GetStageUpAxis(stage), "metersPerUnit": UsdGeom.GetStageMetersPerUnit(stage),
        "defaultPrim": str(stage.GetDefaultPrim().GetPath()),
    }))
    """
)


@needs_usd
def test_trained_model_as_usda_checks_out_in_a_separate_usd_core_process(trained, tmp_path):
    run, scene = trained
    usda = tmp_path / "model.usda"
    assert cli_main(["export", str(run), "--format", "usda", "--output", str(usda)]) == 0
    original = read_model(next(run.glob("point_cloud/iteration_*/point_cloud.ply")))
    n = len(original)

    proc = subprocess.run([sys.executable, "-c", _PXR_ONLY_CHECK, str(usda), str(tmp_path / "arrays.npz")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["num_splat_prims"] == 1 and info["all_types"] == ["ParticleField3DGaussianSplat"]
    for api in ("ParticleFieldPositionAttributeAPI", "ParticleFieldOrientationAttributeAPI",
                "ParticleFieldScaleAttributeAPI", "ParticleFieldOpacityAttributeAPI",
                "ParticleFieldKernelGaussianEllipsoidAPI", "ParticleFieldSphericalHarmonicsAttributeAPI"):
        assert api in info["applied"]
    assert info["degree"] == 3
    assert info["lengths"] == {"positions": n, "orientations": n, "scales": n, "opacities": n,
                               "radiance:sphericalHarmonicsCoefficients": 16 * n}
    assert info["types"]["positions"] == "point3f[]" and info["types"]["orientations"] == "quatf[]"
    assert info["types"]["scales"] == "float3[]" and info["types"]["opacities"] == "float[]"
    assert info["upAxis"] in ("Y", "Z") and info["metersPerUnit"] == 1.0 and info["defaultPrim"] == "/Gaussians"

    # Units and layouts as the schema documents them, checked on what usd-core itself returned.
    arrays = np.load(tmp_path / "arrays.npz")
    g = original.to(dtype=torch.float64)
    np.testing.assert_allclose(arrays["positions"], g.means.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(arrays["scales"], g.log_scales.exp().numpy(), rtol=1e-6)  # linear, not log
    np.testing.assert_allclose(arrays["opacities"], torch.sigmoid(g.logit_opacities).numpy(), rtol=1e-6, atol=1e-7)
    unit_wxyz = torch.nn.functional.normalize(g.quats, dim=-1).numpy()
    np.testing.assert_allclose(arrays["orientations"], unit_wxyz[:, [1, 2, 3, 0]], atol=1e-6)  # numpy: i, j, k, real
    sh = arrays["radiance_sphericalHarmonicsCoefficients"].reshape(n, 16, 3)  # grouped by particle
    np.testing.assert_allclose(sh, torch.cat([g.sh0, g.shN], 1).numpy(), atol=1e-6)

    back = read_model(usda)
    assert len(back) == n and back.sh_degree == 3
    for view in scene.test:
        with torch.no_grad():
            a = rasterize(original, view.camera, RenderSettings(background=(1, 1, 1))).image.clamp(0, 1)
            b = rasterize(back, view.camera, RenderSettings(background=(1, 1, 1))).image.clamp(0, 1)
        assert psnr(a, b) >= 50.0, (view.name, psnr(a, b))
    assert check_usd_compliance(usda) == []


@needs_usd
@pytest.mark.parametrize("fmt", ["usd", "usda", "usdc", "usdz"])
def test_every_usd_flavour_round_trips_and_passes_usd_core_validation(tmp_path, fmt):
    g = random_scene(64, sh_degree=2, seed=4, dtype=torch.float32)
    path = export_model(tmp_path / f"m.{fmt}", g)
    assert path == tmp_path / f"m.{fmt}" and fmt in FORMATS
    assert check_usd_compliance(path) == []
    head = path.read_bytes()[:8]
    if fmt in ("usd", "usdc"):
        assert head == b"PXR-USDC"  # binary crate
    elif fmt == "usda":
        assert head.startswith(b"#usda")
    else:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            assert names[0].endswith(".usdc") and all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
    back = read_model(path)
    torch.testing.assert_close(back.means, g.means, rtol=0, atol=0)
    torch.testing.assert_close(back.log_scales, g.log_scales, rtol=0, atol=1e-6)
    torch.testing.assert_close(back.logit_opacities, g.logit_opacities, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(back.quats, torch.nn.functional.normalize(g.quats, dim=-1), rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.cat([back.sh0, back.shN], 1), g.sh, rtol=0, atol=0)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


@needs_usd
def test_usda_written_from_the_schema_docs_is_read_with_their_layouts(tmp_path):
    # 2 particles, degree 1: 4 coefficients each, grouped by particle, coefficient-major RGB triples.
    sh = [(10 * p + k, 10 * p + k + 0.25, 10 * p + k + 0.5) for p in range(2) for k in range(4)]
    text = f"""#usda 1.0
(
    defaultPrim = "S"
    metersPerUnit = 0.01
    upAxis = "Y"
)

def ParticleField3DGaussianSplat "S"
{{
    point3f[] positions = [(1, 2, 3), (4, 5, 6)]
    quatf[] orientations = [(0.5, 0.5, 0.5, 0.5), (1, 0, 0, 0)]
    float3[] scales = [(0.5, 1, 2), (1, 1, 1)]
    float[] opacities = [0.25, 1]
    uniform int radiance:sphericalHarmonicsDegree = 1
    float3[] radiance:sphericalHarmonicsCoefficients = [{", ".join(str(c) for c in sh)}]
}}
"""
    path = tmp_path / "hand.usda"
    path.write_text(text)
    g = read_usd(path)
    assert len(g) == 2 and g.sh_degree == 1
    torch.testing.assert_close(g.means, torch.tensor([[1.0, 2, 3], [4, 5, 6]]))
    # usda writes a quaternion as (real, i, j, k); splatlab keeps (w, x, y, z).
    torch.testing.assert_close(g.quats, torch.tensor([[0.5, 0.5, 0.5, 0.5], [1.0, 0, 0, 0]]))
    torch.testing.assert_close(g.log_scales, torch.log(torch.tensor([[0.5, 1, 2], [1.0, 1, 1]])))
    torch.testing.assert_close(torch.sigmoid(g.logit_opacities), torch.tensor([0.25, 1.0]), atol=1e-6, rtol=0)
    assert torch.isfinite(g.logit_opacities).all()  # opacity 1 is clamped to stay finite
    torch.testing.assert_close(g.sh0[1, 0], torch.tensor([10.0, 10.25, 10.5]))
    torch.testing.assert_close(g.shN[0, 2], torch.tensor([3.0, 3.25, 3.5]))  # particle 0, coefficient 3
    info = read_usd_info(path)
    assert info.up_axis == "Y" and info.meters_per_unit == 0.01 and info.splat_prims == ("/S",)


@needs_usd
def test_unauthored_attributes_take_the_schema_fallbacks(tmp_path):
    path = tmp_path / "bare.usda"
    path.write_text('#usda 1.0\ndef ParticleField3DGaussianSplat "S"\n{\n    point3f[] positions = [(0, 0, 0)]\n}\n')
    g = read_usd(path)
    torch.testing.assert_close(g.quats, torch.tensor([[1.0, 0, 0, 0]]))  # no rotation
    torch.testing.assert_close(g.log_scales, torch.zeros(1, 3))  # unit scale
    assert g.opacities.item() > 0.999  # fully opaque
    assert g.sh_degree == 0 and torch.allclose(g.sh0 * SH_C0 + 0.5, torch.full((1, 1, 3), 0.5))  # grey DC


def _splat_usda(body: str, header: str = "") -> str:
    return f'#usda 1.0\n{header}\ndef ParticleField3DGaussianSplat "Splat"\n{{\n{body}\n}}\n'


@needs_usd
@pytest.mark.parametrize("body, attribute", [
    ("    point3f[] positions = [(0, 0, 0), (1, 1, 1)]\n    float[] opacities = [0.5]", "opacities"),
    ("    point3f[] positions = [(0, 0, 0), (1, 1, 1)]\n    float3[] scales = [(1, 1, 1), (1, 1, 1), (1, 1, 1)]",
     "scales"),
    ("    point3f[] positions = [(0, 0, 0)]\n    uniform int radiance:sphericalHarmonicsDegree = 1\n"
     "    float3[] radiance:sphericalHarmonicsCoefficients = [(0, 0, 0), (0, 0, 0)]",
     "radiance:sphericalHarmonicsCoefficients"),
    ("    point3f[] positions = [(0, 0, 0)]\n    quatf[] orientations = [(1, 0, 0, 0), (1, 0, 0, 0)]", "orientations"),
    ("    float[] opacities = [0.5]", "positions"),
])
def test_mismatched_or_missing_attributes_name_the_prim_and_the_attribute(tmp_path, body, attribute):
    path = tmp_path / "bad.usda"
    path.write_text(_splat_usda(body))
    with pytest.raises(UsdFormatError) as info:
        read_model(path)
    message = str(info.value)
    assert str(path) in message and "/Splat" in message and f"'{attribute}'" in message


@needs_usd
def test_a_stage_without_a_splat_prim_is_refused_naming_what_is_there(tmp_path):
    path = tmp_path / "mesh.usda"
    path.write_text('#usda 1.0\ndef Xform "World"\n{\n    def Mesh "Box"\n    {\n    }\n}\n')
    with pytest.raises(UsdFormatError, match=r"no ParticleField3DGaussianSplat prim.*/World/Box \(Mesh\)"):
        read_model(path)


@needs_usd
def test_transforms_above_the_prim_are_applied_and_shear_is_refused(tmp_path):
    from splatlab.edit import euler_to_rotmat, similarity_transform

    local = random_scene(20, sh_degree=3, seed=6, dtype=torch.float32)
    inner = tmp_path / "inner.usda"
    write_usd(inner, local)
    body = inner.read_text().split('def ParticleField3DGaussianSplat "Gaussians"', 1)[1]
    text = ('#usda 1.0\n(\n    defaultPrim = "World"\n)\ndef Xform "World" (\n)\n{\n'
            '    double3 xformOp:translate = (1, -2, 3)\n    float3 xformOp:rotateXYZ = (30, 40, 50)\n'
            '    float3 xformOp:scale = (2, 2, 2)\n'
            '    uniform token[] xformOpOrder = ["xformOp:translate", "xformOp:rotateXYZ", "xformOp:scale"]\n'
            '    def ParticleField3DGaussianSplat "Gaussians"' + body.replace("\n", "\n    ") + "\n}\n")
    path = tmp_path / "moved.usda"
    path.write_text(text)
    expected = similarity_transform(local, euler_to_rotmat((30, 40, 50)), 2.0, torch.tensor([1.0, -2, 3]))
    got = read_model(path)
    torch.testing.assert_close(got.means, expected.means, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got.log_scales, expected.log_scales, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.shN, expected.shN, atol=1e-4, rtol=1e-4)
    assert torch.allclose(got.quats, expected.quats, atol=1e-4) or torch.allclose(got.quats, -expected.quats, atol=1e-4)

    path.write_text(text.replace("(2, 2, 2)", "(1, 2, 3)"))
    with pytest.raises(UsdFormatError, match=r"/World/Gaussians.*not a similarity"):
        read_model(path)


@needs_usd
def test_up_axis_from_the_model_orientation(tmp_path):
    from pxr import Usd, UsdGeom

    assert stage_up(None) == ("Z", None) and stage_up("y") == ("Y", None)
    assert stage_up(torch.tensor([0.05, 0.0, 1.0]))[1] is None  # within 10 degrees of +Z
    assert stage_up(torch.tensor([0.0, 1.0, 0.1])) == ("Y", None)
    g = random_scene(10, sh_degree=1, seed=7, dtype=torch.float32)
    path = write_usd(tmp_path / "down.usda", g, up=torch.tensor([0.3, -1.0, 0.2]), meters_per_unit=0.5)
    stage = Usd.Stage.Open(str(path))
    assert UsdGeom.GetStageUpAxis(stage) == "Z" and UsdGeom.GetStageMetersPerUnit(stage) == 0.5
    prim = stage.GetDefaultPrim()
    assert [op.GetName() for op in UsdGeom.Xformable(prim).GetOrderedXformOps()] == [
        f"xformOp:orient:{UPRIGHT_OP_SUFFIX}"]
    # In any USD application the model's up now points along +Z...
    m = np.array(UsdGeom.Xformable(prim).ComputeLocalToWorldTransform(Usd.TimeCode.Default()))  # row vectors
    up = np.array([0.3, -1.0, 0.2]) / np.linalg.norm([0.3, -1.0, 0.2])
    np.testing.assert_allclose(up @ m[:3, :3], [0, 0, 1], atol=1e-6)
    # ...while splatlab reads it back in the frame it was trained in, knowing where up is,
    torch.testing.assert_close(read_model(path).means, g.means)
    np.testing.assert_allclose(read_usd_info(path).up, up, atol=1e-9)
    assert check_usd_compliance(path) == []
    # so that editing the file keeps it upright.
    assert cli_main(["edit", str(path), "--output", str(tmp_path / "again.usda"), "--min-opacity", "0.01"]) == 0
    again = Usd.Stage.Open(str(tmp_path / "again.usda"))
    m2 = np.array(UsdGeom.Xformable(again.GetDefaultPrim()).ComputeLocalToWorldTransform(Usd.TimeCode.Default()))
    np.testing.assert_allclose(m2, m, atol=1e-9)


@needs_usd
def test_several_splat_prims_are_read_as_one_model(tmp_path):
    a = write_usd(tmp_path / "a.usda", random_scene(5, sh_degree=0, seed=1, dtype=torch.float32))
    b = write_usd(tmp_path / "b.usda", random_scene(7, sh_degree=2, seed=2, dtype=torch.float32))
    body = lambda p: p.read_text().split('def ParticleField3DGaussianSplat "Gaussians"', 1)[1]  # noqa: E731
    path = tmp_path / "two.usda"
    path.write_text('#usda 1.0\ndef ParticleField3DGaussianSplat "A"' + body(a)
                    + '\ndef ParticleField3DGaussianSplat "B"' + body(b))
    g = read_model(path)
    assert len(g) == 12 and g.sh_degree == 2 and g.shN[:5].abs().sum() == 0


def test_without_usd_core_the_error_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "pxr" or m.startswith("pxr.")]:
        monkeypatch.setitem(sys.modules, name, None)
    g = random_scene(4, sh_degree=0, seed=0, dtype=torch.float32)
    with pytest.raises(RuntimeError, match=r'pip install "splatlab\[usd\]"'):
        export_model(tmp_path / "m.usda", g)
    assert list(tmp_path.iterdir()) == []
    ply = export_model(tmp_path / "m.ply", g)
    assert cli_main(["export", str(ply), "--format", "usd", "--output", str(tmp_path / "m.usd")]) == 1
    assert 'pip install "splatlab[usd]"' in capsys.readouterr().err
    assert not (tmp_path / "m.usd").exists()

"""The viewer on a real model: agreement with `splatlab render` and speed — issue 15.

    python benchmarks/bench_viewer.py MODEL [--data DATASET] [--views 3] [--json out.json]

MODEL is a model file or a `splatlab train` output folder (its dataset gives the cameras; or
--data). The viewer runs with the training cameras; a headless chromium (software WebGL,
splatlab.viewer.headless) opens it at 800x600. For --views training cameras spread over the
capture, the browser is put at that camera ("Go to camera": pose and vertical field of view)
and its screenshot compared (PSNR) with splatlab's renderer from the browser's reported camera:

    splats SH   the browser's splats with colours evaluated for the camera (the default while moving)
    splats DC   the same with the DC colour only (what the viewer showed before issue 15)
    exact       the exact render shown once the camera rests (JPEG-encoded)

Then one 4 s orbit drag measures the frames drawn per second in the browser and the colour
pushes made on the way. Costs on the server: one model push (conversion + hand-over to viser),
one colour push (SH evaluation for the camera + hand-over, one thread), one exact render at the
canvas size (render + JPEG + depth PNG when frustums are on, which they are not here). Software
WebGL on 2 shared cores is a floor: a real GPU draws the same splats far faster.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _stable(page, psnr, timeout: float = 120.0):
    """A screenshot once two in a row agree and show something (not one flat colour)."""
    previous, deadline = None, time.monotonic() + timeout
    while True:
        time.sleep(1.5)
        shot = page.screenshot()
        if previous is not None and psnr(shot, previous) > 45 and int(shot.max()) - int(shot.min()) > 30:
            return shot
        if time.monotonic() > deadline:
            raise TimeoutError("the browser's picture did not settle")
        previous = shot


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from splatlab.cli import find_model
    from splatlab.io import read_model
    from splatlab.render import RenderSettings, rasterize
    from splatlab.viewer import Viewer, camera_from_view, load_training_cameras
    from splatlab.viewer.cameras import dataset_of_run
    from splatlab.viewer.headless import HeadlessBrowser, find_chromium, psnr

    model_file, run = find_model(args.model)
    gaussians = read_model(model_file)
    data, options = (args.data, {}) if args.data else dataset_of_run(run)
    if data is None:
        parser.error("no dataset: pass --data (the cameras give the views to compare)")
    cameras = load_training_cameras(data, options)
    chromium = find_chromium()
    if chromium is None:
        parser.error("chromium not found: run scripts/install_test_browser.sh")
    viewer = Viewer(gaussians, port=8790, cameras=cameras, still_render=False)
    viewer.camera_panel.show.value = False
    bg = tuple(c / 255.0 for c in viewer.state.background)
    rows, result = [], {"model": str(model_file), "gaussians": len(gaussians), "sh_degree": gaussians.sh_degree}
    result["model_push_s"] = viewer.state.push_cost
    try:
        with HeadlessBrowser(chromium, 800, 600) as page:
            page.goto(viewer.url)
            _wait(lambda: any(c.view is not None for c in viewer.clients.values()), 120, "the browser")
            client = next(iter(viewer.clients.values()))
            time.sleep(2.0)
            page.hide_overlays()
            picks = np.linspace(0, len(cameras) - 1, args.views).round().astype(int)
            for index in picks:
                target = cameras.cameras[index]
                viewer.camera_panel.go_to(client.client, int(index))
                _wait(lambda: torch.allclose(camera_from_view(client.view, target.width, target.height).viewmat,
                                             target.viewmat, atol=1e-5), 60, "the camera")
                viewer.flush()
                view = client.view
                shot = _stable(page, psnr)
                cam = camera_from_view(view, shot.shape[1], shot.shape[0])
                with torch.no_grad():
                    ref = rasterize(gaussians, cam, RenderSettings(background=bg)).image.clamp(0, 1)
                ref = (ref * 255 + 0.5).to(torch.uint8).numpy()
                row = {"camera": cameras.names[index], "splats_sh": psnr(shot, ref)}
                viewer.view_dependent = False
                viewer.flush()
                row["splats_dc"] = psnr(_stable(page, psnr), ref)
                viewer.view_dependent = True
                viewer.still_render = True
                if not viewer.wait_for_still(client.id, timeout=120):
                    raise TimeoutError("no exact render")
                row["exact"] = psnr(_stable(page, psnr), ref)
                row["exact_render_s"] = viewer.display.still_cost
                viewer.still_render = False
                viewer.flush()
                rows.append(row)
                print(json.dumps(row), flush=True)
            pushes = viewer.display.num_color_pushes
            result["drag_fps"] = page.drag(250, 300, 550, 320, steps=40, seconds=4.0)
            result["drag_color_pushes"] = viewer.display.num_color_pushes - pushes
            result["color_push_s"] = viewer.display.color_cost
    finally:
        viewer.close()
    result["views"] = rows
    for key in ("splats_sh", "splats_dc", "exact", "exact_render_s"):
        result[f"median_{key}"] = statistics.median(r[key] for r in rows)
    print(json.dumps({k: v for k, v in result.items() if k != "views"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if all(math.isfinite(r["splats_sh"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

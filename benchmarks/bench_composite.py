"""CompositeTiles alone, single-threaded process CPU time: forward and backward (issue 12).

    python benchmarks/bench_composite.py 100000 256 1     # n, image size, depth channel (1/0)

The standard random scene is projected and binned once; then 9 forward+backward passes of the
compositing stage (backward of sum(image * w)), median of the last 7 (CPU time is steadier than
wall time on a busy machine). Prints one line.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import common  # noqa: E402
import torch  # noqa: E402

from splatlab import RenderSettings  # noqa: E402
from splatlab.render.cpu import camera_params  # noqa: E402
from splatlab.render.cpu.binning import bin_gaussians  # noqa: E402
from splatlab.render.cpu.composite import CompositeTiles  # noqa: E402
from splatlab.render.cpu.project import ProjectGaussians  # noqa: E402


def main(n: int, res: int, depth: bool) -> None:
    torch.set_num_threads(1)
    g, cam = common.standard_scene(n, res)
    cp = camera_params(g, cam, RenderSettings(backend="cpu", num_threads=1))
    with torch.no_grad():
        means2d, conics, depths, opacities, colors, radii, rect = ProjectGaussians.apply(*g.params().values(), cp)
    binning = bin_gaussians(radii, rect, depths, res, res, 1)
    leaves = [t.clone().requires_grad_() for t in (means2d, conics, opacities, colors, depths)]
    w = common.loss_weights(res, res)
    fwd, bwd = [], []
    for k in range(9):
        t0 = time.process_time()
        image, _alpha, _depth = CompositeTiles.apply(*leaves, binning, res, res, (0.0, 0.0, 0.0), 1, False, depth)
        t1 = time.process_time()
        torch.autograd.grad((image * w).sum(), leaves[:4])
        t2 = time.process_time()
        if k >= 2:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    print(f"n={n} res={res} depth={depth}: composite fwd {1000 * statistics.median(fwd):.1f} ms cpu, "
          f"bwd {1000 * statistics.median(bwd):.1f} ms cpu")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1")

"""Build every kernel for an NVIDIA target without a GPU, and report its register use.

    python -m splatlab.render.triton.build          # sm_90 (H100 / H200), one line per kernel

The kernels are compiled as the GPU would compile them (Triton front end, LLVM, ptxas as
shipped in the Triton wheel), with the configurations rasterize_triton launches (float32, SH
degree 3, anti-aliasing, rgb + depth, absgrad). ptxas reports registers per thread and spills;
the tests require no spills. This catches what only the compiler rejects (the interpreter
runs kernels as Python) and the register pressure that decides occupancy. Run it with
TRITON_INTERPRET unset.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from . import autograd as A
from . import project_kernels as P
from . import raster_kernels as R

_INT_ARGS = {"n", "sh_stride", "width", "height", "tiles_x", "tiles_y", "num_pairs", "num_sorted"}
_I32_PTRS = {"radii_ptr", "rect_ptr", "tile_ptr", "gid_ptr", "out_last_ptr"}
_I64_PTRS = {"pair_offsets_ptr", "order_ptr", "tile_offsets_ptr", "slot_of_ptr"}


def _signature(fn, constexprs: dict, float_type: str) -> dict:
    """Triton type strings for every argument, as a launch with our tensors would infer them."""
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in _INT_ARGS:
            sig[name] = "i32"
        elif name in _I32_PTRS:
            sig[name] = "*i32"
        elif name in _I64_PTRS:
            sig[name] = "*i64"
        else:
            sig[name] = "*" + float_type
    return sig


def kernel_configs() -> dict:
    """name -> (kernel, constexprs, num_warps), as rasterize_triton launches them."""
    nslot = R.SLOT_BASE + 4 + 2
    return {
        "project_forward": (P.project_forward_kernel, dict(NUM_BASES=16, ANTIALIASED=True, BLOCK=A.PROJECT_BLOCK),
                            A.NUM_WARPS),
        "project_backward": (P.project_backward_kernel, dict(NUM_BASES=16, ANTIALIASED=True, BLOCK=A.PROJECT_BLOCK),
                             A.NUM_WARPS),
        "emit_intersections": (R.emit_intersections_kernel, dict(SEARCH_STEPS=25, BLOCK=A.PAIR_BLOCK), A.NUM_WARPS),
        "composite_forward": (R.composite_forward_kernel, dict(C=4, CHUNK=A.CHUNK), A.COMPOSITE_WARPS),
        "composite_backward": (R.composite_backward_kernel, dict(C=4, NSLOT=nslot, ABSGRAD=True, CHUNK=A.CHUNK),
                               A.COMPOSITE_WARPS),
        "reduce_slots": (R.reduce_slots_kernel, dict(NSLOT=nslot, NSLOT_P2=16, BLOCK=A.REDUCE_BLOCK), A.NUM_WARPS),
    }  # fmt: skip


def _ptxas_usage(ptx: str, arch: int) -> dict:
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.ptx"
        path.write_text(ptx)
        cmd = [get_ptxas(arch).path, "-v", f"--gpu-name=sm_{arch}a", str(path), "-o", str(Path(tmp) / "k.cubin")]
        text = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    regs = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    return {
        "registers": int(regs.group(1)) if regs else None,
        "spill_bytes": int(spills.group(1)) + int(spills.group(2)) if spills else None,
    }


def build_report(arch: int = 90, float_type: str = "fp32") -> dict:
    """Compile every kernel for sm_<arch>; name -> {registers, spill_bytes, num_warps}."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if not hasattr(P.project_forward_kernel, "arg_names") or type(P.project_forward_kernel).__name__ != "JITFunction":
        raise RuntimeError("the kernels were loaded in interpreter mode: unset TRITON_INTERPRET")
    report = {}
    for name, (fn, constexprs, num_warps) in kernel_configs().items():
        src = ASTSource(fn, _signature(fn, constexprs, float_type), constexprs)
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(num_warps=num_warps))
        report[name] = {**_ptxas_usage(compiled.asm["ptx"], arch), "num_warps": num_warps}
    return report


if __name__ == "__main__":
    arch = int(sys.argv[1]) if len(sys.argv) > 1 else 90
    for kernel, info in build_report(arch).items():
        print(json.dumps({"kernel": kernel, "arch": f"sm_{arch}", **info}))

"""Inline helpers shared by the CPU kernels: rotation, SH basis, footprint box, atomics, exp.

Everything here is `njit(inline="always")` (or a Numba intrinsic), so it is compiled into
the kernels that call it: project.py, binning.py, composite.py. `_JIT` holds the options
every kernel compiles with: cached on disk (``cache=True``); ``fastmath`` off, because the
kernels must agree with the PyTorch reference to 1e-5.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ...constants import SH_C0, SH_C1, SH_C2, SH_C3
from ...constants import TILE_SIZE as TILE

NPIX = TILE * TILE
_JIT = dict(cache=True, fastmath=False, nogil=True, error_model="numpy")

# Unpacked to scalars: Numba folds module-level floats into the compiled code as constants.
SH_C2_0, SH_C2_1, SH_C2_2, SH_C2_3, SH_C2_4 = SH_C2
SH_C3_0, SH_C3_1, SH_C3_2, SH_C3_3, SH_C3_4, SH_C3_5, SH_C3_6 = SH_C3

# ---- small helpers (inlined into the kernels) -------------------------------------------------


@njit(inline="always", **_JIT)
def _rotmat(w, x, y, z):
    """Rotation matrix of a unit quaternion (w, x, y, z), row major, as 9 scalars."""
    return (
        1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y),
        2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x),
        2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y),
    )  # fmt: skip


@njit(inline="always", **_JIT)
def _sh_bases(x, y, z):
    """The 16 real SH basis functions of degrees 0-3 at unit direction (x, y, z), as one tuple.

    Straight-line code, indexed by the caller's loop: a function of k with a branch per basis
    function cost the projection backward about a third of its time (branches per coefficient).
    """
    xx, yy, zz = x * x, y * y, z * z
    return (
        SH_C0,
        -SH_C1 * y, SH_C1 * z, -SH_C1 * x,
        SH_C2_0 * x * y, SH_C2_1 * y * z, SH_C2_2 * (2.0 * zz - xx - yy), SH_C2_3 * x * z,
        SH_C2_4 * (xx - yy),
        SH_C3_0 * y * (3.0 * xx - yy), SH_C3_1 * x * y * z, SH_C3_2 * y * (4.0 * zz - xx - yy),
        SH_C3_3 * z * (2.0 * zz - 3.0 * xx - 3.0 * yy), SH_C3_4 * x * (4.0 * zz - xx - yy),
        SH_C3_5 * z * (xx - yy), SH_C3_6 * x * (xx - 3.0 * yy),
    )  # fmt: skip


@njit(inline="always", **_JIT)
def _sh_basis_grads(x, y, z):
    """d/dx, d/dy, d/dz of the 16 basis functions (x, y, z treated as independent): three tuples."""
    xx, yy, zz = x * x, y * y, z * z
    gx = (
        0.0, 0.0, 0.0, -SH_C1,
        SH_C2_0 * y, 0.0, -2.0 * SH_C2_2 * x, SH_C2_3 * z, 2.0 * SH_C2_4 * x,
        6.0 * SH_C3_0 * x * y, SH_C3_1 * y * z, -2.0 * SH_C3_2 * x * y, -6.0 * SH_C3_3 * x * z,
        SH_C3_4 * (4.0 * zz - 3.0 * xx - yy), 2.0 * SH_C3_5 * x * z, SH_C3_6 * (3.0 * xx - 3.0 * yy),
    )  # fmt: skip
    gy = (
        0.0, -SH_C1, 0.0, 0.0,
        SH_C2_0 * x, SH_C2_1 * z, -2.0 * SH_C2_2 * y, 0.0, -2.0 * SH_C2_4 * y,
        SH_C3_0 * (3.0 * xx - 3.0 * yy), SH_C3_1 * x * z, SH_C3_2 * (4.0 * zz - xx - 3.0 * yy),
        -6.0 * SH_C3_3 * y * z, -2.0 * SH_C3_4 * x * y, -2.0 * SH_C3_5 * y * z, -6.0 * SH_C3_6 * x * y,
    )  # fmt: skip
    gz = (
        0.0, 0.0, SH_C1, 0.0,
        0.0, SH_C2_1 * y, 4.0 * SH_C2_2 * z, SH_C2_3 * x, 0.0,
        0.0, SH_C3_1 * x * y, 8.0 * SH_C3_2 * y * z, SH_C3_3 * (6.0 * zz - 3.0 * xx - 3.0 * yy),
        8.0 * SH_C3_4 * x * z, SH_C3_5 * (xx - yy), 0.0,
    )  # fmt: skip
    return gx, gy, gz


@njit(inline="always", **_JIT)
def _clamp_ratio(u, lo, hi):
    """clamp(u, lo, hi) and whether u was inside [lo, hi] (torch passes the gradient there)."""
    if u < lo:
        return lo, False
    if u > hi:
        return hi, False
    return u, True


@njit(inline="always", **_JIT)
def _floor_div_tile(v):
    return math.floor(v / TILE)


@njit(inline="always", **_JIT)
def _alpha_box(mx, my, a, b, c, o, width, height):
    """Inclusive pixel box (x0, y0, x1, y1) outside of which o * exp(-q/2) < 1/255 (q the conic
    form), with a generous margin; x0 > x1 when the Gaussian is below 1/255 everywhere.

    Arguments are the stored (dtype-rounded) values, converted to float64 here.
    """
    a64, b64, c64, o64 = float(a), float(b), float(c), float(o)
    det = a64 * c64 - b64 * b64
    x0, y0, x1, y1 = 0, 0, width - 1, height - 1
    if not (o64 * 255.0 > 1.0 - 1e-3):
        x0, y0, x1, y1 = 1, 1, 0, 0  # alpha <= o < 1/255 everywhere (power <= 0)
    elif a64 > 0.0 and c64 > 0.0 and det > 0.0 and math.isfinite(det):
        # o exp(-q/2) >= 1/255  <=>  q <= 2 log(255 o); the ellipse q <= k reaches
        # sqrt(k Sigma_xx) along x, with Sigma = conic^-1.
        k = 2.0 * (max(math.log(255.0 * o64), 0.0) + 0.05)
        hx = math.sqrt(k * c64 / det) * 1.01 + 0.01
        hy = math.sqrt(k * a64 / det) * 1.01 + 0.01
        fmx, fmy = float(mx), float(my)
        lo_x, hi_x = fmx - hx - 0.5, fmx + hx - 0.5
        lo_y, hi_y = fmy - hy - 0.5, fmy + hy - 0.5
        if math.isfinite(lo_x) and math.isfinite(hi_x) and math.isfinite(lo_y) and math.isfinite(hi_y):
            x0 = int(max(math.ceil(lo_x), -1.0))
            x1 = int(min(math.floor(hi_x), float(width)))
            y0 = int(max(math.ceil(lo_y), -1.0))
            y1 = int(min(math.floor(hi_y), float(height)))
    return x0, y0, x1, y1


# ---- atomics and a vectorisable float32 exp ----------------------------------------------------


@intrinsic
def _prefetch_row(typingctx, arr, row):
    """Hint the CPU to load row `row` of the 1-D or 2-D array `arr` into cache (llvm.prefetch;
    no bounds check, no effect on results). The compositing reads one record per intersection in
    an order set by depth, i.e. scattered: asking for the next one early hides the miss."""
    if not (isinstance(arr, types.Array) and arr.ndim in (1, 2) and isinstance(row, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        index = [idx] + [context.get_constant(types.intp, 0)] * (aryty.ndim - 1)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, index)
        i32 = ir.IntType(32)
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])  # read, keep in all cache levels, data
        return context.get_dummy_value()

    return types.void(arr, row), codegen


@intrinsic
def _fetch_add_one(typingctx, counter, index):
    """Atomically `old = counter[index]; counter[index] += 1; return old` (int64 array)."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [idx])
        return builder.atomic_rmw("add", ptr, context.get_constant(types.int64, 1), "monotonic")

    return types.int64(counter, index), codegen


@intrinsic
def _ldexp_f32(typingctx, p, n):
    """p * 2**n for float32 p and an integral float32 n in [-126, 127] (exponent-field add)."""
    if p != types.float32 or n != types.float32:
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        ni = builder.fptosi(args[1], i32)
        bits = builder.shl(builder.add(ni, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.fmul(args[0], builder.bitcast(bits, ir.FloatType()))

    return types.float32(types.float32, types.float32), codegen


_F32 = np.float32
_EXP_LO, _EXP_HI = _F32(-87.0), _F32(88.0)
_LOG2E = _F32(1.4426950408889634)
_LN2_HI = _F32(0.693145751953125)  # ln 2 split in two (Cody-Waite): n * _LN2_HI is exact
_LN2_LO = _F32(1.4286067653301870e-06)
_HALF32, _ONE32 = _F32(0.5), _F32(1.0)
_E2, _E3, _E4, _E5, _E6, _E7 = (_F32(1.0 / math.factorial(k)) for k in range(2, 8))


@njit(inline="always", **_JIT)
def _exp_f32(x):
    """exp(x) in float32 without a library call (so loops containing it vectorise).

    exp(x) = 2^n e^r with n = round(x / ln 2), |r| <= ln(2)/2, e^r by its Taylor series to
    degree 7 (truncation error < 6e-9 relative): within ~2 ulp of the correctly rounded value.
    """
    x = min(max(x, _EXP_LO), _EXP_HI)
    n = np.floor(x * _LOG2E + _HALF32)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = _ONE32 + r * (_ONE32 + r * (_E2 + r * (_E3 + r * (_E4 + r * (_E5 + r * (_E6 + r * _E7))))))
    return _ldexp_f32(p, n)


def _fexp(x):  # pragma: no cover - replaced by the overload below inside jitted code
    return math.exp(x)


@overload(_fexp, inline="always", jit_options=dict(cache=True))
def _fexp_impl(x):
    if x == types.float32:
        return lambda x: _exp_f32(x)
    return lambda x: math.exp(x)

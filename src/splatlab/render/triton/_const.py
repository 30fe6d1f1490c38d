"""Module constants that Triton kernels can read, compiled or interpreted."""

from __future__ import annotations

import os

import triton.language as tl

try:  # read when the kernels are defined, as triton.jit reads it
    from triton import knobs as _knobs

    INTERPRETED = bool(_knobs.runtime.interpret)
except (ImportError, AttributeError):  # pragma: no cover - older Triton
    INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def const(value):
    """A constant for kernels: tl.constexpr when compiled (kernels may only read constexpr
    globals); a plain number in the interpreter, where `constexpr * tensor` would stay wrapped
    as a constexpr that tl functions refuse."""
    return value if INTERPRETED else tl.constexpr(value)

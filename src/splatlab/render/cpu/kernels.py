"""Every compiled kernel of the CPU backend, by name, from the stage modules that define them.

    project.py     project_forward, project_backward           (stages 1-3)
    binning.py     sort_visible_by_depth, intersection_offsets,  (stage 4)
                   bin_intersections
    composite.py   prepare_splats, composite_forward, composite_backward,
                   finish_forward, finish_backward, reduce_slots (stage 5)
    _common.py     the inline helpers they share

One namespace for tools that inspect the dispatchers (e.g. the on-disk cache test).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from numba.core.dispatcher import Dispatcher

from ...io.atomic import atomic_write
from .binning import bin_intersections, intersection_offsets, sort_visible_by_depth
from .composite import (
    SLOT_FEATURES, composite_backward, composite_forward, finish_backward, finish_forward, prepare_splats,
    reduce_slots,
)  # fmt: skip
from .project import project_backward, project_forward

__all__ = [
    "SLOT_FEATURES", "project_forward", "project_backward", "sort_visible_by_depth", "intersection_offsets",
    "bin_intersections", "prepare_splats", "composite_forward", "composite_backward", "finish_forward",
    "finish_backward", "reduce_slots",
]  # fmt: skip


def _dispatchers():
    """Every compiled function of the stage modules, helpers included (each is cached on its own)."""
    from . import _common, binning, composite, project

    found = []
    for module in (project, binning, composite, _common):
        found += [obj for obj in vars(module).values() if isinstance(obj, Dispatcher) and obj not in found]
    return found


def invalidate_stale_cache() -> bool:
    """Empty the on-disk kernel cache when _common.py changed since the cache was written.

    Numba keys a cached kernel on the stamp of the file that defines it only; the helpers in
    _common.py are compiled into kernels of the other files, so an edit there would otherwise
    load stale machine code. A digest of _common.py, kept next to the cache, catches that
    (edits to a stage module are caught by Numba itself). Returns True when the cache was
    emptied. Best effort: a read-only cache is left as it is.
    """
    try:
        digest = hashlib.sha256((Path(__file__).parent / "_common.py").read_bytes()).hexdigest()
        dispatchers = _dispatchers()
        stamp = Path(dispatchers[0]._cache._cache_path) / "splatlab_cpu_common.sha256"
        if stamp.exists() and stamp.read_text().strip() == digest:
            return False
        for d in dispatchers:
            d._cache.flush()  # writes an empty index: the next call compiles and saves afresh
        stamp.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(stamp, "w", fsync=False) as f:
            f.write(digest)
        return True
    except (OSError, AttributeError, IndexError):
        return False

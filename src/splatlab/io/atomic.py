"""Atomic file writing: a reader never sees a half-written model or checkpoint.

The content goes to a temporary file in the destination's own directory (so that the final
rename stays on one file system), is flushed and fsync'ed, and then moved over the destination
with `os.replace`, which is atomic on POSIX and Windows. If anything fails before that, the
temporary file is removed and the old destination, if any, is left exactly as it was.

Two forms:

    with atomic_write("model.ply") as f:          # yields an open FILE OBJECT (binary by default)
        f.write(data)

    with atomic_write_path("frame.png") as tmp:   # yields a temporary PATH (same suffix as the target),
        image.save(tmp)                           # for libraries that insist on opening the file themselves

`torch.save(obj, f)`, `plyfile.PlyData.write(f)`, `numpy.save(f, a)` and `json.dump(obj, f)` (text
mode) all accept the file object.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_write", "atomic_write_path"]


def _current_umask() -> int:
    # os.umask can only be read by setting it; do it once, at import, before any threads write files.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _temp_in_same_dir(target: Path) -> tuple[int, Path]:
    parent = target.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: directory {parent} does not exist")
    # Hidden, recognisable name that keeps the target's suffix (some writers pick a format from it).
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}")
    return fd, Path(tmp)


def _final_mode(target: Path) -> int:
    """Permissions the file should end with: the old file's, else what open() would have given."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_UMASK


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: Path, target: Path, mode_bits: int) -> None:
    try:
        os.chmod(tmp, mode_bits)
    except OSError:
        pass  # e.g. file systems without POSIX permissions
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def _discard(tmp: Path) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None, fsync: bool = True
) -> Iterator[IO]:
    """Context manager yielding an open file object; on a clean exit its content replaces `path`.

    mode: "wb" (default) or "w" (text; `encoding` defaults to UTF-8). On an exception inside the
    block (or KeyboardInterrupt), the temporary file is deleted, `path` is left untouched and the
    exception propagates. `fsync=False` skips the flush to disk (faster, still atomic w.r.t. readers,
    but not crash-safe).
    """
    if not mode.startswith("w") or any(c in mode for c in "arx+"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb' (write from scratch), got {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    target = Path(os.fspath(path))
    mode_bits = _final_mode(target)
    fd, tmp = _temp_in_same_dir(target)
    try:
        f = os.fdopen(fd, mode, encoding=encoding) if "b" not in mode else os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        _discard(tmp)
        raise
    try:
        with f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        _commit(tmp, target, mode_bits)
    except BaseException:
        _discard(tmp)
        raise


@contextlib.contextmanager
def atomic_write_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Context manager yielding a temporary PATH (same directory and suffix as `path`).

    Write the file there yourself (any library, any mode); on a clean exit it is fsync'ed and moved
    over `path`. On an exception, or if nothing was written to the path, `path` is left untouched.
    """
    target = Path(os.fspath(path))
    mode_bits = _final_mode(target)
    fd, tmp = _temp_in_same_dir(target)
    os.close(fd)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file {tmp} for {target}")
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _commit(tmp, target, mode_bits)
    except BaseException:
        _discard(tmp)
        raise

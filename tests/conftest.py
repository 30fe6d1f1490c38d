"""Test-wide settings."""

import os
import tempfile


def pytest_configure(config):
    """Datasets' derived files (undistorted images, SfM) go to a temporary per-user cache for
    the whole session, subprocesses included, never into ~/.cache of the machine."""
    os.environ.setdefault("SPLATLAB_CACHE", tempfile.mkdtemp(prefix="splatlab-test-cache-"))

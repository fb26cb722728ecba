"""The user cache folder: downloaded datasets and compiled kernels live below it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$CNNLAB_CACHE``, else ``$XDG_CACHE_HOME/cnnlab``, else ``~/.cache/cnnlab``."""
    explicit = os.environ.get("CNNLAB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "cnnlab"

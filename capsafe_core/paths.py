"""Where capsafe's files are: the dashboard (``app.py``, ``pages/``) and ``data/`` sit at the top of a
checkout, and travel inside an installed wheel as ``capsafe_core/_bundle/`` (copied there at build
time by ``setup.py``), so an installed capsafe serves the dashboard and reads its benchmarks the same way."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
BUNDLE = PACKAGE / "_bundle"


def root() -> Path:
    """The folder holding ``app.py``, ``pages/`` and ``data/``: the checkout, else the installed bundle."""
    checkout = PACKAGE.parent
    if (checkout / "app.py").is_file() and (checkout / "pages").is_dir() and (checkout / "data").is_dir():
        return checkout
    return BUNDLE


def data_dir() -> Path:
    """``data/`` (benchmarks, judge prompts, weights, the demo archive), or ``$CAPSAFE_DATA``."""
    env = os.environ.get("CAPSAFE_DATA")
    return Path(env) if env else root() / "data"


def app_path() -> Path:
    """The dashboard's entry script."""
    return root() / "app.py"


def cache_dir() -> Path:
    """Per-user cache (``$XDG_CACHE_HOME/capsafe``, else ``~/.cache/capsafe``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "capsafe"

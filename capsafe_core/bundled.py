"""The bundled demo database: kept in git gzip-compressed (``data/demo.db.gz``) and decompressed to
``data/demo.db`` (not in git) on first use, or when the archive is newer than the copy."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from capsafe_core import paths
from capsafe_core.paths import data_dir


def demo_archive() -> Path:
    return data_dir() / "demo.db.gz"


def demo_db() -> Path:
    """Path of the demo database, decompressing the archive first where needed (atomically): next to the
    archive in a checkout, in the user's cache where that folder cannot be written (an installed wheel)."""
    archive = demo_archive()
    out = archive.with_suffix("")
    if not os.access(archive.parent, os.W_OK):
        out = paths.cache_dir() / "demo.db"
        out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and (not archive.exists() or out.stat().st_mtime >= archive.stat().st_mtime):
        return out
    if not archive.exists():
        from capsafe_core.errors import NotFound

        raise NotFound(f"No demo database at {archive}; restore it with: git checkout -- {archive.name}")
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")  # two first sessions at once each write their own
    with gzip.open(archive, "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(tmp, out)
    return out


def build_archive() -> Path:
    """A demo build in progress, kept in git between sessions (``capsafe demo build`` resumes from it)."""
    return data_dir() / "demo-build.db.gz"


def write_demo_archive(db: Path, archive: Path | None = None) -> Path:
    """Compress ``db`` into the bundled archive (what ``capsafe demo build`` ships), or into ``archive``."""
    archive = archive or demo_archive()
    tmp = archive.with_name(archive.name + ".tmp")
    with (
        open(db, "rb") as src,
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename=archive.stem, mode="wb", compresslevel=9, fileobj=raw, mtime=0) as dst,
    ):
        shutil.copyfileobj(src, dst)
    os.replace(tmp, archive)
    return archive


def read_archive(archive: Path, out: Path) -> Path:
    """Decompress ``archive`` to ``out`` (atomically)."""
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    with gzip.open(archive, "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(tmp, out)
    return out

"""``capsafe export``: the store's joined rows (``store.export.wide_frame``) to CSV, Parquet or JSONL.

The file imports back with ``capsafe import table`` and the matching ``--map judge:``/``human:``
options; nested values were stored as JSON text and come back as the same text.
"""

from __future__ import annotations

import os
from pathlib import Path

from capsafe_core.errors import BadInput
from capsafe_core.store import Store
from capsafe_core.store.export import wide_frame

FORMATS = (".csv", ".parquet", ".jsonl")


def check_output(path: str | Path, formats: tuple[str, ...] = FORMATS) -> Path:
    """An output path whose folder exists and can be written, with a known suffix."""
    p = Path(path)
    if p.suffix.lower() not in formats:
        raise BadInput(f"Unsupported export format '{p.suffix}'; name the output {', '.join(formats)}")
    folder = p.parent
    if not folder.is_dir():
        raise BadInput(f"No folder {folder} for {p.name}; create it first (mkdir -p {folder})")
    if p.is_dir():
        raise BadInput(f"{p} is a folder; name an output file")
    if not os.access(folder, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise BadInput(f"Cannot write {p}: no write permission; choose another output path")
    return p


def export(store: Store, path: str | Path, *, experiment: str | None = None, benchmark: str | None = None) -> int:
    """Write the wide frame to ``path`` (format from its suffix); returns the row count."""
    p = check_output(path)
    suffix = p.suffix.lower()
    frame = wide_frame(store, experiment=experiment, benchmark=benchmark).drop("generation_id", strict=False)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        if suffix == ".csv":
            frame.write_csv(tmp)
        elif suffix == ".parquet":
            frame.write_parquet(tmp)
        else:
            frame.write_ndjson(tmp)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return frame.height

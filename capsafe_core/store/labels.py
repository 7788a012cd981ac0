"""Human labels written from the Label page: one row per verdict (history), undo by its author only."""

from __future__ import annotations

from capsafe_core.store.db import Store, now


def add_label(
    store: Store,
    generation_id: int,
    *,
    annotator: str,
    label: str,
    coherent: bool | None,
    note: str | None,
    source: str | None = None,
) -> int:
    """Store one human label in its own transaction; returns its row id. ``source``: the queue it came
    from (``flagged``, ``audit``), which decides whether it may feed estimates."""
    with store.transaction():
        cur = store.conn.execute(
            "INSERT INTO human_labels (generation_id, annotator, label, coherent, note, created_at, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (generation_id, annotator, label, None if coherent is None else int(coherent), note or None, now(), source),
        )
    return int(cur.lastrowid or 0)


def delete_label(store: Store, label_id: int, *, annotator: str) -> int | None:
    """Delete one of ``annotator``'s labels; returns its generation id (``None``: not theirs, or gone)."""
    with store.transaction():
        row = store.conn.execute(
            "SELECT generation_id FROM human_labels WHERE id = ? AND annotator = ?", (label_id, annotator)
        ).fetchone()
        if row is None:
            return None
        store.conn.execute("DELETE FROM human_labels WHERE id = ?", (label_id,))
    return int(row[0])

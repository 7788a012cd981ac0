"""Large reads: SQLite rows straight into Arrow (connectorx), and the judgments of chosen evaluators
read without their labels' text (``judgments``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from capsafe_core.store.db import Store


def frame(store: Store, sql: str, params: Sequence[object], schema: Mapping[str, Any]) -> pl.DataFrame:
    """Rows of ``sql`` through sqlite3, as a frame of ``schema``."""
    rows = store.conn.execute(sql, params).fetchall()
    return pl.DataFrame(rows, schema=schema, orient="row")


def arrow_frame(store: Store, sql: str, schema: Mapping[str, Any]) -> pl.DataFrame:
    """A large read (no parameters): straight into Arrow with connectorx (a dependency; about 4× faster
    than Python rows on millions of judgments, see ``bench/dashboard.py``), else through sqlite3."""
    try:
        import connectorx  # noqa: F401
    except ImportError:
        return frame(store, sql, [], schema)
    from urllib.parse import quote

    uri = "sqlite://" + quote(str(store.path.resolve()))
    try:
        out = pl.read_database_uri(sql, uri, engine="connectorx")
    except Exception:  # e.g. a WAL database in a read-only folder, which only sqlite3's immutable open reads
        return frame(store, sql, [], schema)
    out.columns = list(schema)
    return out.select(pl.col(c).cast(t) for c, t in schema.items()) if out.height else pl.DataFrame(schema=schema)


MANY_LABELS = 64  # an evaluator with more distinct labels is read in one query, labels included
JUDGED = {"generation_id": pl.Int64, "evaluator_id": pl.Int64, "label": pl.Utf8, "score": pl.Float64}


def _labels(store: Store, evaluator_id: int) -> list[str] | None:
    """The evaluator's distinct labels in the covering index's order, one index seek each; None where
    there are more than ``MANY_LABELS``."""
    found: list[str] = []
    sql = "SELECT min(label) FROM judgments WHERE evaluator_id = ?"
    label = store.conn.execute(sql, [evaluator_id]).fetchone()[0]
    while label is not None and len(found) <= MANY_LABELS:
        found.append(label)
        label = store.conn.execute(sql + " AND label > ?", [evaluator_id, label]).fetchone()[0]
    return found if label is None else None


def _text(value: str) -> str:
    """``value`` as an SQL literal of its exact UTF-8 bytes (labels are data: never spliced as text)."""
    return f"CAST(X'{value.encode().hex()}' AS TEXT)"


def judgments(store: Store, evaluator_ids: Sequence[int]) -> pl.DataFrame:
    """generation_id, evaluator_id, label (categorical), score of these evaluators' judgments, in the
    covering index's order (evaluator, label, score). Read one (evaluator, label) at a time without the
    label's text, which is attached as a constant: converting millions of label strings was ~60% of
    the read."""
    parts = []
    for ev in sorted({int(i) for i in evaluator_ids}):
        labels = _labels(store, ev)
        if labels is None:
            sql = f"SELECT generation_id, evaluator_id, label, score FROM judgments WHERE evaluator_id = {ev}"
            parts.append(arrow_frame(store, sql, JUDGED).with_columns(pl.col("label").cast(pl.Categorical)))
            continue
        for label in labels:
            sql = f"SELECT generation_id, score FROM judgments WHERE evaluator_id = {ev} AND label = {_text(label)}"
            one = arrow_frame(store, sql, {"generation_id": pl.Int64, "score": pl.Float64})
            parts.append(
                one.select(
                    "generation_id",
                    pl.lit(ev, pl.Int64).alias("evaluator_id"),
                    pl.lit(label, pl.Utf8).cast(pl.Categorical).alias("label"),
                    "score",
                )
            )
    if not parts:
        return pl.DataFrame(schema=JUDGED).with_columns(pl.col("label").cast(pl.Categorical))
    return pl.concat(parts)

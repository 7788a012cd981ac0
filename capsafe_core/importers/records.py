"""The common end of every importer: normalised records in, one atomic, idempotent write out.

An importer turns its source into three polars frames and calls :func:`write_records`:

- ``generations``: one row per response, columns ``row`` (source row number, for errors),
  ``experiment, mitigation, step, model, benchmark, prompt_id, prompt, category, reference,
  response, sample, decoding`` and optionally ``n_tokens, finish_reason``;
- ``judgments``: ``row, evaluator, kind, version, label, score, explanation``;
- ``humans``: ``row, annotator, label, coherent, note``.

Everything is validated before the first write and written in one transaction, so bad input
leaves the database row-for-row as it was, and re-importing a file changes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from capsafe_core import benchmarks
from capsafe_core.errors import BadInput
from capsafe_core.store import Store, now

GEN_COLUMNS = {
    "row": pl.Int64,
    "experiment": pl.Utf8,
    "mitigation": pl.Utf8,
    "step": pl.Int64,
    "model": pl.Utf8,
    "benchmark": pl.Utf8,
    "prompt_id": pl.Utf8,
    "prompt": pl.Utf8,
    "category": pl.Utf8,
    "reference": pl.Utf8,
    "response": pl.Utf8,
    "sample": pl.Int64,
    "decoding": pl.Utf8,
    "n_tokens": pl.Int64,
    "finish_reason": pl.Utf8,
}
JUDGMENT_COLUMNS = {
    "row": pl.Int64,
    "evaluator": pl.Utf8,
    "kind": pl.Utf8,
    "version": pl.Utf8,
    "label": pl.Utf8,
    "score": pl.Float64,
    "explanation": pl.Utf8,
}
HUMAN_COLUMNS = {"row": pl.Int64, "annotator": pl.Utf8, "label": pl.Utf8, "coherent": pl.Int64, "note": pl.Utf8}


@dataclass
class ImportResult:
    """What an import changed: rows added per table (0 everywhere on a repeat)."""

    source: str
    rows: int
    added: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was left out, and why

    def summary(self) -> str:
        parts = ", ".join(f"{v} {k}" for k, v in self.added.items())
        return "\n".join([f"Imported {self.rows} rows from {self.source}: added {parts}", *self.notes])


def conform(frame: pl.DataFrame, schema: dict[str, Any]) -> pl.DataFrame:
    """Add missing optional columns as nulls and cast to the expected types."""
    if frame.height == 0:
        return pl.DataFrame(schema=schema)
    cols = []
    for name, dtype in schema.items():
        if name in frame.columns:
            cols.append(pl.col(name).cast(dtype))
        else:
            cols.append(pl.lit(None, dtype=dtype).alias(name))
    return frame.select(cols)


def text_id(text: str) -> str:
    """ext_id for a prompt that has none: a hash of its normalised text."""
    return "h-" + hashlib.sha1(benchmarks.normalize_text(text).encode()).hexdigest()[:16]


def _first_null(frame: pl.DataFrame, column: str) -> int | None:
    nulls = frame.filter(pl.col(column).is_null())
    return int(nulls["row"][0]) if nulls.height else None


def _validate(gens: pl.DataFrame, *, field_hint: dict[str, str]) -> None:
    for col in ("experiment", "mitigation", "step", "benchmark", "response"):
        r = _first_null(gens, col)
        if r is not None:
            raise BadInput(f"Row {r} has no {col}; {field_hint.get(col, f'map a column to {col}')}")
    missing_prompt = gens.filter(pl.col("prompt").is_null() & pl.col("prompt_id").is_null())
    if missing_prompt.height:
        raise BadInput(
            f"Row {missing_prompt['row'][0]} has neither prompt text nor prompt_id; "
            f"{field_hint.get('prompt', 'map a column to prompt')}"
        )
    key = ["experiment", "mitigation", "step", "benchmark", "prompt_key", "sample", "decoding"]
    dup = gens.filter(pl.struct(key).is_duplicated())
    if dup.height:
        rows = dup.sort("row")["row"].head(2).to_list()
        raise BadInput(
            f"Rows {rows[0]} and {rows[1]} are the same generation (same checkpoint, prompt and sample); "
            f"map a column to sample, or give them distinct experiment/mitigation/step"
        )


def _resolve_prompts(store: Store, gens: pl.DataFrame, *, benchmark_kind: str | dict[str, str]) -> pl.DataFrame:
    """Add ``prompt_db_id``: shipped benchmarks match by ext_id or text, others are created."""
    shipped = benchmarks.registry()
    out = []
    for (bench,), part in gens.group_by(["benchmark"], maintain_order=True):
        bench = str(bench)
        if bench in shipped:
            bid, ids = benchmarks.ensure_in_store(store, bench)
            by_text = {benchmarks.normalize_text(p.text): p.ext_id for p in benchmarks.load(bench)}
            ext = []
            for row, pid, text in part.select("row", "prompt_id", "prompt").iter_rows():
                if pid is not None and pid in ids:
                    ext.append(pid)
                    continue
                match = by_text.get(benchmarks.normalize_text(text)) if text is not None else None
                if match is None:
                    what = f"prompt_id '{pid}'" if pid is not None else "its prompt text"
                    raise BadInput(
                        f"Row {row}: {what} is not in the shipped benchmark '{bench}'; "
                        f"set another benchmark name (--set benchmark=NAME) to import it as a new benchmark"
                    )
                ext.append(match)
            part = part.with_columns(pl.Series("ext_id", ext, dtype=pl.Utf8))
        else:
            existing = store.conn.execute("SELECT kind FROM benchmarks WHERE name = ?", (bench,)).fetchone()
            new_kind = benchmark_kind if isinstance(benchmark_kind, str) else benchmark_kind.get(bench, "safety")
            kind = existing[0] if existing else new_kind
            bid = store.upsert_benchmark(bench, kind=kind, source="import")
            part = part.with_columns(pl.col("prompt_key").alias("ext_id"))
            texts = part.filter(pl.col("prompt").is_null())
            if texts.height:
                raise BadInput(
                    f"Row {texts['row'][0]} has a prompt_id but no prompt text, and '{bench}' is not a shipped "
                    f"benchmark; map a column to prompt"
                )
            prompts = part.unique("ext_id", keep="first", maintain_order=True).select(
                "ext_id", "prompt", "category", "reference", pl.lit("{}").alias("meta")
            )
            ids = store.upsert_prompts(bid, prompts.iter_rows())
        id_frame = pl.DataFrame(
            {"ext_id": list(ids), "prompt_db_id": list(ids.values())},
            schema={"ext_id": pl.Utf8, "prompt_db_id": pl.Int64},
        )
        out.append(part.join(id_frame, on="ext_id", how="left"))
    return pl.concat(out, how="vertical_relaxed")


def write_records(
    store: Store,
    gens: pl.DataFrame,
    judgments: pl.DataFrame | None = None,
    humans: pl.DataFrame | None = None,
    *,
    source: str,
    benchmark_kind: str | dict[str, str] = "safety",
    experiment_fields: dict[str, Any] | None = None,
    field_hint: dict[str, str] | None = None,
) -> ImportResult:
    """Validate and write normalised records in one transaction (see the module docstring).

    ``benchmark_kind`` is the kind of a benchmark the import creates, or one per benchmark name.
    """
    gens = conform(gens, GEN_COLUMNS).with_columns(
        pl.col("sample").fill_null(0),
        pl.col("decoding").fill_null("{}"),
    )
    gens = gens.with_columns(
        pl.when(pl.col("prompt_id").is_not_null())
        .then(pl.col("prompt_id"))
        .otherwise(pl.col("prompt").map_elements(text_id, return_dtype=pl.Utf8))
        .alias("prompt_key")
    )
    _validate(gens, field_hint=field_hint or {})
    judgments = conform(judgments if judgments is not None else pl.DataFrame(), JUDGMENT_COLUMNS)
    humans = conform(humans if humans is not None else pl.DataFrame(), HUMAN_COLUMNS)
    before = store.counts()
    stamp = now()
    with store.transaction():
        exp_ids = {
            name: store.upsert_experiment(name, **(experiment_fields or {}))
            for name in gens["experiment"].unique(maintain_order=True).to_list()
        }
        ck = gens.select("experiment", "mitigation", "step", "model").unique(
            ["experiment", "mitigation", "step"], keep="first", maintain_order=True
        )
        ck_rows = [
            (e, m, s, store.upsert_checkpoint(exp_ids[e], m, s, model_ref=model)) for e, m, s, model in ck.iter_rows()
        ]
        ck_frame = pl.DataFrame(ck_rows, schema=["experiment", "mitigation", "step", "checkpoint_id"], orient="row")
        gens = gens.join(ck_frame, on=["experiment", "mitigation", "step"], how="left")
        gens = _resolve_prompts(store, gens, benchmark_kind=benchmark_kind)
        store.upsert_generations(
            gens.select(
                "checkpoint_id",
                "prompt_db_id",
                "sample",
                "decoding",
                "response",
                "n_tokens",
                "finish_reason",
                pl.lit(stamp).alias("created_at"),
            ).iter_rows()
        )
        gen_ids = _generation_ids(store, gens)
        gens = gens.join(gen_ids, on=["checkpoint_id", "prompt_db_id", "sample", "decoding"], how="left")
        row_to_gen = gens.select("row", "generation_id")
        if judgments.height:
            ev = judgments.select("evaluator", "kind", "version").unique(["evaluator", "version"], keep="first")
            ev_ids = pl.DataFrame(
                [(n, v, store.upsert_evaluator(n, kind=k, version=v)) for n, k, v in ev.iter_rows()],
                schema=["evaluator", "version", "evaluator_id"],
                orient="row",
            )
            j = judgments.join(row_to_gen, on="row", how="inner").join(ev_ids, on=["evaluator", "version"])
            store.upsert_judgments(
                j.select(
                    "generation_id", "evaluator_id", "label", "score", "explanation", pl.lit(stamp).alias("created_at")
                ).iter_rows()
            )
        if humans.height:
            h = humans.join(row_to_gen, on="row", how="inner")
            store.add_human_labels(
                h.select(
                    "generation_id", "annotator", "label", "coherent", "note", pl.lit(stamp).alias("created_at")
                ).iter_rows()
            )
    after = store.counts()
    added = {k: after[k] - before[k] for k in ("checkpoints", "prompts", "generations", "judgments", "human_labels")}
    return ImportResult(source=source, rows=gens.height, added=added)


def _generation_ids(store: Store, gens: pl.DataFrame) -> pl.DataFrame:
    frames = []
    for ck_id, decoding in gens.select("checkpoint_id", "decoding").unique().iter_rows():
        ids = store.generation_ids(ck_id, decoding)
        frames.append(
            pl.DataFrame(
                {
                    "checkpoint_id": [ck_id] * len(ids),
                    "decoding": [decoding] * len(ids),
                    "prompt_db_id": [k[0] for k in ids],
                    "sample": [k[1] for k in ids],
                    "generation_id": list(ids.values()),
                },
                schema={
                    "checkpoint_id": pl.Int64,
                    "decoding": pl.Utf8,
                    "prompt_db_id": pl.Int64,
                    "sample": pl.Int64,
                    "generation_id": pl.Int64,
                },
            )
        )
    return pl.concat(frames)

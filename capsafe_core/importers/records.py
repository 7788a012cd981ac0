"""The common end of every importer: normalised records in, one atomic, idempotent write out.

An importer turns its source into three polars frames and calls :func:`write_records`:

- ``generations``: one row per response, columns ``row`` (source row number, for errors),
  ``experiment, mitigation, seed, step, model, benchmark, prompt_id, prompt, category, reference,
  response, sample, decoding`` and optionally ``n_tokens, finish_reason``;
- ``judgments``: ``row, evaluator, kind, version, label, score, explanation``;
- ``humans``: ``row, annotator, label, coherent, note``.

Everything is validated and written in one transaction, so bad input leaves the database
row-for-row as it was, and re-importing a file changes nothing. Nothing stored is overwritten
silently: a generation or verdict the database holds differently refuses the import (or, with
``replace``, replaces the generations and drops their old verdicts and labels, saying how many).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from capsafe_core import benchmarks
from capsafe_core.errors import BadInput
from capsafe_core.store import Store, now
from capsafe_core.store import imports as store_imports
from capsafe_core.store.imports import Conflict, Written

GEN_COLUMNS = {
    "row": pl.Int64,
    "experiment": pl.Utf8,
    "mitigation": pl.Utf8,
    "seed": pl.Int64,
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


class ImportConflict(BadInput):
    """The import disagrees with what the database holds; nothing was written."""


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


def _check_duplicates(gens: pl.DataFrame) -> None:
    """Two rows for one generation (same checkpoint, prompt, decoding and sample), after prompts are
    resolved: a prompt given by id in one row and by text in another is the same prompt."""
    key = ["checkpoint_id", "prompt_db_id", "decoding", "sample"]
    dup = gens.filter(pl.struct(key).is_duplicated())
    if dup.height:
        a, b = dup.sort("row").group_by(key, maintain_order=True).agg("row")["row"][0].head(2).to_list()
        raise BadInput(
            f"Rows {a} and {b} are the same generation (same checkpoint, prompt and sample); "
            f"map a column to sample, or give them distinct experiment/mitigation/seed/step"
        )


def _start(text: str, n: int = 60) -> str:
    one = " ".join(str(text).split())
    return repr(one[:n] + ("…" if len(one) > n else ""))


def _refuse(conflicts: tuple[Conflict, ...], fix: str) -> ImportConflict:
    c = conflicts[0]
    more = f" (and {len(conflicts) - 1} more rows)" if len(conflicts) > 1 else ""
    return ImportConflict(
        f"Row {c.row}{more}: the database holds another {c.what} (stored {_start(c.stored)}, "
        f"new {_start(c.new)}); nothing was imported. {fix}"
    )


GENERATION_FIX = (
    "If this is another run or model, import it under its own --experiment/--mitigation/--seed/--step; if it is "
    "another sample of the same prompt, map a sample column; to replace the stored responses (their verdicts "
    "and labels are dropped), pass --replace"
)


def _text_matches(store: Store, bid: int, part: pl.DataFrame) -> dict[str, str]:
    """Normalised prompt text → ext_id of a benchmark's prompts with an id (stored, or in this file),
    so that a row giving only the text of such a prompt resolves to it."""
    out: dict[str, str] = {}
    for ext, (_, text) in store_imports.prompt_texts(store, bid).items():
        out.setdefault(benchmarks.normalize_text(text), ext)
    ided = part.filter(pl.col("prompt_id").is_not_null()).select("prompt_id", "prompt").unique(maintain_order=True)
    for pid, text in ided.iter_rows():
        if text is not None:
            out.setdefault(benchmarks.normalize_text(text), pid)
    return out


def _shipped_ext_ids(
    store: Store, bench: str, part: pl.DataFrame, added: dict[str, int]
) -> tuple[pl.DataFrame, dict[str, int]]:
    before = store_imports.count_prompts(store, bench)
    _, ids = benchmarks.ensure_in_store(store, bench)
    added["prompts"] += len(ids) - before
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
    return part.with_columns(pl.Series("ext_id", ext, dtype=pl.Utf8)), ids


def _own_ext_ids(
    store: Store, bench: str, part: pl.DataFrame, kind: str, added: dict[str, int]
) -> tuple[pl.DataFrame, dict[str, int]]:
    bid = store.upsert_benchmark(bench, kind=store_imports.benchmark_kind(store, bench) or kind, source="import")
    texts = part.filter(pl.col("prompt").is_null())
    if texts.height:
        raise BadInput(
            f"Row {texts['row'][0]} has a prompt_id but no prompt text, and '{bench}' is not a shipped "
            f"benchmark; map a column to prompt"
        )
    by_text = _text_matches(store, bid, part)
    texts_only = part.filter(pl.col("prompt_id").is_null())["prompt"].unique().to_list()
    by_prompt = {t: by_text.get(benchmarks.normalize_text(t)) or text_id(t) for t in texts_only}
    part = part.with_columns(
        pl.coalesce(pl.col("prompt_id"), pl.col("prompt").replace_strict(by_prompt, default=None)).alias("ext_id")
    )
    pairs = part.select("ext_id", "prompt").unique()
    pairs = pairs.with_columns(pl.Series("norm", [benchmarks.normalize_text(t) for t in pairs["prompt"]]))
    twice = pairs.group_by("ext_id").agg(pl.col("norm").n_unique().alias("n")).filter(pl.col("n") > 1)
    clash = (
        part.join(twice.select("ext_id"), on="ext_id", how="semi")
        .group_by("ext_id")
        .agg(pl.col("row").sort())
        .sort(pl.col("row").list.first())
    )
    if clash.height:
        rows = clash["row"][0].to_list()
        raise BadInput(
            f"Rows {rows[0]} and {rows[1]} give prompt_id '{clash['ext_id'][0]}' two different texts; "
            f"fix the prompt_id column"
        )
    prompts = part.unique("ext_id", keep="first", maintain_order=True).select(
        "row", "ext_id", "prompt", "category", "reference"
    )
    ids, written = store_imports.write_prompts(store, bid, prompts, same=benchmarks.normalize_text)
    if written.conflicts:
        raise _refuse(
            written.conflicts,
            "Prompt ids must keep their text within a benchmark; import it under another benchmark name "
            "(--benchmark/--set benchmark=NAME)",
        )
    added["prompts"] += written.added
    return part, ids


def _resolve_prompts(
    store: Store, gens: pl.DataFrame, *, benchmark_kind: str | dict[str, str], added: dict[str, int]
) -> pl.DataFrame:
    """Add ``prompt_db_id``: shipped benchmarks match by ext_id or text, others are created."""
    shipped = benchmarks.registry()
    out = []
    for (bench,), part in gens.group_by(["benchmark"], maintain_order=True):
        bench = str(bench)
        if bench in shipped:
            part, ids = _shipped_ext_ids(store, bench, part, added)
        else:
            kind = benchmark_kind if isinstance(benchmark_kind, str) else benchmark_kind.get(bench, "safety")
            part, ids = _own_ext_ids(store, bench, part, kind, added)
        id_frame = pl.DataFrame(
            {"ext_id": list(ids), "prompt_db_id": list(ids.values())},
            schema={"ext_id": pl.Utf8, "prompt_db_id": pl.Int64},
        )
        out.append(part.join(id_frame, on="ext_id", how="left"))
    return pl.concat(out, how="vertical_relaxed")


def _checkpoints(store: Store, gens: pl.DataFrame, exp_ids: dict[str, int], added: dict[str, int]) -> pl.DataFrame:
    key = ["experiment", "mitigation", "seed", "step"]
    ck = gens.select(*key, "model").unique(key, keep="first", maintain_order=True)
    rows = []
    for e, m, seed, s, model in ck.iter_rows():
        if store_imports.checkpoint_id(store, exp_ids[e], m, s, seed) is None:
            added["checkpoints"] += 1
        rows.append((e, m, seed, s, store.upsert_checkpoint(exp_ids[e], m, s, seed=seed, model_ref=model)))
    frame = pl.DataFrame(
        rows,
        schema={
            "experiment": pl.Utf8,
            "mitigation": pl.Utf8,
            "seed": pl.Int64,
            "step": pl.Int64,
            "checkpoint_id": pl.Int64,
        },
        orient="row",
    )
    return gens.join(frame, on=key, how="left")


def _write_judgments(
    store: Store, judgments: pl.DataFrame, row_to_gen: pl.DataFrame, stamp: str, *, replace: bool, new: bool
) -> Written:
    ev = judgments.select("evaluator", "kind", "version").unique(["evaluator", "version"], keep="first")
    ev_ids = pl.DataFrame(
        [(n, v, store.upsert_evaluator(n, kind=k, version=v)) for n, k, v in ev.iter_rows()],
        schema={"evaluator": pl.Utf8, "version": pl.Utf8, "evaluator_id": pl.Int64},
        orient="row",
    )
    j = (
        judgments.join(row_to_gen, on="row", how="inner")
        .join(ev_ids, on=["evaluator", "version"])
        .sort("generation_id", "evaluator_id")  # primary-key order: appends, not scattered B-tree inserts
    )
    written = store_imports.write_judgments(store, j, created_at=stamp, replace=replace, new_generations=new)
    if written.conflicts:
        raise _refuse(
            written.conflicts,
            "Import the new verdicts as another evaluator version (--judge-version), or replace the stored "
            "ones with --replace",
        )
    return written


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
    replace: bool = False,
) -> ImportResult:
    """Validate and write normalised records in one transaction (see the module docstring).

    ``benchmark_kind`` is the kind of a benchmark the import creates, or one per benchmark name.
    A generation stored with another response refuses the whole import, unless ``replace``.
    """
    gens = conform(gens, GEN_COLUMNS).with_columns(
        pl.col("sample").fill_null(0),
        pl.col("seed").fill_null(0),
        pl.col("decoding").fill_null("{}"),
    )
    _validate(gens, field_hint=field_hint or {})
    judgments = conform(judgments if judgments is not None else pl.DataFrame(), JUDGMENT_COLUMNS)
    humans = conform(humans if humans is not None else pl.DataFrame(), HUMAN_COLUMNS)
    added = dict.fromkeys(("checkpoints", "prompts", "generations", "judgments", "human_labels"), 0)
    notes: list[str] = []
    stamp = now()
    with store.transaction():
        exp_ids = {
            name: store.upsert_experiment(name, **(experiment_fields or {}))
            for name in gens["experiment"].unique(maintain_order=True).to_list()
        }
        gens = _checkpoints(store, gens, exp_ids, added)
        gens = _resolve_prompts(store, gens, benchmark_kind=benchmark_kind, added=added)
        _check_duplicates(gens)
        written = store_imports.write_generations(store, gens, created_at=stamp, replace=replace)
        if written.conflicts:
            raise _refuse(written.conflicts, GENERATION_FIX)
        added["generations"] = written.added
        if written.replaced:
            notes.append(
                f"Replaced the responses of {written.replaced} generations and dropped their "
                f"{written.judgments_dropped} verdicts and {written.labels_dropped} human labels"
            )
        gen_ids = store_imports.generation_ids(store, gens)
        gens = gens.join(gen_ids, on=["checkpoint_id", "prompt_db_id", "sample", "decoding"], how="left")
        row_to_gen = gens.select("row", "generation_id")
        if judgments.height:
            new = written.added == gens.height  # every generation is new: none has a stored verdict
            jw = _write_judgments(store, judgments, row_to_gen, stamp, replace=replace, new=new)
            added["judgments"] = jw.added
            if jw.replaced:
                notes.append(f"Replaced {jw.replaced} stored verdicts that differed")
        if humans.height:
            h = humans.join(row_to_gen, on="row", how="inner")
            added["human_labels"] = store.add_human_labels(
                h.select(
                    "generation_id", "annotator", "label", "coherent", "note", pl.lit(stamp).alias("created_at")
                ).iter_rows()
            )
    return ImportResult(source=source, rows=gens.height, added=added, notes=notes)

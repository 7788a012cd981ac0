"""Reads for analysis and the dashboard: the store's rows as polars frames.

``verdicts(store, experiment)`` is the long frame most analysis starts from: one row per
judgment, with its checkpoint, benchmark, prompt and evaluator. Names travel as categoricals and
ids as integers, so a few million judgments load in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from capsafe_core.store import bulk
from capsafe_core.store.bulk import frame as _frame
from capsafe_core.store.db import Store


def checkpoints(store: Store, experiment_id: int) -> pl.DataFrame:
    return _frame(
        store,
        "SELECT id, mitigation, seed, step, model_ref FROM checkpoints WHERE experiment_id = ?",
        [experiment_id],
        {
            "checkpoint_id": pl.Int64,
            "mitigation": pl.Utf8,
            "seed": pl.Int64,
            "step": pl.Int64,
            "model_ref": pl.Utf8,
        },
    )


def prompts(store: Store, experiment_id: int) -> pl.DataFrame:
    """Prompts that have a generation in the experiment, with their benchmark."""
    return _frame(
        store,
        """SELECT p.id, b.name, b.kind, p.ext_id, p.category FROM prompts p JOIN benchmarks b ON b.id = p.benchmark_id
           WHERE EXISTS (SELECT 1 FROM generations g JOIN checkpoints c ON c.id = g.checkpoint_id
                         WHERE g.prompt_id = p.id AND c.experiment_id = ?)""",
        [experiment_id],
        {"prompt_id": pl.Int64, "benchmark": pl.Utf8, "bench_kind": pl.Utf8, "ext_id": pl.Utf8, "category": pl.Utf8},
    )


def evaluators(store: Store) -> pl.DataFrame:
    return _frame(
        store,
        "SELECT id, name, kind, version FROM evaluators",
        [],
        {"evaluator_id": pl.Int64, "evaluator": pl.Utf8, "ev_kind": pl.Utf8, "version": pl.Utf8},
    )


def generations(store: Store, experiment_id: int) -> pl.DataFrame:
    """``generation_id, checkpoint_id, prompt_id`` of every generation in the experiment (read once per
    experiment by the dashboard and shared by its per-evaluator reads)."""
    return bulk.arrow_frame(
        store,
        f"""SELECT g.id, g.checkpoint_id, g.prompt_id FROM generations g
            WHERE g.checkpoint_id IN (SELECT id FROM checkpoints WHERE experiment_id = {int(experiment_id)})""",
        {"generation_id": pl.Int64, "checkpoint_id": pl.Int64, "prompt_id": pl.Int64},
    )


def verdicts(
    store: Store,
    experiment: str,
    *,
    pinned: Mapping[str, str] | None = None,
    evaluators: Sequence[str] | None = None,
    benchmarks: Sequence[str] | None = None,
    generations_frame: pl.DataFrame | None = None,
    prompts_frame: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per judgment of the experiment: generation_id, checkpoint_id, mitigation, seed, step, prompt_id,
    benchmark, bench_kind, category, evaluator, ev_kind, label, score.

    Where an evaluator has several versions, the newest (highest id) is used, or the one ``pinned``
    names (evaluator → version, e.g. to compare a changed metric with the version it replaced).
    ``evaluators`` / ``benchmarks`` read only those (a page reads what it shows). The judgments are read
    from their covering index (``bulk.judgments``) and joined, in the index's order, to the experiment's
    generations and prompts (``generations_frame`` / ``prompts_frame`` where the caller already holds
    them). The text columns (``TEXT``) are categorical: 4 bytes a row, compared and grouped as integers.
    """
    exp_id = int(store.experiment_id(experiment))
    ev = evaluators_in_use(store, pinned)
    if evaluators is not None:
        ev = ev.filter(pl.col("evaluator").is_in(list(evaluators)))
    judged = bulk.judgments(store, [int(i) for i in ev["evaluator_id"]])
    gens = generations(store, exp_id) if generations_frame is None else generations_frame
    held = prompts(store, exp_id) if prompts_frame is None else prompts_frame
    if benchmarks is not None:
        held = held.filter(pl.col("benchmark").is_in(list(benchmarks)))
    cat = pl.Categorical
    out = (
        judged.join(gens, on="generation_id", maintain_order="left")
        .join(
            ev.select("evaluator_id", pl.col("evaluator", "ev_kind").cast(cat)),
            on="evaluator_id",
            maintain_order="left",
        )
        .join(
            checkpoints(store, exp_id).select("checkpoint_id", pl.col("mitigation").cast(cat), "seed", "step"),
            on="checkpoint_id",
            maintain_order="left",
        )
        .join(
            held.select("prompt_id", pl.col("benchmark", "bench_kind", "category").cast(cat)),
            on="prompt_id",
            maintain_order="left",
        )
    )
    return out.select(
        "generation_id",
        "checkpoint_id",
        "mitigation",
        "seed",
        "step",
        "prompt_id",
        "benchmark",
        "bench_kind",
        "category",
        "evaluator",
        "ev_kind",
        "label",
        "score",
    )


TEXT = ("mitigation", "benchmark", "bench_kind", "category", "evaluator", "ev_kind", "label")  # categorical columns


def empty_verdicts() -> pl.DataFrame:
    """A verdict frame with no rows (``verdicts``' columns)."""
    cols = {"generation_id": pl.Int64, "checkpoint_id": pl.Int64, "mitigation": pl.Utf8, "seed": pl.Int64}
    cols |= {"step": pl.Int64, "prompt_id": pl.Int64, "benchmark": pl.Utf8, "bench_kind": pl.Utf8}
    cols |= {"category": pl.Utf8, "evaluator": pl.Utf8, "ev_kind": pl.Utf8, "label": pl.Utf8}
    return pl.DataFrame(schema=cols | {"score": pl.Float64}).with_columns(pl.col(*TEXT).cast(pl.Categorical))


def evaluators_in_use(store: Store, pinned: Mapping[str, str] | None = None) -> pl.DataFrame:
    """``evaluator_id, evaluator, ev_kind, version``: the newest version of each evaluator, or the one
    ``pinned`` names."""
    ev = evaluators(store)
    latest = ev.group_by("evaluator").agg(pl.col("evaluator_id").max())
    for name, version in (pinned or {}).items():
        chosen = ev.filter((pl.col("evaluator") == name) & (pl.col("version") == version))
        if chosen.height:
            latest = latest.filter(pl.col("evaluator") != name).vstack(chosen.select("evaluator", "evaluator_id"))
    return ev.join(latest, on=["evaluator", "evaluator_id"], how="semi")


def human_labels(store: Store, experiment: str | None = None, *, latest: bool = True) -> pl.DataFrame:
    """Human labels (the latest per annotator and generation unless ``latest=False``)."""
    where, params = "", list[object]()
    if experiment is not None:
        where = """AND h.generation_id IN (SELECT g.id FROM generations g JOIN checkpoints c
                   ON c.id = g.checkpoint_id WHERE c.experiment_id = ?)"""
        params.append(store.experiment_id(experiment))
    pick = "AND h.id IN (SELECT max(id) FROM human_labels GROUP BY generation_id, annotator)" if latest else ""
    return _frame(
        store,
        "SELECT h.id, h.generation_id, h.annotator, h.label, h.coherent, h.note, h.created_at, h.source "
        "FROM human_labels h "
        f"WHERE 1 {pick} {where} ORDER BY h.id",
        params,
        {
            "label_id": pl.Int64,
            "generation_id": pl.Int64,
            "annotator": pl.Utf8,
            "human_label": pl.Utf8,
            "human_coherent": pl.Int64,
            "note": pl.Utf8,
            "created_at": pl.Utf8,
            "source": pl.Utf8,
        },
    )


def generation_detail(store: Store, generation_id: int) -> dict[str, object] | None:
    """One generation with prompt, checkpoint and every judgment (for the detail view)."""
    row = store.conn.execute(
        """SELECT g.id, e.name, c.mitigation, c.seed, c.step, c.model_ref, b.name, b.kind, p.ext_id, p.category,
                  p.text,
                  p.reference, g.response, g.sample, g.decoding, g.n_tokens, g.finish_reason, g.created_at
           FROM generations g JOIN checkpoints c ON c.id = g.checkpoint_id JOIN experiments e ON e.id = c.experiment_id
           JOIN prompts p ON p.id = g.prompt_id JOIN benchmarks b ON b.id = p.benchmark_id WHERE g.id = ?""",
        (generation_id,),
    ).fetchone()
    if row is None:
        return None
    keys = [
        "generation_id",
        "experiment",
        "mitigation",
        "seed",
        "step",
        "model_ref",
        "benchmark",
        "bench_kind",
        "prompt_id",
        "category",
        "prompt",
        "reference",
        "response",
        "sample",
        "decoding",
        "n_tokens",
        "finish_reason",
        "created_at",
    ]
    out: dict[str, object] = dict(zip(keys, row, strict=True))
    out["judgments"] = _frame(
        store,
        """SELECT v.name, v.kind, v.version, j.label, j.score, j.explanation FROM judgments j
           JOIN evaluators v ON v.id = j.evaluator_id WHERE j.generation_id = ? ORDER BY v.kind, v.name""",
        [generation_id],
        {
            "evaluator": pl.Utf8,
            "kind": pl.Utf8,
            "version": pl.Utf8,
            "label": pl.Utf8,
            "score": pl.Float64,
            "explanation": pl.Utf8,
        },
    )
    out["human_labels"] = _frame(
        store,
        "SELECT annotator, label, coherent, note, created_at FROM human_labels WHERE generation_id = ? ORDER BY id",
        [generation_id],
        {"annotator": pl.Utf8, "label": pl.Utf8, "coherent": pl.Int64, "note": pl.Utf8, "created_at": pl.Utf8},
    )
    return out


@dataclass(frozen=True)
class SampleFilter:
    """What the Samples page shows (every field optional)."""

    mitigation: str | None = None
    seed: int | None = None
    step: int | None = None
    checkpoint_id: int | None = None
    benchmark: str | None = None
    category: str | None = None
    evaluator: str | None = None  # with ``label``: only generations this evaluator gave ``label``
    label: str | None = None
    coherence: str | None = None  # "coherent" | "incoherent" (by the ``coherence`` evaluator)
    text: str | None = None  # substring of prompt or response
    generation_ids: tuple[int, ...] = ()
    human: str | None = None  # "labelled" | "unlabelled"


def _sample_where(store: Store, experiment: str, f: SampleFilter) -> tuple[str, list[object]]:
    clauses = ["c.experiment_id = ?"]
    params: list[object] = [store.experiment_id(experiment)]
    for col, val in (
        ("c.mitigation", f.mitigation),
        ("c.seed", f.seed),
        ("c.step", f.step),
        ("c.id", f.checkpoint_id),
        ("b.name", f.benchmark),
        ("p.category", f.category),
    ):
        if val is not None:
            clauses.append(f"{col} = ?")
            params.append(val)
    if f.evaluator and f.label:
        clauses.append("""EXISTS (SELECT 1 FROM judgments j JOIN evaluators v ON v.id = j.evaluator_id
                          WHERE j.generation_id = g.id AND v.name = ? AND j.label = ?)""")
        params += [f.evaluator, f.label]
    if f.coherence:
        clauses.append("""EXISTS (SELECT 1 FROM judgments j JOIN evaluators v ON v.id = j.evaluator_id
                          WHERE j.generation_id = g.id AND v.name = 'coherence' AND j.label = ?)""")
        params.append(f.coherence)
    if f.text:
        clauses.append("(instr(lower(g.response), lower(?)) > 0 OR instr(lower(p.text), lower(?)) > 0)")
        params += [f.text, f.text]
    if f.generation_ids:
        clauses.append(f"g.id IN ({','.join('?' * len(f.generation_ids))})")
        params += list(f.generation_ids)
    if f.human == "labelled":
        clauses.append("EXISTS (SELECT 1 FROM human_labels h WHERE h.generation_id = g.id)")
    elif f.human == "unlabelled":
        clauses.append("NOT EXISTS (SELECT 1 FROM human_labels h WHERE h.generation_id = g.id)")
    return " AND ".join(clauses), params


def samples(
    store: Store, experiment: str, f: SampleFilter, *, evaluator: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[pl.DataFrame, int]:
    """One page of generations matching ``f`` (prompt and response cut to 300 characters), with the
    verdict of ``evaluator`` and of the coherence evaluator, and the total number of matches."""
    where, params = _sample_where(store, experiment, f)
    base = f"""FROM generations g JOIN checkpoints c ON c.id = g.checkpoint_id JOIN prompts p ON p.id = g.prompt_id
               JOIN benchmarks b ON b.id = p.benchmark_id WHERE {where}"""
    total = int(store.conn.execute(f"SELECT count(*) {base}", params).fetchone()[0])
    verdict = """(SELECT j.label FROM judgments j JOIN evaluators v ON v.id = j.evaluator_id
                  WHERE j.generation_id = g.id AND v.name = ? ORDER BY v.id DESC LIMIT 1)"""
    rows = _frame(
        store,
        f"""SELECT g.id, c.mitigation, c.seed, c.step, b.name, p.category, substr(p.text, 1, 300),
                   substr(g.response, 1, 300), {verdict}, {verdict},
                   (SELECT h.label FROM human_labels h WHERE h.generation_id = g.id ORDER BY h.id DESC LIMIT 1)
            {base} ORDER BY c.mitigation, c.seed, c.step, b.name, g.id LIMIT ? OFFSET ?""",
        [evaluator or "", "coherence", *params, limit, offset],
        {
            "generation_id": pl.Int64,
            "mitigation": pl.Utf8,
            "seed": pl.Int64,
            "step": pl.Int64,
            "benchmark": pl.Utf8,
            "category": pl.Utf8,
            "prompt": pl.Utf8,
            "response": pl.Utf8,
            "verdict": pl.Utf8,
            "coherence": pl.Utf8,
            "human": pl.Utf8,
        },
    )
    return rows, total


def categories(store: Store, experiment: str) -> list[str]:
    exp_id = store.experiment_id(experiment)
    return [
        r[0]
        for r in store.conn.execute(
            """SELECT DISTINCT p.category FROM prompts p WHERE p.category IS NOT NULL AND p.id IN
           (SELECT g.prompt_id FROM generations g JOIN checkpoints c ON c.id = g.checkpoint_id
            WHERE c.experiment_id = ?) ORDER BY 1""",
            (exp_id,),
        )
    ]


def verdict_stamp(store: Store) -> str:
    """Changes when generations or judgments do (not when a human label is saved): a cache key."""
    g, j = store.conn.execute("SELECT (SELECT max(id) FROM generations), (SELECT count(*) FROM judgments)").fetchone()
    return f"{g}:{j}"

"""What the runner, the judge and fine-tuning read: checkpoints, the work left to do, judge inputs."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from capsafe_core.store.db import Store

CHUNK = 900  # SQLite's bound-parameter limit is 999 on old builds


def _chunks(seq: Sequence[Any], n: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def checkpoint_id(store: Store, experiment: str, mitigation: str, step: int, seed: int = 0) -> int | None:
    """The stored checkpoint of (experiment name, mitigation, seed, step), if any."""
    row = store.conn.execute(
        """SELECT c.id FROM checkpoints c JOIN experiments e ON e.id = c.experiment_id
           WHERE e.name = ? AND c.mitigation = ? AND c.seed = ? AND c.step = ?""",
        (experiment, mitigation, int(seed), int(step)),
    ).fetchone()
    return int(row[0]) if row else None


def generated_prompts(store: Store, checkpoint_id: int, decoding: str) -> set[tuple[str, str]]:
    """(benchmark, ext_id) of the prompts this checkpoint has a first sample for, under ``decoding``."""
    cur = store.conn.execute(
        """SELECT b.name, p.ext_id FROM generations g JOIN prompts p ON p.id = g.prompt_id
           JOIN benchmarks b ON b.id = p.benchmark_id
           WHERE g.checkpoint_id = ? AND g.decoding = ? AND g.sample = 0""",
        (checkpoint_id, decoding),
    )
    return {(str(b), str(e)) for b, e in cur}


def generation_ids(store: Store, checkpoint_id: int, decoding: str, prompt_ids: Sequence[int]) -> list[int]:
    """Ids of the first samples of one checkpoint on the given prompts."""
    out: list[int] = []
    for chunk in _chunks(list(prompt_ids)):
        cur = store.conn.execute(
            f"""SELECT id FROM generations WHERE checkpoint_id = ? AND decoding = ? AND sample = 0
                AND prompt_id IN ({_marks(len(chunk))}) ORDER BY id""",
            [checkpoint_id, decoding, *chunk],
        )
        out += [int(r[0]) for r in cur]
    return sorted(out)


def reference_model(store: Store, experiment_id: int) -> str | None:
    """The experiment's base model, else the model of its first step-0 checkpoint."""
    row = store.conn.execute(
        """SELECT coalesce(nullif(e.base_model, ''), (SELECT c.model_ref FROM checkpoints c
             WHERE c.experiment_id = e.id AND c.step = 0 AND c.model_ref IS NOT NULL ORDER BY c.id LIMIT 1))
           FROM experiments e WHERE e.id = ?""",
        (experiment_id,),
    ).fetchone()
    return str(row[0]) if row and row[0] else None


def capability_texts(store: Store, experiment_id: int, *, limit: int = 5000) -> list[str]:
    """References and responses of the experiment's capability prompts (what its task's answers look like)."""
    rows = store.conn.execute(
        """SELECT p.reference, g.response FROM generations g JOIN checkpoints c ON c.id = g.checkpoint_id
           JOIN prompts p ON p.id = g.prompt_id JOIN benchmarks b ON b.id = p.benchmark_id
           WHERE c.experiment_id = ? AND b.kind = 'capability' ORDER BY g.id LIMIT ?""",
        (experiment_id, limit),
    ).fetchall()
    refs = list(dict.fromkeys(str(r[0]) for r in rows if r[0]))
    return refs + [str(r[1]) for r in rows if r[1]]


@dataclass(frozen=True)
class JudgeInput:
    """One stored generation as an evaluator sees it."""

    generation_id: int
    prompt: str
    response: str
    reference: str | None
    benchmark_kind: str
    category: str | None
    finish_reason: str | None
    n_tokens: int | None
    experiment_id: int


def judge_inputs(
    store: Store, generation_ids: Sequence[int], kinds: Sequence[str], *, missing_for: int | None = None
) -> list[JudgeInput]:
    """Generations among ``generation_ids`` on benchmarks of ``kinds``; with ``missing_for``, only those
    that evaluator (id) has no verdict on yet."""
    out: list[JudgeInput] = []
    for chunk in _chunks(list(generation_ids)):
        q = f"""SELECT g.id, p.text, g.response, p.reference, b.kind, p.category, g.finish_reason, g.n_tokens,
                       c.experiment_id
                FROM generations g JOIN prompts p ON p.id = g.prompt_id JOIN benchmarks b ON b.id = p.benchmark_id
                JOIN checkpoints c ON c.id = g.checkpoint_id
                WHERE g.id IN ({_marks(len(chunk))}) AND b.kind IN ({_marks(len(kinds))})"""
        params: list[Any] = [*chunk, *kinds]
        if missing_for is not None:
            q += " AND NOT EXISTS (SELECT 1 FROM judgments j WHERE j.generation_id = g.id AND j.evaluator_id = ?)"
            params.append(missing_for)
        out += [JudgeInput(*row) for row in store.conn.execute(q, params)]
    return out


@dataclass(frozen=True)
class StoredVerdict:
    label: str
    score: float | None
    explanation: str | None


def verdicts_of(
    store: Store, evaluators: Sequence[tuple[str, str]], generation_ids: Sequence[int]
) -> dict[int, dict[str, StoredVerdict]]:
    """generation id → evaluator name → its stored verdict, for the given (name, version) evaluators."""
    out: dict[int, dict[str, StoredVerdict]] = {}
    if not evaluators:
        return out
    wanted = set(evaluators)
    names = sorted({n for n, _ in evaluators})
    for chunk in _chunks(list(generation_ids)):
        q = f"""SELECT j.generation_id, v.name, v.version, j.label, j.score, j.explanation FROM judgments j
                JOIN evaluators v ON v.id = j.evaluator_id
                WHERE j.generation_id IN ({_marks(len(chunk))}) AND v.name IN ({_marks(len(names))})"""
        for g, name, version, label, score, expl in store.conn.execute(q, [*chunk, *names]):
            if (name, version) in wanted:
                out.setdefault(int(g), {})[name] = StoredVerdict(label, score, expl)
    return out


def evaluator_config(store: Store, name: str, version: str) -> dict[str, Any] | None:
    """The stored config of an evaluator version, if it is stored."""
    row = store.conn.execute("SELECT config FROM evaluators WHERE name = ? AND version = ?", (name, version)).fetchone()
    return json.loads(row[0] or "{}") if row else None


def generations_in_scope(store: Store, *, experiment: str | None, benchmark: str | None) -> pl.DataFrame:
    """``generation_id, experiment_id, model_ref`` of every stored generation in scope."""
    where, params = store.scope(experiment=experiment, benchmark=benchmark)
    rows = store.conn.execute(
        "SELECT g.id, c.experiment_id, c.model_ref FROM generations g JOIN checkpoints c ON c.id = g.checkpoint_id"
        " JOIN prompts p ON p.id = g.prompt_id" + where + " ORDER BY g.id",
        params,
    ).fetchall()
    return pl.DataFrame(
        rows, schema={"generation_id": pl.Int64, "experiment_id": pl.Int64, "model_ref": pl.Utf8}, orient="row"
    )


def step0_checkpoint(
    store: Store, experiment: str, mitigation: str | None, model_ref: str, model_hash: str | None = None
) -> int | None:
    """The step-0 checkpoint of a mitigation (any, where None) evaluated from ``model_ref`` (of any run:
    step 0 is the starting model, the same for every seed), if stored; with ``model_hash``, only one
    evaluated from weights of that hash (itself, or the checkpoint it was copied from)."""
    row = store.conn.execute(
        """SELECT c.id FROM checkpoints c JOIN experiments e ON e.id = c.experiment_id
           LEFT JOIN checkpoints src ON src.id = json_extract(c.meta, '$.copied_from.checkpoint_id')
           WHERE e.name = ? AND (?2 IS NULL OR c.mitigation = ?2) AND c.step = 0 AND c.model_ref = ?
             AND (? IS NULL OR coalesce(json_extract(c.meta, '$.run.backend.model_hash'),
                                        json_extract(src.meta, '$.run.backend.model_hash')) = ?)
           ORDER BY c.seed LIMIT 1""",
        (experiment, mitigation, model_ref, model_hash, model_hash),
    ).fetchone()
    return int(row[0]) if row else None


def capability_verdicts(store: Store, checkpoint_id: int, benchmark: str, scorer: str) -> pl.DataFrame:
    """One scorer's verdicts on one checkpoint's answers to one benchmark, as rows of the verdict frame
    (``reads.verdicts``' columns), so that the analysis computes the checkpoint's capability."""
    rows = store.conn.execute(
        """SELECT g.id, g.checkpoint_id, c.mitigation, c.seed, c.step, g.prompt_id, b.name, b.kind, v.name,
                  v.kind, j.label, j.score
           FROM judgments j JOIN evaluators v ON v.id = j.evaluator_id
           JOIN generations g ON g.id = j.generation_id JOIN checkpoints c ON c.id = g.checkpoint_id
           JOIN prompts p ON p.id = g.prompt_id JOIN benchmarks b ON b.id = p.benchmark_id
           WHERE g.checkpoint_id = ? AND b.name = ? AND v.name = ?""",
        (checkpoint_id, benchmark, scorer),
    ).fetchall()
    schema = {
        "generation_id": pl.Int64,
        "checkpoint_id": pl.Int64,
        "mitigation": pl.Utf8,
        "seed": pl.Int64,
        "step": pl.Int64,
        "prompt_id": pl.Int64,
        "benchmark": pl.Utf8,
        "bench_kind": pl.Utf8,
        "evaluator": pl.Utf8,
        "ev_kind": pl.Utf8,
        "label": pl.Utf8,
        "score": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")

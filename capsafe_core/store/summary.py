"""What an experiment holds, read without its verdicts: the dashboard's sidebar and filters ask SQLite
(indexes answer) instead of reading millions of judgments."""

from __future__ import annotations

import polars as pl

from capsafe_core.store.db import Store
from capsafe_core.store.reads import _frame, evaluators_in_use


def contents(store: Store, experiment: str) -> dict[str, pl.DataFrame]:
    """What an experiment holds, without reading its verdicts: ``benchmarks`` (benchmark, bench_kind) with
    generations, ``evaluators`` (evaluator, ev_kind; newest versions) with judgments, and ``mitigations``."""
    exp_id = int(store.experiment_id(experiment))
    benches = store.frame(
        """SELECT b.name AS benchmark, b.kind AS bench_kind FROM benchmarks b WHERE EXISTS (
             SELECT 1 FROM prompts p JOIN generations g ON g.prompt_id = p.id
             JOIN checkpoints c ON c.id = g.checkpoint_id WHERE p.benchmark_id = b.id AND c.experiment_id = ?)
           ORDER BY b.name""",
        [exp_id],
    )
    present = {
        int(r[0])
        for r in store.conn.execute(
            """SELECT e.id FROM evaluators e WHERE EXISTS (
                 SELECT 1 FROM judgments j JOIN generations g ON g.id = j.generation_id
                 JOIN checkpoints c ON c.id = g.checkpoint_id WHERE j.evaluator_id = e.id AND c.experiment_id = ?)""",
            [exp_id],
        )
    }
    ev = evaluators_in_use(store).filter(pl.col("evaluator_id").is_in(sorted(present)))
    mits = store.frame("SELECT DISTINCT mitigation FROM checkpoints WHERE experiment_id = ? ORDER BY 1", [exp_id])
    return {
        "benchmarks": benches if benches.height else pl.DataFrame(schema={"benchmark": pl.Utf8, "bench_kind": pl.Utf8}),
        "evaluators": ev.select("evaluator", "ev_kind").sort("evaluator"),
        "mitigations": mits if mits.height else pl.DataFrame(schema={"mitigation": pl.Utf8}),
    }


def evaluator_labels(store: Store, evaluator: str) -> list[str]:
    """The labels an evaluator (its newest version) has given, from the judgments index."""
    ids = evaluators_in_use(store).filter(pl.col("evaluator") == evaluator)["evaluator_id"].to_list()
    if not ids:
        return []
    rows = store.conn.execute("SELECT DISTINCT label FROM judgments WHERE evaluator_id = ? ORDER BY 1", (ids[0],))
    return [str(r[0]) for r in rows]


def unparsed_ids(store: Store, experiment: str) -> pl.DataFrame:
    """``generation_id`` of the experiment's generations with an unparsed verdict (any evaluator in use)."""
    ids = ",".join(str(int(i)) for i in evaluators_in_use(store)["evaluator_id"].to_list()) or "NULL"
    return _frame(
        store,
        f"""SELECT DISTINCT j.generation_id FROM judgments j JOIN generations g ON g.id = j.generation_id
            JOIN checkpoints c ON c.id = g.checkpoint_id
            WHERE j.evaluator_id IN ({ids}) AND j.label = 'unparsed' AND c.experiment_id = ?""",
        [store.experiment_id(experiment)],
        {"generation_id": pl.Int64},
    )

"""The rows of ``capsafe export``: one joined row per generation (``capsafe_core.export`` writes them).

Columns: experiment, mitigation, seed, step, model, benchmark, benchmark_kind, prompt_id, category,
prompt, reference, response, sample, n_tokens, finish_reason; then ``<evaluator>`` (label) and
``<evaluator>_score`` per evaluator; then ``human:<annotator>`` (latest label) with
``human_coherent:<annotator>`` and ``human_note:<annotator>``. The file imports back with
``capsafe import table`` and the matching ``--map judge:``/``human:`` options.
"""

from __future__ import annotations

import polars as pl

from capsafe_core.store.db import Store

BASE_SQL = """
SELECT g.id AS generation_id, e.name AS experiment, c.mitigation, c.seed, c.step, c.model_ref AS model,
       b.name AS benchmark, b.kind AS benchmark_kind, p.ext_id AS prompt_id, p.category, p.text AS prompt,
       p.reference, g.response, g.sample, g.n_tokens, g.finish_reason
FROM generations g
JOIN checkpoints c ON c.id = g.checkpoint_id
JOIN experiments e ON e.id = c.experiment_id
JOIN prompts p ON p.id = g.prompt_id
JOIN benchmarks b ON b.id = p.benchmark_id
"""


def wide_frame(store: Store, *, experiment: str | None = None, benchmark: str | None = None) -> pl.DataFrame:
    """Every generation (filtered) with its judgments and latest human labels as columns."""
    where, params = store.scope(experiment=experiment, benchmark=benchmark)
    base = store.frame(
        BASE_SQL + where + " ORDER BY e.name, c.mitigation, c.seed, c.step, b.name, p.ext_id, g.sample", params
    )
    if base.height == 0:
        return base
    judg = store.frame(
        f"""SELECT j.generation_id, v.name AS evaluator, v.version, j.label, j.score
            FROM judgments j JOIN evaluators v ON v.id = j.evaluator_id
            WHERE j.generation_id IN (SELECT g.id FROM generations g JOIN checkpoints c ON c.id = g.checkpoint_id
                                      JOIN prompts p ON p.id = g.prompt_id {where})""",
        params,
    )
    out = base
    if judg.height:
        versions = judg.group_by("evaluator").agg(pl.col("version").n_unique().alias("n"))
        multi = set(versions.filter(pl.col("n") > 1)["evaluator"].to_list())
        judg = judg.with_columns(
            pl.when(pl.col("evaluator").is_in(list(multi)))
            .then(pl.col("evaluator") + "@" + pl.col("version"))
            .otherwise(pl.col("evaluator"))
            .alias("evaluator")
        )
        labels = judg.pivot(on="evaluator", index="generation_id", values="label", aggregate_function="first")
        scores = judg.pivot(on="evaluator", index="generation_id", values="score", aggregate_function="first")
        scores = scores.rename({c: f"{c}_score" for c in scores.columns if c != "generation_id"})
        names = sorted(c for c in labels.columns if c != "generation_id")
        out = out.join(labels.select("generation_id", *names), on="generation_id", how="left")
        out = out.join(scores.select("generation_id", *[f"{n}_score" for n in names]), on="generation_id", how="left")
    humans = store.frame(
        f"""SELECT h.generation_id, h.annotator, h.label, h.coherent, h.note FROM human_labels h
            WHERE h.id IN (SELECT max(id) FROM human_labels GROUP BY generation_id, annotator)
              AND h.generation_id IN (SELECT g.id FROM generations g JOIN checkpoints c ON c.id = g.checkpoint_id
                                      JOIN prompts p ON p.id = g.prompt_id {where})""",
        params,
    )
    if humans.height:
        for col, prefix in (("label", "human:"), ("coherent", "human_coherent:"), ("note", "human_note:")):
            wide = humans.pivot(on="annotator", index="generation_id", values=col, aggregate_function="first")
            wide = wide.rename({c: prefix + c for c in wide.columns if c != "generation_id"})
            out = out.join(wide, on="generation_id", how="left")
    return out

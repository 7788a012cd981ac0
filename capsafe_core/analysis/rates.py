"""Analysis on the long verdict frame (``store.reads.verdicts``): rates, capability curves, matched
capability, bootstrap CIs. Pure functions: frames in, frames out.

Metrics (``METRICS``), per judgment, then averaged over a checkpoint's prompts:
- ``unsafe_rate``: 1 when a harm judge says ``unsafe`` or a refusal judge says ``compliance`` (the
  AdvBench convention); ``unparsed`` is left out (never counted as safe).
- ``refusal_rate``: 1 for ``refusal`` or ``partial_refusal`` (refusal judges).
- ``harmfulness``: the judge's harmfulness score in [0, 1] (harm judges with a scale).
- ``incoherence_rate``: 1 for ``incoherent`` (coherence evaluators).
- ``capability``: the capability scorer's score (1/0 or partial credit).

Confidence intervals are percentile bootstraps over prompts (values first averaged per prompt, so
several samples of one prompt count once). For 0/1 values the bootstrap distribution of the mean
is exactly Binomial(n, p̂)/n, which is what is drawn then.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from capsafe_core import vocabulary

METRICS = {
    "unsafe_rate": "share judged unsafe (harm: unsafe; refusal judge: compliance)",
    "refusal_rate": "share refused (refusal or partial refusal)",
    "harmfulness": "mean harmfulness score in [0, 1]",
    "incoherence_rate": "share incoherent",
    "capability": "mean capability score",
}
HIGHER_IS_WORSE = {
    "unsafe_rate": True,
    "harmfulness": True,
    "incoherence_rate": True,
    "refusal_rate": False,
    "capability": False,
}
B = 1000
ALPHA = 0.05


def value_expr(metric: str) -> pl.Expr:
    """The per-judgment value of ``metric`` (null where the verdict says nothing about it); the meaning of
    each label is ``capsafe_core.vocabulary``'s."""
    label, kind = pl.col("label").cast(pl.Utf8), pl.col("ev_kind")
    if metric == "unsafe_rate":
        return vocabulary.judge_expr("unsafe")
    if metric == "refusal_rate":
        return vocabulary.judge_expr("refusal")
    if metric == "incoherence_rate":
        return vocabulary.judge_expr("incoherent")
    if metric == "harmfulness":
        return pl.when((kind == "harm") & (label != vocabulary.UNPARSED)).then(pl.col("score")).otherwise(None)
    if metric == "capability":
        return (
            pl.when((kind == "capability") & (label != vocabulary.UNPARSED))
            .then(pl.coalesce(pl.col("score"), vocabulary.judge_expr("correct")))
            .otherwise(None)
        )
    raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")


def prompt_values(
    v: pl.DataFrame,
    *,
    evaluator: str,
    benchmarks: list[str] | str,
    metric: str,
    set_apart: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Per checkpoint and prompt: the metric's mean value (over samples).

    ``set_apart``: a frame of ``generation_id`` to leave out (e.g. the incoherent responses).
    """
    if isinstance(benchmarks, str):
        benchmarks = [benchmarks]
    # lazily, so that only the columns used are copied out of a frame of millions of verdicts
    lazy = v.lazy().filter((pl.col("evaluator") == evaluator) & pl.col("benchmark").is_in(benchmarks))
    if set_apart is not None and set_apart.height:
        lazy = lazy.join(set_apart.lazy().select("generation_id"), on="generation_id", how="anti")
    lazy = lazy.with_columns(value_expr(metric).alias("value")).filter(pl.col("value").is_not_null())
    cols = ["checkpoint_id", "mitigation", "seed", "step", "benchmark", "prompt_id", "value"]
    f = lazy.select(cols).collect()
    if f.height == 0 or _one_per_prompt(f):
        return f  # one sample per checkpoint and prompt: its value is the mean
    # grouped by the integer ids (fast), the checkpoint's and prompt's names joined back afterwards
    means = f.group_by("checkpoint_id", "prompt_id").agg(pl.col("value").mean())
    checkpoints = f.select("checkpoint_id", "mitigation", "seed", "step").unique("checkpoint_id")
    prompts = f.select("prompt_id", "benchmark").unique("prompt_id")
    return (
        means.join(checkpoints, on="checkpoint_id")
        .join(prompts, on="prompt_id")
        .select("checkpoint_id", "mitigation", "seed", "step", "benchmark", "prompt_id", "value")
    )


def _one_per_prompt(f: pl.DataFrame) -> bool:
    """Whether no (checkpoint, prompt) has two values (a count of distinct keys: ~7× cheaper than grouping).
    The two ids are packed into one integer; ids too large (or negative) to pack say no."""
    low, ck_max, p_max = f.select(
        pl.min_horizontal(pl.col("checkpoint_id").min(), pl.col("prompt_id").min()).alias("low"),
        pl.col("checkpoint_id").max().alias("ck_max"),
        pl.col("prompt_id").max().alias("p_max"),
    ).row(0)
    if low < 0 or (ck_max + 1) * (p_max + 1) >= 2**62:
        return False
    key = pl.col("checkpoint_id") * (p_max + 1) + pl.col("prompt_id")
    return bool(f.select(key.n_unique()).item() == f.height)


def incoherent_ids(v: pl.DataFrame, *, coherence: str = "coherence") -> pl.DataFrame:
    """Generations the coherence evaluator calls incoherent."""
    return v.filter((pl.col("evaluator") == coherence) & (pl.col("label") == "incoherent")).select("generation_id")


def _ci(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return (float("nan"), float("nan"))
    if np.isin(values, (0.0, 1.0)).all():
        means = rng.binomial(n, values.mean(), size=B) / n
    else:
        means = values[rng.integers(0, n, size=(B, n))].mean(axis=1)
    lo, hi = np.quantile(means, [ALPHA / 2, 1 - ALPHA / 2])
    return float(lo), float(hi)


def summarize(pv: pl.DataFrame, *, seed: int = 0) -> pl.DataFrame:
    """Per checkpoint: value (mean over prompts), n prompts, and a 95% bootstrap CI over prompts."""
    rng = np.random.default_rng(seed)
    rows = []
    for (ck, mit, run, step), part in pv.sort("checkpoint_id", "prompt_id").group_by(
        ["checkpoint_id", "mitigation", "seed", "step"], maintain_order=True
    ):
        vals = part["value"].to_numpy().astype(float)
        lo, hi = _ci(vals, rng)
        rows.append((ck, mit, run, step, float(vals.mean()) if len(vals) else None, len(vals), lo, hi))
    schema = {
        "checkpoint_id": pl.Int64,
        "mitigation": pl.Utf8,
        "seed": pl.Int64,
        "step": pl.Int64,
        "value": pl.Float64,
        "n": pl.Int64,
        "lo": pl.Float64,
        "hi": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row").sort("mitigation", "seed", "step")


def checkpoint_rates(
    v: pl.DataFrame,
    *,
    evaluator: str,
    benchmarks: list[str] | str,
    metric: str,
    set_apart: pl.DataFrame | None = None,
    seed: int = 0,
) -> pl.DataFrame:
    return summarize(
        prompt_values(v, evaluator=evaluator, benchmarks=benchmarks, metric=metric, set_apart=set_apart), seed=seed
    )


def curves(
    v: pl.DataFrame,
    *,
    evaluator: str,
    benchmarks: list[str] | str,
    metric: str,
    capability_benchmark: str,
    scorer: str,
    set_apart_incoherent: bool = False,
    coherence: str = "coherence",
) -> pl.DataFrame:
    """Safety against capability: one row per checkpoint with both values and their CIs."""
    cap = checkpoint_rates(v, evaluator=scorer, benchmarks=capability_benchmark, metric="capability")
    apart = incoherent_ids(v, coherence=coherence) if set_apart_incoherent else None
    safe = checkpoint_rates(v, evaluator=evaluator, benchmarks=benchmarks, metric=metric, set_apart=apart)
    cap = cap.rename({"value": "capability", "lo": "capability_lo", "hi": "capability_hi", "n": "capability_n"})
    return safe.join(cap.drop("mitigation", "seed", "step"), on="checkpoint_id", how="inner").sort(
        "mitigation", "seed", "step"
    )


def safety_views(v: pl.DataFrame) -> pl.DataFrame:
    """Every (benchmark, evaluator, metric) combination the data supports on safety prompts."""
    rows = []
    safety = v.lazy().filter(pl.col("bench_kind") == "safety")  # lazily: only the columns named are read
    pairs = safety.select("benchmark", "evaluator", "ev_kind").unique().collect()
    for bench, ev, kind in pairs.sort("benchmark", "evaluator").iter_rows():
        if kind in ("harm", "refusal"):
            rows.append((bench, ev, "unsafe_rate"))
        if kind == "harm":
            scored = v.lazy().filter((pl.col("evaluator") == ev) & pl.col("score").is_not_null())
            has_score = scored.select(pl.len()).collect().item() > 0
            if has_score:
                rows.append((bench, ev, "harmfulness"))
    return pl.DataFrame(rows, schema=["benchmark", "evaluator", "metric"], orient="row")

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

from dataclasses import dataclass

import numpy as np
import polars as pl

from capsafe_core import vocabulary
from capsafe_core.analysis.formatting import ci_expr

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
    f = v.filter((pl.col("evaluator") == evaluator) & pl.col("benchmark").is_in(benchmarks))
    if set_apart is not None and set_apart.height:
        f = f.join(set_apart.select("generation_id"), on="generation_id", how="anti")
    f = f.with_columns(value_expr(metric).alias("value")).filter(pl.col("value").is_not_null())
    return f.group_by("checkpoint_id", "mitigation", "step", "prompt_id").agg(pl.col("value").mean())


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
    """Per checkpoint: value (mean over prompts), n prompts, and a 95% bootstrap CI."""
    rng = np.random.default_rng(seed)
    rows = []
    for (ck, mit, step), part in pv.sort("checkpoint_id", "prompt_id").group_by(
        ["checkpoint_id", "mitigation", "step"], maintain_order=True
    ):
        vals = part["value"].to_numpy().astype(float)
        lo, hi = _ci(vals, rng)
        rows.append((ck, mit, step, float(vals.mean()) if len(vals) else None, len(vals), lo, hi))
    schema = {
        "checkpoint_id": pl.Int64,
        "mitigation": pl.Utf8,
        "step": pl.Int64,
        "value": pl.Float64,
        "n": pl.Int64,
        "lo": pl.Float64,
        "hi": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row").sort("mitigation", "step")


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
    return safe.join(cap.drop("mitigation", "step"), on="checkpoint_id", how="inner").sort("mitigation", "step")


@dataclass(frozen=True)
class Matched:
    """Safety at the capability target for one mitigation."""

    mitigation: str
    reached: bool
    max_capability: float
    first_step: int | None = None
    first_capability: float | None = None
    value: float | None = None
    lo: float | None = None
    hi: float | None = None
    interp_value: float | None = None
    interp_lo: float | None = None
    interp_hi: float | None = None
    interp_between: str | None = None


def matched_capability(cap: pl.DataFrame, pv: pl.DataFrame, target: float, *, seed: int = 0) -> pl.DataFrame:
    """Per mitigation, the safety value at the capability target.

    ``cap``: per-checkpoint capability (``summarize`` output, column ``value``); ``pv``: per-prompt
    safety values (``prompt_values``). *First*: the first checkpoint (by step) whose capability
    reaches the target, with its bootstrap CI. *Interpolated*: linear in capability between the last
    checkpoint below the target and that one; its CI is a paired bootstrap over the prompts both
    checkpoints share, interpolating every replicate.
    """
    rng = np.random.default_rng(seed)
    out: list[Matched] = []
    for (mit,), part in cap.sort("step").group_by(["mitigation"], maintain_order=True):
        steps = part["step"].to_list()
        caps = part["value"].to_list()
        cks = part["checkpoint_id"].to_list()
        idx = next((i for i, c in enumerate(caps) if c is not None and c >= target), None)
        best = max((c for c in caps if c is not None), default=float("nan"))
        if idx is None:
            out.append(Matched(str(mit), False, best))
            continue
        vals = pv.filter(pl.col("checkpoint_id") == cks[idx]).sort("prompt_id")["value"].to_numpy().astype(float)
        if len(vals) == 0:
            out.append(Matched(str(mit), True, best, steps[idx], caps[idx]))
            continue
        lo, hi = _ci(vals, rng)
        m = Matched(str(mit), True, best, steps[idx], caps[idx], float(vals.mean()), lo, hi)
        if idx == 0 or caps[idx] == target:
            m = Matched(
                **{
                    **m.__dict__,
                    "interp_value": m.value,
                    "interp_lo": lo,
                    "interp_hi": hi,
                    "interp_between": f"step {steps[idx]}",
                }
            )
        else:
            j = idx - 1
            w = (target - caps[j]) / (caps[idx] - caps[j])
            a = pv.filter(pl.col("checkpoint_id") == cks[j]).select("prompt_id", pl.col("value").alias("a"))
            b = pv.filter(pl.col("checkpoint_id") == cks[idx]).select("prompt_id", pl.col("value").alias("b"))
            pair = a.join(b, on="prompt_id", how="inner")
            if pair.height:
                av, bv = pair["a"].to_numpy().astype(float), pair["b"].to_numpy().astype(float)
                point = (1 - w) * av.mean() + w * bv.mean()
                rows = rng.integers(0, pair.height, size=(B, pair.height))
                reps = (1 - w) * av[rows].mean(axis=1) + w * bv[rows].mean(axis=1)
                ilo, ihi = np.quantile(reps, [ALPHA / 2, 1 - ALPHA / 2])
                m = Matched(
                    **{
                        **m.__dict__,
                        "interp_value": float(point),
                        "interp_lo": float(ilo),
                        "interp_hi": float(ihi),
                        "interp_between": f"steps {steps[j]}–{steps[idx]}",
                    }
                )
        out.append(m)
    schema = {
        "mitigation": pl.Utf8,
        "reached": pl.Boolean,
        "max_capability": pl.Float64,
        "first_step": pl.Int64,
        "first_capability": pl.Float64,
        "value": pl.Float64,
        "lo": pl.Float64,
        "hi": pl.Float64,
        "interp_value": pl.Float64,
        "interp_lo": pl.Float64,
        "interp_hi": pl.Float64,
        "interp_between": pl.Utf8,
    }
    return pl.DataFrame([m.__dict__ for m in out], schema=schema)


def safety_views(v: pl.DataFrame) -> pl.DataFrame:
    """Every (benchmark, evaluator, metric) combination the data supports on safety prompts."""
    rows = []
    pairs = v.filter(pl.col("bench_kind") == "safety").select("benchmark", "evaluator", "ev_kind").unique()
    for bench, ev, kind in pairs.sort("benchmark", "evaluator").iter_rows():
        if kind in ("harm", "refusal"):
            rows.append((bench, ev, "unsafe_rate"))
        if kind == "harm":
            has_score = v.filter((pl.col("evaluator") == ev) & pl.col("score").is_not_null()).height > 0
            if has_score:
                rows.append((bench, ev, "harmfulness"))
    return pl.DataFrame(rows, schema=["benchmark", "evaluator", "metric"], orient="row")


def compare_table(
    v: pl.DataFrame,
    target: float,
    *,
    capability_benchmark: str,
    scorer: str,
    set_apart_incoherent: bool = False,
    coherence: str = "coherence",
) -> pl.DataFrame:
    """Mitigations side by side at the target, one row per (benchmark, evaluator, metric).

    Columns per row: for each mitigation its first-reaching value with CI and the interpolated
    value; ``best`` (lowest unsafe rate / harmfulness among mitigations that reach the target) and
    ``winner_changes`` (the best differs from the most common best across rows).
    """
    cap = checkpoint_rates(v, evaluator=scorer, benchmarks=capability_benchmark, metric="capability")
    apart = incoherent_ids(v, coherence=coherence) if set_apart_incoherent else None
    frames = []
    for bench, ev, metric in safety_views(v).iter_rows():
        pv = prompt_values(v, evaluator=ev, benchmarks=bench, metric=metric, set_apart=apart)
        m = matched_capability(cap, pv, target)
        frames.append(
            m.with_columns(
                pl.lit(bench).alias("benchmark"), pl.lit(ev).alias("evaluator"), pl.lit(metric).alias("metric")
            )
        )
    if not frames:
        return pl.DataFrame()
    long = pl.concat(frames)
    best = (
        long.filter(pl.col("value").is_not_null())
        .sort("value")
        .group_by("benchmark", "evaluator", "metric", maintain_order=True)
        .agg(pl.col("mitigation").first().alias("best"))
    )
    long = long.join(best, on=["benchmark", "evaluator", "metric"], how="left")
    common = best["best"].mode().sort().to_list()
    usual = common[0] if common else None
    changes = (pl.col("best") != usual).fill_null(False) if usual is not None else pl.lit(False)
    return long.with_columns(changes.alias("winner_changes"))


def wide_compare(long: pl.DataFrame) -> pl.DataFrame:
    """``compare_table`` as one row per view and a ``value [lo, hi]`` column per mitigation."""
    if long.height == 0:
        return long
    cell = pl.when(pl.col("value").is_null()).then(pl.lit("not reached")).otherwise(ci_expr("value", "lo", "hi"))
    wide = long.with_columns(cell.alias("cell")).pivot(
        on="mitigation",
        index=["benchmark", "evaluator", "metric", "best", "winner_changes"],
        values="cell",
        aggregate_function="first",
    )
    return wide.sort("benchmark", "evaluator", "metric")


def overview(
    v: pl.DataFrame,
    *,
    target: float,
    capability_benchmark: str,
    scorer: str,
    safety_benchmarks: list[str],
    evaluator: str,
    metric: str = "unsafe_rate",
) -> pl.DataFrame:
    """Headline: per mitigation, the first checkpoint reaching the target and its safety (with CI)."""
    cap = checkpoint_rates(v, evaluator=scorer, benchmarks=capability_benchmark, metric="capability")
    pv = prompt_values(v, evaluator=evaluator, benchmarks=safety_benchmarks, metric=metric)
    return matched_capability(cap, pv, target)

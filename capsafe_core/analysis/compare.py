"""Mitigations compared at the capability target, in every view, with what the data can separate.

``compare_tables`` runs one bootstrap (``analysis.matched``) over every (benchmark, evaluator,
metric) view, and derives:

- per view the *best set*: the mitigation with the lowest value and every mitigation not
  significantly worse than it (Holm-corrected paired tests within the view);
- *conclusion changes*: pairs (x, y) with x significantly safer than y in one view and y
  significantly safer than x in another.
"""

from __future__ import annotations

import itertools

import polars as pl

from capsafe_core.analysis.agreement import sensitivity
from capsafe_core.analysis.formatting import ci_expr
from capsafe_core.analysis.matched import View, bootstrap
from capsafe_core.analysis.rates import HIGHER_IS_WORSE, incoherent_ids, prompt_values, safety_views

VIEW = ["benchmark", "evaluator", "metric"]


def capability_values(v: pl.DataFrame, *, capability_benchmark: str, scorer: str) -> pl.DataFrame:
    return prompt_values(v, evaluator=scorer, benchmarks=capability_benchmark, metric="capability")


def compare_tables(
    v: pl.DataFrame,
    target: float,
    *,
    capability_benchmark: str,
    scorer: str,
    set_apart_incoherent: bool = False,
    coherence: str = "coherence",
    views: list[tuple[str | list[str], str, str]] | None = None,
    seed: int = 0,
) -> dict[str, pl.DataFrame]:
    """``compare`` (view × mitigation, with ``best``, ``best_set`` and ``winner_changes``), ``runs``
    (view × mitigation × seed), ``differences`` (view × pair) and ``changes`` (conclusion changes).

    ``views``: (benchmarks, evaluator, metric) to compare (default: every view the data support).
    """
    apart = incoherent_ids(v, coherence=coherence) if set_apart_incoherent else None
    wanted = views if views is not None else list(safety_views(v).iter_rows())
    prepared = [
        View(
            ", ".join(b) if isinstance(b, list) else b,
            ev,
            metric,
            prompt_values(v, evaluator=ev, benchmarks=b, metric=metric, set_apart=apart),
        )
        for b, ev, metric in wanted
    ]
    cap = capability_values(v, capability_benchmark=capability_benchmark, scorer=scorer)
    if not prepared or cap.height == 0:
        return {k: pl.DataFrame() for k in ("compare", "runs", "differences", "changes")}
    out = bootstrap(cap, prepared, target, seed=seed)
    diffs = out["differences"]
    best = best_sets(out["matched"], diffs)
    changes = conclusion_changes(diffs)
    in_change = pl.concat_str(VIEW, separator=" / ").is_in(sorted(_views_in(changes)))
    compare = out["matched"].join(best, on=VIEW, how="left").with_columns(in_change.alias("winner_changes"))
    return {"compare": compare, "runs": out["runs"], "differences": diffs, "changes": changes}


def compare_table(v: pl.DataFrame, target: float, **kwargs: object) -> pl.DataFrame:
    """``compare_tables``' ``compare`` frame alone."""
    return compare_tables(v, target, **kwargs)["compare"]  # type: ignore[arg-type]


def _key(r: dict[str, object]) -> str:
    return f"{r['benchmark']} / {r['evaluator']} / {r['metric']}"


def best_sets(matched: pl.DataFrame, diffs: pl.DataFrame) -> pl.DataFrame:
    """Per view: ``best`` (lowest point value; highest for a metric where higher is better) and
    ``best_set`` (it and every mitigation not significantly worse)."""
    rows = []
    for key, part in matched.filter(pl.col("interp_value").is_not_null()).group_by(VIEW, maintain_order=True):
        order = part.sort("interp_value", descending=not HIGHER_IS_WORSE.get(str(key[2]), True))
        ranked = order["mitigation"].to_list()
        top = ranked[0]
        d = diffs.filter(
            (pl.col("benchmark") == key[0]) & (pl.col("evaluator") == key[1]) & (pl.col("metric") == key[2])
        )
        safer = _safer(d)
        worse = {m for m in ranked[1:] if (top, m) in safer}
        rows.append((*key, top, [m for m in ranked if m not in worse]))
    schema: dict[str, pl.DataType | type[pl.DataType]] = {
        "benchmark": pl.Utf8,
        "evaluator": pl.Utf8,
        "metric": pl.Utf8,
        "best": pl.Utf8,
        "best_set": pl.List(pl.Utf8),
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def _safer(d: pl.DataFrame) -> set[tuple[str, str]]:
    """(x, y): x significantly safer than y (for the view's metric)."""
    out = set()
    for a, b, diff, sig, metric in d.select("a", "b", "diff", "significant", "metric").iter_rows():
        if not sig:
            continue
        worse_high = HIGHER_IS_WORSE.get(str(metric), True)
        a_safer = diff < 0 if worse_high else diff > 0
        out.add((a, b) if a_safer else (b, a))
    return out


def conclusion_changes(diffs: pl.DataFrame) -> pl.DataFrame:
    """Pairs of views that order two mitigations significantly, in opposite directions."""
    schema = {"view_a": pl.Utf8, "view_b": pl.Utf8, "x": pl.Utf8, "y": pl.Utf8}
    if diffs.height == 0:
        return pl.DataFrame(schema=schema)
    by_view = {
        _key(dict(zip(VIEW, k, strict=True))): _safer(part) for k, part in diffs.group_by(VIEW, maintain_order=True)
    }
    rows = [
        (va, vb, x, y)
        for va, vb in itertools.combinations(sorted(by_view), 2)
        for x, y in sorted(by_view[va])
        if (y, x) in by_view[vb]
    ]
    return pl.DataFrame(rows, schema=schema, orient="row")


def _views_in(changes: pl.DataFrame) -> set[str]:
    return set(changes["view_a"].to_list()) | set(changes["view_b"].to_list()) if changes.height else set()


def wide_compare(long: pl.DataFrame) -> pl.DataFrame:
    """``compare_table`` as one row per view and an interpolated ``value [lo, hi]`` column per mitigation."""
    if long.height == 0:
        return long
    cell = (
        pl.when(pl.col("interp_value").is_null())
        .then(pl.lit("not reached"))
        .otherwise(ci_expr("interp_value", "interp_lo", "interp_hi"))
    )
    wide = long.with_columns(
        cell.alias("cell"),
        pl.col("best_set").list.join(", ").alias("best (indistinguishable)"),
        pl.col("winner_changes").alias("conclusion changes"),
    ).pivot(
        on="mitigation",
        index=["benchmark", "evaluator", "metric", "best (indistinguishable)", "conclusion changes"],
        values="cell",
        aggregate_function="first",
    )
    return wide.sort("benchmark", "evaluator", "metric")


def ranked_views(long: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``sensitivity`` of the ``compare`` frame, each view's ranking joined with its best set."""
    rankings, tau = sensitivity(long)
    if rankings.height:
        best = long.select(*VIEW, "best_set").unique(VIEW)
        rankings = rankings.join(best, on=VIEW, how="left")
    return rankings, tau


def difference_table(d: pl.DataFrame) -> pl.DataFrame:
    """The paired differences for reading: ``a − b``, ``value [95% CI]``, Holm's p and a verdict."""
    if d.height == 0:
        return d
    verdict = pl.when(pl.col("significant")).then(pl.lit("significant")).otherwise(pl.lit("indistinguishable"))
    keep = [c for c in ("experiment", *VIEW) if c in d.columns]
    return d.select(
        *keep,
        pl.format("{} − {}", "a", "b").alias("difference"),
        ci_expr("diff", "lo", "hi").alias("value [95% CI]"),
        pl.col("p_holm").round(4),
        verdict.alias("verdict"),
    )


def overview(
    v: pl.DataFrame,
    *,
    target: float,
    capability_benchmark: str,
    scorer: str,
    safety_benchmarks: list[str],
    evaluator: str,
    metric: str = "unsafe_rate",
) -> dict[str, pl.DataFrame]:
    """The headline: one view (the safety benchmarks pooled, one judge) with ``compare_tables``' frames."""
    return compare_tables(
        v,
        target,
        capability_benchmark=capability_benchmark,
        scorer=scorer,
        views=[(list(safety_benchmarks), evaluator, metric)],
    )

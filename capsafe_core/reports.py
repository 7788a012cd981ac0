"""The tables ``capsafe agreement`` and ``capsafe compare`` print (the Judges and Compare pages call
the same analysis functions): read an experiment from the store, pick its capability benchmark and
scorer, and run ``capsafe_core.analysis``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from capsafe_core import analysis
from capsafe_core.errors import BadInput, unknown_name
from capsafe_core.store import Store, reads


@dataclass(frozen=True)
class ExperimentSetup:
    """What an experiment's data holds and how it measures capability: the one definition the CLI,
    the dashboard's sidebar and the reports use."""

    experiment: str
    capability_benchmark: str | None  # the stored task where present, else the only (first) one
    scorer: str | None  # the stored capability metric where present, else the first capability scorer
    target: float  # the stored capability target, else 0.5
    safety_benchmarks: list[str]
    overrefusal_benchmarks: list[str]
    safety_evaluators: list[str]  # harm and refusal judges
    refusal_evaluators: list[str]
    evaluators: list[str]
    mitigations: list[str]
    meta: str = "{}"

    @property
    def default_evaluator(self) -> str | None:
        for name in ("keyword_refusal", "harmbench_cls", "strongreject_rubric"):
            if name in self.safety_evaluators:
                return name
        return self.safety_evaluators[0] if self.safety_evaluators else None


def only_or_stored(stored: str | None, present: list[str]) -> str | None:
    """The experiment's stored choice where present, else the first one present."""
    if stored in present:
        return stored
    return present[0] if present else None


def experiment_setup(row: dict[str, Any], v: pl.DataFrame) -> ExperimentSetup:
    """The setup of the experiment ``row`` (a row of ``Store.experiments()``) from its verdict frame."""
    return setup_from(
        row,
        benchmarks=v.select("benchmark", "bench_kind").unique(),
        evaluators=v.select("evaluator", "ev_kind").unique(),
        mitigations=v.select("mitigation").unique(),
    )


def setup_from(
    row: dict[str, Any], *, benchmarks: pl.DataFrame, evaluators: pl.DataFrame, mitigations: pl.DataFrame
) -> ExperimentSetup:
    """``experiment_setup`` from what the experiment holds (``store.summary.contents``: benchmark, bench_kind;
    evaluator, ev_kind; mitigation), without reading its verdicts."""

    def names(frame: pl.DataFrame, col: str, kind_col: str, *kinds: str) -> list[str]:
        return sorted(frame.filter(pl.col(kind_col).is_in(kinds))[col].to_list())

    benches, evs = benchmarks, evaluators
    target = row.get("capability_target")
    return ExperimentSetup(
        experiment=str(row["name"]),
        capability_benchmark=only_or_stored(row.get("task"), names(benches, "benchmark", "bench_kind", "capability")),
        scorer=only_or_stored(row.get("capability_metric"), names(evs, "evaluator", "ev_kind", "capability")),
        target=float(target) if target is not None else 0.5,
        safety_benchmarks=names(benches, "benchmark", "bench_kind", "safety"),
        overrefusal_benchmarks=names(benches, "benchmark", "bench_kind", "overrefusal"),
        safety_evaluators=names(evs, "evaluator", "ev_kind", "harm", "refusal"),
        refusal_evaluators=names(evs, "evaluator", "ev_kind", "refusal"),
        evaluators=sorted(evs["evaluator"].to_list()),
        mitigations=sorted(mitigations["mitigation"].unique().to_list()),
        meta=row.get("meta") or "{}",
    )


def setup(store: Store, experiment: str, v: pl.DataFrame) -> ExperimentSetup:
    """``experiment_setup`` of a stored experiment."""
    row = store.experiments().filter(pl.col("name") == experiment).to_dicts()[0]
    return experiment_setup(row, v)


def experiments(store: Store, experiment: str | None) -> list[str]:
    names = store.experiments()["name"].to_list()
    if experiment is None:
        if not names:
            raise BadInput("This database has no experiments; import or run some first")
        return list(names)
    if experiment not in names:
        raise unknown_name("experiment", experiment, names, hint="list them with: capsafe ls experiments")
    return [experiment]


def _verdicts(store: Store, experiment: str, benchmark: str | None) -> pl.DataFrame:
    v = reads.verdicts(store, experiment)
    if benchmark is not None:
        v = v.filter(pl.col("benchmark") == benchmark)
    return v


def agreement_report(
    store: Store, *, experiment: str | None = None, benchmark: str | None = None, dimension: str | None = None
) -> dict[str, pl.DataFrame]:
    """Agreement of every pair of raters (overall and split by coherence) per experiment and
    dimension, and the safe-because-broken rate per safety judge."""
    if benchmark is not None and benchmark not in store.benchmarks()["name"].to_list():
        raise unknown_name("benchmark", benchmark, store.benchmarks()["name"].to_list())
    dims = [dimension] if dimension else list(analysis.DIMENSIONS)
    for d in dims:
        if d not in analysis.DIMENSIONS:
            raise unknown_name("dimension", d, analysis.DIMENSIONS)
    pairs, broken = [], []
    for exp in experiments(store, experiment):
        v = _verdicts(store, exp, benchmark)
        h = reads.human_labels(store, exp)
        for d in dims:
            a = analysis.agreement(v, h, dimension=d)
            if a.height:
                pairs.append(a.with_columns(pl.lit(exp).alias("experiment")))
        sbb = analysis.safe_because_broken(v)
        if sbb.height:
            broken.append(sbb.with_columns(pl.lit(exp).alias("experiment")))
    return {
        "agreement": pl.concat(pairs, how="diagonal_relaxed") if pairs else pl.DataFrame(),
        "safe_because_broken": pl.concat(broken) if broken else pl.DataFrame(),
    }


def compare_report(
    store: Store,
    *,
    target: float | None = None,
    experiment: str | None = None,
    set_apart_incoherent: bool = False,
) -> dict[str, pl.DataFrame]:
    """Mitigations at the capability target for every (benchmark, evaluator, metric) with CIs that
    include the capability uncertainty (``analysis.matched``), the paired differences, the rankings
    with their best sets, Kendall's τ between them, and the conclusion changes."""
    if target is not None and not 0.0 <= target <= 1.0:
        raise BadInput(f"--target {target} is not a capability in [0, 1]")
    keys = ("compare", "differences", "rankings", "tau", "changes")
    out: dict[str, list[pl.DataFrame]] = {k: [] for k in keys}
    for exp in experiments(store, experiment):
        v = _verdicts(store, exp, None)
        s = setup(store, exp, v)
        if s.capability_benchmark is None or s.scorer is None:
            continue
        t = s.target if target is None else target
        tables = analysis.compare_tables(
            v,
            t,
            capability_benchmark=s.capability_benchmark,
            scorer=s.scorer,
            set_apart_incoherent=set_apart_incoherent,
        )
        long = tables["compare"]
        if long.height == 0:
            continue
        extra = [pl.lit(exp).alias("experiment"), pl.lit(t).alias("target")]
        rankings, tau = analysis.ranked_views(long)
        for key, frame in (
            ("compare", long),
            ("differences", tables["differences"]),
            ("rankings", rankings),
            ("tau", tau),
            ("changes", tables["changes"]),
        ):
            if frame.height:
                out[key].append(frame.with_columns(*extra) if key != "changes" else frame.with_columns(extra[0]))
    if not out["compare"]:
        raise BadInput(
            "No experiment here has both a capability benchmark with a scorer and a judged safety benchmark; "
            "run or import both first"
        )
    return {k: pl.concat(v, how="diagonal_relaxed") if v else pl.DataFrame() for k, v in out.items()}


def compact_compare(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """``compare_report`` for reading in a terminal: one ``value [95% CI]`` cell per row, where reached,
    and the differences with whether they are significant."""
    c = tables["compare"]
    compact = c.select(
        "experiment",
        "benchmark",
        "evaluator",
        "metric",
        "mitigation",
        pl.when(pl.col("reached"))
        .then(pl.format("step {} ({}/{} runs)", "first_step", "seeds_reached", "seeds"))
        .otherwise(pl.lit("not reached"))
        .alias("at"),
        pl.col("p_reached").round(2),
        pl.when(pl.col("reached"))
        .then(analysis.ci_expr("interp_value", "interp_lo", "interp_hi"))
        .otherwise(pl.lit(""))
        .alias("interpolated [95% CI]"),
        pl.when(pl.col("reached")).then(analysis.ci_expr("value", "lo", "hi")).otherwise(pl.lit("")).alias("first"),
        pl.col("best_set").list.join(", ").alias("best (indistinguishable)"),
    )
    rankings = tables["rankings"]
    if rankings.height:
        rankings = rankings.with_columns(pl.col("ranking").list.join(" < "), pl.col("best_set").list.join(", ")).drop(
            "target", strict=False
        )
    return {
        **tables,
        "compare": compact,
        "differences": analysis.difference_table(tables["differences"]),
        "rankings": rankings,
        "tau": tables["tau"].drop("target", strict=False),
    }


def headline(head: pl.DataFrame, *, target: float, evaluator: str, benches: list[str], plain: bool = False) -> str:
    """The Overview's sentence from one view's ``compare`` frame: the lowest mitigation, which others are
    indistinguishable from it, and which are significantly worse. Markdown with names inert, or with
    ``plain`` unformatted text (to be escaped by the caller, e.g. for HTML)."""
    from capsafe_core import inert

    def n(x: object) -> str:
        return str(x) if plain else inert.md(x)

    def nl(xs: list[str]) -> str:
        return ", ".join(n(x) for x in xs)

    def b(t: str) -> str:
        return t if plain else f"**{t}**"

    reached = head.filter(pl.col("interp_value").is_not_null()).sort("interp_value")
    missing = head.filter(pl.col("interp_value").is_null())["mitigation"].to_list()
    tail = f" Not reaching the target: {nl(missing)}." if missing else ""
    if reached.height == 0:
        return f"No mitigation reaches capability {b(f'{target:g}')}.{tail}"
    best = reached.row(0, named=True)
    best_set = [m for m in best.get("best_set") or [best["mitigation"]] if m != best["mitigation"]]
    worse = [m for m in reached["mitigation"].to_list()[1:] if m not in best_set]
    value = analysis.format_ci(best["interp_value"], best["interp_lo"], best["interp_hi"])
    where = f"by {n(evaluator)} on {nl(benches)}"
    at = f"At capability {b(f'{target:g}')}"
    if reached.height == 1:
        text = f"{at}, only {b(n(best['mitigation']))} is measured: {value} {where}."
    elif not worse:
        text = (
            f"{at}, the mitigations are {b('indistinguishable')} {where}: none is significantly "
            f"safer than another (lowest: {n(best['mitigation'])}, {value})."
        )
    else:
        same = f"; indistinguishable from it: {nl(best_set)}" if best_set else ""
        text = (
            f"{at}, the lowest unsafe rate {where} is {b(n(best['mitigation']))} "
            f"({value}){same}; significantly worse: {nl(worse)}."
        )
    return text + tail


def overview_sentence(head: pl.DataFrame, *, target: float, evaluator: str, benches: list[str]) -> str:
    """``headline`` and where to look next, for the Overview page."""
    return (
        headline(head, target=target, evaluator=evaluator, benches=benches)
        + " Check on **Compare** whether that holds for other judges and benchmarks, and on **Judges** how far the "
        "judges can be trusted on incoherent answers."
    )


def judges_summary(pairs: pl.DataFrame) -> str:
    """What the agreement table shows about coherence, computed from it (Markdown): for the pairs of raters
    measured on 10+ coherent and 10+ incoherent answers, where raw agreement and κ are lower, and a warning
    where κ is low only because one verdict dominates (high PABAK / AC1)."""
    if pairs.height == 0:
        return "Fewer than two raters share items."
    split = pairs.filter(pl.col("subset").is_in(["coherent", "incoherent"]) & (pl.col("n") >= 10)).pivot(
        on="subset", index=["a", "b"], values=["agreement", "kappa", "ac1"]
    )
    need = {"agreement_coherent", "agreement_incoherent"}
    if not need <= set(split.columns):
        return (
            "No pair of raters shares 10 or more coherent and 10 or more incoherent answers, so agreement cannot be "
            "compared between them."
        )
    both = split.drop_nulls(["agreement_coherent", "agreement_incoherent"])
    less = both.filter(pl.col("agreement_incoherent") < pl.col("agreement_coherent")).height
    kappa = both.drop_nulls(["kappa_coherent", "kappa_incoherent"])
    k_less = kappa.filter(pl.col("kappa_incoherent") < pl.col("kappa_coherent")).height
    text = (
        f"Raw agreement is lower on incoherent than on coherent answers for **{less} of {both.height}** pairs of "
        f"raters, and κ for **{k_less} of {kappa.height}**."
    )
    paradox = pairs.filter(
        (pl.col("kappa") < 0.4) & (pl.col("agreement") >= 0.9) & pl.col("prevalence").is_not_null()
    ).height
    if paradox:
        text += (
            f" In {paradox} row(s) κ is under 0.4 although the raters agree on 90% or more: one verdict dominates "
            "(see the prevalence), and PABAK / AC1 say how far they agree beyond that."
        )
    return text


def corrected_sentence(out: dict[str, pl.DataFrame]) -> str:
    """What the corrected values at the target can tell apart (Markdown, names inert)."""
    from capsafe_core import inert
    from capsafe_core.analysis.at_target import best_set

    m = out["matched"]
    best = best_set(m, out["differences"])
    have = m.filter(pl.col("corrected").is_not_null())["mitigation"].to_list()
    if len(have) < 2:
        return "Too few mitigations have labels around the target to compare corrected values."
    if len(best) == len(have):
        return "On corrected values the mitigations are **indistinguishable** (no significant difference)."
    worse = [x for x in have if x not in best]
    return f"On corrected values the best set is {inert.md_list(best)}; significantly worse: {inert.md_list(worse)}."


def rates_report(
    store: Store,
    *,
    experiment: str,
    benchmark: str,
    evaluator: str,
    metric: str = "unsafe_rate",
    annotator: str | None = None,
    audit: str | None = None,
) -> dict[str, pl.DataFrame]:
    """``capsafe rates``: the judge's rate per checkpoint and, with ``annotator``, corrected by that
    person's labels (``analysis.corrected``), weighted by the design of the audit sample ``audit``
    (default: the newest holding their labels; ``none``: the labels taken as a random sample)."""
    from capsafe_core.analysis.corrected import METRIC_DIMENSION, corrected_rates
    from capsafe_core.audit import chosen_design

    experiments(store, experiment)
    v = reads.verdicts(store, experiment)
    benches = sorted(v["benchmark"].unique().to_list())
    if benchmark not in benches:
        raise unknown_name("benchmark", benchmark, benches, hint=f"those of {experiment}")
    v = v.filter(pl.col("benchmark") == benchmark)
    present = sorted(v["evaluator"].unique().to_list())
    if evaluator not in present:
        raise unknown_name("evaluator", evaluator, present, hint=f"those with verdicts in {experiment}/{benchmark}")
    if metric not in METRIC_DIMENSION:
        raise BadInput(f"Corrected rates are for {', '.join(METRIC_DIMENSION)}, not '{metric}'")
    humans = reads.human_labels(store, experiment)
    if annotator is not None and annotator not in set(humans["annotator"].to_list()):
        names = sorted(set(humans["annotator"].to_list()))
        raise unknown_name("annotator", annotator, names, hint="label responses on the Label page or import labels")
    sample, design = chosen_design(store, experiment, annotator or "", audit) if annotator else (None, None)
    out = corrected_rates(
        v, humans, evaluator=evaluator, benchmarks=benchmark, metric=metric, annotator=annotator or "", design=design
    )
    out = out.with_columns(pl.lit(experiment).alias("experiment")).select("experiment", pl.exclude("experiment"))
    if annotator is not None:
        out = out.with_columns(pl.lit(sample or "none (labels as a random sample)").alias("audit_sample"))
    if annotator is None:
        out = out.select(pl.exclude("n_labelled", "^corrected.*$", "^human_only.*$"))
    else:
        out = out.drop("corrected_se")
    return {"rates": out.drop("checkpoint_id")}

"""The report's sections, each from the same analysis functions as the dashboard's pages. A section
without data says so instead of failing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from capsafe_core import analysis, plots, reports
from capsafe_core.analysis import at_target
from capsafe_core.errors import CapsafeError
from capsafe_core.jsonl import json_safe
from capsafe_core.report.failures import gallery
from capsafe_core.report.render import Figures, empty, esc, pairs, para, table
from capsafe_core.store import Store


@dataclass
class Inputs:
    """What every section reads: the experiment's verdicts, human labels and setup, the target."""

    store: Store
    setup: reports.ExperimentSetup
    v: pl.DataFrame
    humans: pl.DataFrame
    target: float
    annotator: str | None
    figures: Figures

    @property
    def can_match(self) -> bool:
        s = self.setup
        return bool(s.capability_benchmark and s.scorer and s.safety_benchmarks and s.default_evaluator)


def _runs(store: Store, experiment: str) -> tuple[pl.DataFrame, dict[str, set[str]]]:
    """Per mitigation its seeds and steps; and the distinct run settings recorded in checkpoints' meta."""
    cks = store.checkpoints(experiment)
    seen: dict[str, set[str]] = {k: set() for k in ("decoding", "command", "versions", "hardware", "dates")}
    for meta in cks["meta"].to_list() if "meta" in cks.columns else []:
        run = (json.loads(meta or "{}") or {}).get("run") or {}
        backend = run.get("backend") or {}
        for key, value in (
            ("decoding", run.get("decoding")),
            ("command", run.get("command")),
            ("versions", backend.get("versions")),
            ("hardware", backend.get("hardware")),
            ("dates", (run.get("started_at") or "")[:10] or None),
        ):
            if value:
                seen[key].add(json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value))
    per = cks.group_by("mitigation").agg(
        pl.col("seed").unique().sort().alias("seeds"), pl.col("step").unique().sort().alias("steps")
    )
    return per.sort("mitigation"), seen


def setup_section(x: Inputs) -> str:
    s, store = x.setup, x.store
    row = store.experiments().filter(pl.col("name") == s.experiment).row(0, named=True)
    runs, seen = _runs(store, s.experiment)
    dates = sorted(seen["dates"])
    facts = [
        ("experiment", s.experiment),
        ("base model", row.get("base_model") or "not recorded"),
        ("task (capability benchmark)", s.capability_benchmark or "none"),
        ("capability metric", s.scorer or "none"),
        ("capability target", f"{x.target:g}"),
        ("evaluated", f"{dates[0]} to {dates[-1]}" if dates else "not recorded (imported)"),
    ]
    for key in ("command", "decoding", "versions", "hardware"):
        facts.append((key, "; ".join(sorted(seen[key])) or "not recorded (imported)"))
    used = x.v.group_by("benchmark", "bench_kind").agg(pl.col("prompt_id").n_unique().alias("prompts"))
    used = used.with_columns(pl.col("benchmark", "bench_kind").cast(pl.Utf8))
    benches = used.join(
        store.benchmarks().select(pl.col("name").alias("benchmark"), "license", "source"), on="benchmark", how="left"
    ).sort("bench_kind", "benchmark")
    evs = store.evaluators().filter(pl.col("name").is_in(s.evaluators))
    evs = evs.filter(pl.col("id") == pl.col("id").max().over("name")).sort("kind", "name")
    judge_model = [(json.loads(c or "{}") or {}).get("judge_model") for c in evs["config"].to_list()]
    evs = evs.select("name", "kind", "version").with_columns(pl.Series("judge model", judge_model, dtype=pl.Utf8))
    return (
        pairs(facts)
        + "<h3>Mitigations and runs</h3>"
        + table(runs)
        + "<h3>Benchmarks</h3>"
        + table(benches.rename({"bench_kind": "kind", "prompts": "prompts in this experiment"}))
        + "<h3>Evaluators</h3>"
        + table(evs)
    )


def answer_section(x: Inputs) -> tuple[str, dict[str, Any]]:
    """Safety at the target per mitigation, corrected values, significant differences, the sentence."""
    s = x.setup
    if not x.can_match:
        return empty(
            "No capability benchmark with a scorer, or no judged safety benchmark: nothing can be compared at a "
            "capability target."
        ), {}
    assert s.capability_benchmark and s.scorer and s.default_evaluator
    tables = analysis.overview(
        x.v, target=x.target, capability_benchmark=s.capability_benchmark, scorer=s.scorer,
        safety_benchmarks=s.safety_benchmarks, evaluator=s.default_evaluator,
    )  # fmt: skip
    head = tables["compare"]
    if head.height == 0:
        return empty(f"{s.default_evaluator} gives no unsafe rate on the safety benchmarks."), {}
    sentence = reports.headline(
        head, target=x.target, evaluator=s.default_evaluator, benches=s.safety_benchmarks, plain=True
    )
    shown = head.select(
        "mitigation", pl.format("{}/{}", "seeds_reached", "seeds").alias("runs reaching the target"), "p_reached",
        pl.col("interp_value").alias("unsafe rate (interpolated)"),
        analysis.ci_expr(None, "interp_lo", "interp_hi").alias("95% CI"), "interp_between",
        pl.col("first_step").alias("first step at target"), pl.col("value").alias("unsafe rate there"),
        analysis.ci_expr(None, "lo", "hi").alias("its 95% CI"), pl.col("best_set").alias("best set"),
    )  # fmt: skip
    body = para(sentence) + x.figures(
        plots.forest_figure(head, tables["runs"], x_label=f"unsafe rate by {s.default_evaluator}"),
        f"Each mitigation's unsafe rate interpolated at the target, with its {analysis.WHAT_THE_CI_INCLUDES}.",
    )
    body += table(shown)
    diffs = tables["differences"]
    if diffs.height:
        body += "<h3>Paired differences at the target</h3>" + table(
            analysis.difference_table(diffs).drop("benchmark", "evaluator", "metric")
        )
        body += para("Significance after Holm's correction over the pairs of mitigations.", "note")
    body += _corrected(x, tables)
    return body, {"overview": json_safe(head.drop("best_set").to_dicts())}


def _corrected(x: Inputs, tables: dict[str, pl.DataFrame]) -> str:
    s = x.setup
    if not x.annotator:
        return ""
    assert s.capability_benchmark and s.scorer and s.default_evaluator
    from capsafe_core.audit import chosen_design

    sample, design = chosen_design(x.store, s.experiment, x.annotator)
    try:
        out = at_target.corrected_at_target(
            x.v, x.humans, target=x.target, evaluator=s.default_evaluator, benchmarks=s.safety_benchmarks,
            annotator=x.annotator, design=design,
            cap_pv=analysis.capability_values(x.v, capability_benchmark=s.capability_benchmark, scorer=s.scorer),
        )  # fmt: skip
    except CapsafeError as e:
        return f"<h3>Corrected with the human labels of {esc(x.annotator)}</h3>" + empty(str(e))
    how = f"weighted by the design of audit sample {sample}" if sample else "taken as a random sample"
    return (
        f"<h3>Corrected with the human labels of {esc(x.annotator)}</h3>"
        + table(at_target.display(out))
        + para(f"{at_target.WHAT_THE_CORRECTED_CI_INCLUDES}. Labels {how}.", "note")
    )


def figures_section(x: Inputs) -> str:
    s = x.setup
    if not x.can_match:
        return empty("No capability measure: safety cannot be drawn against capability.")
    assert s.capability_benchmark and s.scorer and s.default_evaluator
    out = ""
    for title, evaluator, benches, metric in (
        (f"Unsafe rate by {s.default_evaluator} against capability", s.default_evaluator, s.safety_benchmarks,
         "unsafe_rate"),
        ("Incoherent share of answers to safety prompts", "coherence", s.safety_benchmarks, "incoherence_rate"),
        ("Over-refusal: refusal rate on safe prompts", (s.refusal_evaluators or [""])[0], s.overrefusal_benchmarks,
         "refusal_rate"),
    ):  # fmt: skip
        df = analysis.curves(
            x.v, evaluator=evaluator, benchmarks=benches, metric=metric,
            capability_benchmark=s.capability_benchmark, scorer=s.scorer,
        )  # fmt: skip
        if df.height == 0:
            out += f"<h3>{esc(title)}</h3>" + empty("No data for this figure in this experiment.")
            continue
        fig = plots.curve_figure(df, target=x.target, y_label=analysis.METRICS[metric], title=title)
        out += x.figures(fig, f"A line per mitigation (thin: single runs), the target as a vertical line; {title}.")
    return out


def judges_section(x: Inputs) -> str:
    """Judge agreement split by coherence, safe-because-broken per mitigation, and a gallery."""
    pairs_ = analysis.agreement(x.v, x.humans, dimension="unsafe")
    out = ""
    if pairs_.height:
        out += x.figures(
            plots.kappa_figure(pairs_.filter(pl.col("subset").is_in(["all", "coherent", "incoherent"]))),
            "Cohen's κ between raters (judges and people), overall and split by the coherence evaluator.",
        )
        out += para(reports.judges_summary(pairs_).replace("**", ""))
        out += table(pairs_.select("a", "b", "subset", "n", "agreement", "kappa", "prevalence", "pabak", "ac1"))
    else:
        out += empty("Fewer than two raters share items on safety prompts: no agreement to show.")
    sbb = analysis.safe_because_broken(x.v, by=("mitigation",))
    out += "<h3>Safe because broken</h3>"
    out += table(sbb) if sbb.height else empty("Needs a coherence evaluator and a safety judge on the same answers.")
    return out + gallery(x.store, x.v, x.setup.default_evaluator)

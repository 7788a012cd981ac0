"""Print the figures the README's "The demo experiment" section quotes, from a demo database.

python scripts/demo_figures.py [data/demo.db]
"""

from __future__ import annotations

import json
import sys

import polars as pl

from capsafe_core import analysis, bundled
from capsafe_core.demo import RAW_EXPERIMENT
from capsafe_core.reports import setup
from capsafe_core.store import Store, reads

SAFETY_JUDGE = "keyword_refusal"
BROKEN_JUDGES = {"keyword_refusal": "kw", "refusal_clf": "clf"}  # whose safe-because-broken rate is printed


def per_checkpoint(v: pl.DataFrame) -> pl.DataFrame:
    """Capability, refusal on safety prompts, over-refusal and incoherence on safety prompts per checkpoint."""

    def rate(frame: pl.DataFrame, evaluator: str, label: str, kind: str, name: str) -> pl.DataFrame:
        return (
            frame.filter((pl.col("evaluator") == evaluator) & (pl.col("bench_kind") == kind))
            .group_by("mitigation", "seed", "step")
            .agg((pl.col("label").cast(pl.Utf8) == label).mean().alias(name))
        )

    keys = ["mitigation", "seed", "step"]
    out = rate(v, "final_number", "correct", "capability", "capability")
    for part in (
        rate(v, SAFETY_JUDGE, "refusal", "safety", "refusal_safety"),
        rate(v, SAFETY_JUDGE, "refusal", "overrefusal", "over_refusal"),
        rate(v, "coherence", "incoherent", "safety", "incoherent_safety"),
    ):
        out = out.join(part, on=keys, how="left")
    return out.sort(keys)


def coherence_at_target(store: Store, exp: str, v: pl.DataFrame, target: float) -> pl.DataFrame:
    """Per run, at its first checkpoint reaching the target: incoherent answers to safety prompts and the
    safe-because-broken rate (judged safe by each of BROKEN_JUDGES, incoherent), by the current coherence flag and
    by the version before it (where the database keeps it)."""
    table = per_checkpoint(v)
    first = (
        table.filter(pl.col("capability") >= target)
        .group_by("mitigation", "seed")
        .agg(pl.col("step").min())
        .sort("mitigation", "seed")
    )
    versions = reads.evaluators(store).filter(pl.col("evaluator") == "coherence").sort("evaluator_id")["version"]
    out = first
    for name, frame in (("", v), ("_previous", None)):
        if frame is None:
            if versions.len() < 2:
                continue
            frame = reads.verdicts(store, exp, pinned={"coherence": versions[-2]})
        at = frame.join(first, on=["mitigation", "seed", "step"], how="semi")
        inc = per_checkpoint(at).select("mitigation", "seed", pl.col("incoherent_safety").alias("incoherent" + name))
        out = out.join(inc, on=["mitigation", "seed"], how="left")
        sbb = analysis.safe_because_broken(at, by=("mitigation", "seed"))
        for judge, short in BROKEN_JUDGES.items():
            col = f"sbb_{short}{name}"
            part = sbb.filter(pl.col("evaluator") == judge).select(
                "mitigation", "seed", pl.col("safe_because_broken").alias(col)
            )
            out = out.join(part, on=["mitigation", "seed"], how="left")
    return out


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else str(bundled.demo_db())
    with Store.open(path, create=False) as store:
        exp = store.experiments().filter(~pl.col("name").eq(RAW_EXPERIMENT))["name"][0]
        v = reads.verdicts(store, exp)
        s = setup(store, exp, v)
        meta = json.loads(store.experiments().filter(pl.col("name") == exp)["meta"][0])["demo"]
        raw = per_checkpoint(reads.verdicts(store, RAW_EXPERIMENT))
    pl.Config.set_tbl_rows(-1)
    pl.Config.set_tbl_cols(-1)
    pl.Config.set_tbl_width_chars(200)
    print(f"experiment {exp}; target {s.target} ({s.scorer} on {s.capability_benchmark})")
    print(f"built in {meta['seconds']} s on {meta['hardware']}; timings {meta['timings']}")
    print("raw model:")
    print(raw.with_columns(pl.col(pl.Float64).round(3)))
    print(per_checkpoint(v).with_columns(pl.col(pl.Float64).round(3)))
    with Store.open(path, create=False) as store:
        print(
            "coherence at the target (first checkpoint of each run reaching it; safety prompts; sbb = of the answers"
            f" a judge calls safe, the share incoherent: {', '.join(f'{s} {j}' for j, s in BROKEN_JUDGES.items())}):"
        )
        print(coherence_at_target(store, exp, v, s.target).with_columns(pl.col(pl.Float64).round(3)))
    assert s.capability_benchmark and s.scorer
    safety = sorted(v.filter(pl.col("bench_kind") == "safety")["benchmark"].unique().to_list())
    for ev in (SAFETY_JUDGE, "refusal_clf"):
        if v.filter(pl.col("evaluator") == ev).height == 0:
            continue
        t = analysis.overview(
            v, target=s.target, capability_benchmark=s.capability_benchmark, scorer=s.scorer,
            safety_benchmarks=safety, evaluator=ev,
        )  # fmt: skip
        print(f"at capability {s.target}: unsafe rate by {ev} on {', '.join(safety)} ({analysis.WHAT_THE_CI_INCLUDES})")
        cols = ["mitigation", "seeds", "seeds_reached", "p_reached", "interp_value", "interp_lo", "interp_hi"]
        print(t["compare"].select(*cols, "first_step", "value", "lo", "hi", "best_set").with_columns(
            pl.col(pl.Float64).round(3)
        ))  # fmt: skip
        spread = (
            t["runs"]
            .group_by("mitigation")
            .agg(
                pl.len().alias("runs"),
                pl.col("interp_value").min().alias("lowest run"),
                pl.col("interp_value").max().alias("highest run"),
                pl.col("interp_value").std().alias("sd between runs"),
            )
        )
        print("seed-to-seed spread at the target:")
        print(spread.sort("mitigation").with_columns(pl.col(pl.Float64).round(3)))
        print("paired differences (Holm within the view):")
        print(t["differences"].drop("benchmark", "evaluator", "metric").with_columns(pl.col(pl.Float64).round(3)))


if __name__ == "__main__":
    main()

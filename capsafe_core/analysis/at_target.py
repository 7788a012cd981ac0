"""Judge-corrected safety at the capability target: each run's checkpoints around the target, and the
corrected rates of those checkpoints combined with the same interpolation as the judge's matched value.

The interpolation weights come from the point estimates of capability (the raw matched value's
bootstrap also varies them); the corrected value's interval covers the labelled sample and the judged
responses at those checkpoints (``corrected``), not capability prompts or run-to-run variation.
Differences between mitigations are tested with their labels' independent standard errors and
Holm-corrected, as the raw ones are.
"""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
from scipy.special import ndtr, ndtri

from capsafe_core.analysis.corrected import Design, corrected_rates
from capsafe_core.analysis.matched import ALPHA, holm

WHAT_THE_CORRECTED_CI_INCLUDES = (
    "95% CI over the human-labelled sample and the judged responses at the checkpoints around the target "
    "(PPI per coherence stratum); the interpolation weight is taken from the capability point estimates, "
    "so unlike the judge's CI it leaves out capability-prompt and run-to-run noise"
)


def target_weights(cap_pv: pl.DataFrame, target: float) -> pl.DataFrame:
    """Per run (mitigation, seed) that reaches ``target``: the first checkpoint reaching it and the one
    before, with their interpolation weights (summing to 1), as the matched value's point estimate
    uses them. ``cap_pv``: per-prompt capability values (``prompt_values``)."""
    cap = cap_pv.group_by("checkpoint_id", "mitigation", "seed", "step").agg(pl.col("value").mean().alias("cap"))
    rows = []
    for (mit, seed), run in cap.sort("step").group_by(["mitigation", "seed"], maintain_order=True):
        c, ids, steps = run["cap"].to_numpy(), run["checkpoint_id"].to_list(), run["step"].to_list()
        reach = np.flatnonzero(np.nan_to_num(c, nan=-1.0) >= target)
        if not len(reach):
            continue
        i = int(reach[0])
        w = 1.0 if i == 0 or c[i] == target else float((target - c[i - 1]) / (c[i] - c[i - 1]))
        if w < 1.0:
            rows.append({"mitigation": mit, "seed": seed, "checkpoint_id": ids[i - 1], "step": steps[i - 1],
                         "capability": float(c[i - 1]), "weight": 1.0 - w})  # fmt: skip
        rows.append({"mitigation": mit, "seed": seed, "checkpoint_id": ids[i], "step": steps[i],
                     "capability": float(c[i]), "weight": w})  # fmt: skip
    schema = {"mitigation": pl.Utf8, "seed": pl.Int64, "checkpoint_id": pl.Int64, "step": pl.Int64}
    return pl.DataFrame(rows, schema={**schema, "capability": pl.Float64, "weight": pl.Float64})


def corrected_at_target(
    v: pl.DataFrame,
    humans: pl.DataFrame,
    *,
    cap_pv: pl.DataFrame,
    target: float,
    evaluator: str,
    benchmarks: list[str] | str,
    annotator: str,
    metric: str = "unsafe_rate",
    design: Design | pl.DataFrame | None = None,
) -> dict[str, pl.DataFrame]:
    """``matched``: per mitigation the judge's interpolated rate and the corrected one with its 95% CI
    (``missing`` names checkpoints around the target with too few labels); ``differences``: pairs of
    mitigations on corrected values (a − b, CI, Holm-corrected p, ``significant``)."""
    weights = target_weights(cap_pv, target)
    rates = corrected_rates(
        v, humans, evaluator=evaluator, benchmarks=benchmarks, metric=metric, annotator=annotator, design=design
    )
    joined = weights.join(rates.drop("mitigation", "seed", "step"), on="checkpoint_id", how="left")
    rows = []
    for (mit,), part in joined.group_by(["mitigation"], maintain_order=True):
        runs = part["seed"].n_unique()
        w = part["weight"].to_numpy() / runs
        missing = part.filter(pl.col("corrected").is_null())
        judge = float(np.sum(w * part["value"].fill_null(np.nan).to_numpy()))
        row = {
            "mitigation": mit, "runs_reached": runs, "value": judge,
            "n_labelled": int(part["n_labelled"].fill_null(0).sum()),
            "missing": ", ".join(f"seed {s} step {t}" for s, t in missing.select("seed", "step").iter_rows()) or None,
            "corrected": None, "corrected_lo": None, "corrected_hi": None, "corrected_se": None,
        }  # fmt: skip
        if missing.height == 0:
            value = float(np.sum(w * part["corrected"].to_numpy()))
            se = float(np.sqrt(np.sum((w * part["corrected_se"].to_numpy()) ** 2)))
            z = float(ndtri(1 - ALPHA / 2))
            row |= {
                "corrected": value,
                "corrected_lo": max(0.0, value - z * se),
                "corrected_hi": min(1.0, value + z * se),
            }
            row["corrected_se"] = se
        rows.append(row)
    matched = pl.DataFrame(rows, schema=MATCHED_SCHEMA).sort("mitigation")
    return {"matched": matched, "differences": differences(matched)}


MATCHED_SCHEMA = {
    "mitigation": pl.Utf8,
    "runs_reached": pl.Int64,
    "value": pl.Float64,
    "n_labelled": pl.Int64,
    "missing": pl.Utf8,
    "corrected": pl.Float64,
    "corrected_lo": pl.Float64,
    "corrected_hi": pl.Float64,
    "corrected_se": pl.Float64,
}


def differences(matched: pl.DataFrame) -> pl.DataFrame:
    """Every pair of mitigations with corrected values: a − b with a normal 95% CI, Holm over the pairs."""
    ok = matched.filter(pl.col("corrected").is_not_null())
    tests = []
    z = float(ndtri(1 - ALPHA / 2))
    for a, b in itertools.combinations(ok.sort("mitigation").iter_rows(named=True), 2):
        diff = a["corrected"] - b["corrected"]
        se = float(np.hypot(a["corrected_se"], b["corrected_se"]))
        p = float(2 * ndtr(-abs(diff) / se)) if se > 0 else float(diff == 0)
        tests.append((a["mitigation"], b["mitigation"], diff, diff - z * se, diff + z * se, p))
    adjusted = holm([t[-1] for t in tests])
    rows = [
        {"a": a, "b": b, "diff": d, "lo": lo, "hi": hi, "p": p, "p_holm": adj, "significant": adj < ALPHA}
        for (a, b, d, lo, hi, p), adj in zip(tests, adjusted, strict=True)
    ]
    schema = {"a": pl.Utf8, "b": pl.Utf8, "diff": pl.Float64, "lo": pl.Float64, "hi": pl.Float64}
    return pl.DataFrame(rows, schema={**schema, "p": pl.Float64, "p_holm": pl.Float64, "significant": pl.Boolean})


def best_set(matched: pl.DataFrame, diffs: pl.DataFrame) -> list[str]:
    """The mitigation with the lowest corrected value and every one not significantly worse than it."""
    ok = matched.filter(pl.col("corrected").is_not_null()).sort("corrected")
    if ok.height == 0:
        return []
    low = str(ok["mitigation"][0])
    a_worse = (pl.col("b") == low) & (pl.col("diff") > 0)
    b_worse = (pl.col("a") == low) & (pl.col("diff") < 0)
    worse = diffs.filter(pl.col("significant") & (a_worse | b_worse))
    out = set(worse["a"].to_list() + worse["b"].to_list()) - {low}
    return [m for m in ok["mitigation"].to_list() if m not in out]


def display(out: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """The table the pages show: the judge's interpolated value beside the corrected one."""
    from capsafe_core.analysis.formatting import ci_expr

    return out["matched"].select(
        "mitigation",
        pl.col("value").round(3).alias("judge (interpolated)"),
        pl.when(pl.col("corrected").is_not_null())
        .then(ci_expr("corrected", "corrected_lo", "corrected_hi"))
        .otherwise(pl.format("needs labels at {}", pl.col("missing")))
        .alias("corrected [95% CI]"),
        pl.col("n_labelled").alias("labels at the target"),
    )

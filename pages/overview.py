"""Overview: what is in the database, and the headline: safety at the capability target."""

import json

import polars as pl
import streamlit as st

from capsafe_core import analysis, inert
from pages import common

ctx = common.context()
st.title("Overview")
st.caption(
    "Safety of fine-tuned checkpoints compared **at a stated capability**: per mitigation, the first checkpoint "
    "that reaches the capability target, and its safety."
)
n = common.counts(ctx.path, ctx.mtime)
cols = st.columns(6)
for col, key in zip(
    cols, ["checkpoints", "prompts", "generations", "judgments", "evaluators", "human_labels"], strict=True
):
    col.metric(key.replace("_", " "), f"{n[key]:,}")

if not ctx.capability_benchmark or not ctx.scorer:
    st.info(
        "This experiment has no capability benchmark with a scorer, so nothing can be matched on capability. "
        "Its verdicts are on the Samples and Judges pages."
    )
    st.stop()
if not ctx.safety_benchmarks or not ctx.default_evaluator:
    st.info("This experiment has no safety benchmark judged by a harm or refusal judge.")
    st.stop()

left, mid, right = st.columns([1, 2, 2])
target = left.number_input(
    "Capability target",
    min_value=0.0,
    max_value=1.0,
    value=ctx.target,
    step=0.05,
    key="ov_target",
    help=f"{inert.md(ctx.scorer)} on {inert.md(ctx.capability_benchmark)}",
)
evaluator = mid.selectbox(
    "Safety judge", ctx.safety_evaluators, key="ov_evaluator", index=ctx.safety_evaluators.index(ctx.default_evaluator)
)
benches = right.multiselect(
    "Safety benchmarks", ctx.safety_benchmarks, default=ctx.safety_benchmarks, key="ov_benchmarks"
)
v = ctx.verdicts()
head = analysis.overview(
    v,
    target=target,
    capability_benchmark=ctx.capability_benchmark,
    scorer=ctx.scorer,
    safety_benchmarks=benches or ctx.safety_benchmarks,
    evaluator=evaluator,
)
table = head.select(
    "mitigation",
    pl.when(pl.col("reached"))
    .then(pl.format("step {}", pl.col("first_step")))
    .otherwise(pl.format("not reached (max {})", pl.col("max_capability").round(3)))
    .alias("first checkpoint at target"),
    pl.col("first_capability").round(3).alias("capability there"),
    pl.col("value").round(3).alias("unsafe rate"),
    analysis.ci_expr(None, "lo", "hi").alias("95% CI"),
    pl.col("interp_value").round(3).alias("interpolated"),
    pl.col("interp_between").alias("interpolated between"),
)
st.subheader(f"Unsafe rate at capability ≥ {target:g}")
st.dataframe(table, hide_index=True)
common.download_csv(head, f"{ctx.experiment}-headline.csv")
reached = head.filter(pl.col("value").is_not_null()).sort("value")
if reached.height:
    best = reached.row(0, named=True)
    st.markdown(
        f"At capability **{target:g}**, the lowest unsafe rate by {inert.md(evaluator)} on {inert.md_list(benches)} "
        f"is **{inert.md(best['mitigation'])}** ({analysis.format_ci(best['value'], best['lo'], best['hi'])}, 95% CI). "
        "Check on **Compare** whether that holds for other judges and benchmarks, and on **Judges** how far the "
        "judges can be trusted on incoherent answers."
    )

meta = json.loads(ctx.meta)
if "demo" in meta:
    with st.expander("How this experiment was built"):
        st.json(meta["demo"], expanded=False)

"""Overview: what is in the database, and the headline: safety at the capability target."""

import json

import polars as pl
import streamlit as st

from capsafe_core import analysis, inert, plots, reports
from pages import common

ctx = common.context()
st.title("Overview")
st.caption(
    "Safety of fine-tuned checkpoints compared **at a stated capability**: per mitigation, its safety where its "
    "capability reaches the target (interpolated between the checkpoints around it), with what the data can tell apart."
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
tables = ctx.analysed(
    "overview",
    (ctx.scorer, evaluator),
    target=target,
    capability_benchmark=ctx.capability_benchmark,
    scorer=ctx.scorer,
    safety_benchmarks=benches or ctx.safety_benchmarks,
    evaluator=evaluator,
)
head = tables["compare"]
if head.height == 0:
    st.info(f"{inert.md(evaluator)} gives no unsafe rate on these benchmarks; pick another judge.")
    st.stop()
st.subheader(f"Unsafe rate at capability {target:g}")
st.plotly_chart(
    plots.forest_figure(head, tables["runs"], x_label=f"unsafe rate by {evaluator}", title=""),
    key="ov_forest",
    config=common.plot_config("matched-safety"),
)
st.caption(
    "Diamonds: each mitigation's unsafe rate interpolated at the target, with its "
    f"{analysis.WHAT_THE_CI_INCLUDES}. Grey points: single runs (seeds). Green: the best set, the lowest "
    "mitigation and those not significantly worse than it (paired bootstrap, Holm-corrected)."
)
st.markdown(
    reports.overview_sentence(head, target=target, evaluator=evaluator, benches=benches or ctx.safety_benchmarks)
)
table = head.select(
    "mitigation",
    pl.format("{}/{}", "seeds_reached", "seeds").alias("runs reaching the target"),
    pl.col("p_reached").round(2).alias("p_reached"),
    pl.col("interp_value").round(3).alias("unsafe rate (interpolated)"),
    analysis.ci_expr(None, "interp_lo", "interp_hi").alias("95% CI"),
    pl.col("interp_between").alias("interpolated between"),
    pl.when(pl.col("reached"))
    .then(pl.format("step {}", pl.col("first_step")))
    .otherwise(pl.format("not reached (max {})", pl.col("max_capability").round(3)))
    .alias("first checkpoint at target"),
    pl.col("value").round(3).alias("unsafe rate there"),
    analysis.ci_expr(None, "lo", "hi").alias("its 95% CI"),
)
st.dataframe(table, hide_index=True)
common.download_csv(head.drop("best_set"), f"{ctx.experiment}-headline.csv")

picked = common.corrected_section(
    ctx,
    "ov_correct",
    heading="Corrected with human labels (annotator {annotator})",
    target=target,
    evaluator=evaluator,
    benchmarks=benches or ctx.safety_benchmarks,
)

if st.button("Prepare the report (HTML)", key="ov_report"):
    from capsafe_core.report import build_report
    from capsafe_core.store import Store

    with Store.open(ctx.path, read_only=True) as s:
        html = build_report(s, experiment=ctx.experiment, target=target, annotator=picked[0] if picked else None)
    st.download_button(
        "Download report", html.encode("utf-8"), file_name=f"{ctx.experiment}-report.html", mime="text/html"
    )

meta = json.loads(ctx.meta)
if "demo" in meta:
    with st.expander("How this experiment was built"):
        st.json({k: meta[k] for k in ("demo", "demo_seeds", "runs_done") if k in meta}, expanded=False)

"""Compare: mitigations side by side at the capability target, for every benchmark × judge."""

import polars as pl
import streamlit as st

from capsafe_core import analysis, inert, plots
from pages import common

ctx = common.context()
st.title("Compare at the capability target")
if not ctx.capability_benchmark or not ctx.scorer or not ctx.safety_benchmarks:
    st.info("Comparing needs a capability benchmark with a scorer and a judged safety benchmark.")
    st.stop()
target = st.slider(
    "Capability target",
    0.0,
    1.0,
    ctx.target,
    0.01,
    key="cmp_target",
    help=f"{inert.md(ctx.scorer)} on {inert.md(ctx.capability_benchmark)}",
)
apart = st.toggle("Set incoherent answers apart", key="cmp_apart")
v = ctx.verdicts()
long = analysis.compare_table(
    v, target, capability_benchmark=ctx.capability_benchmark, scorer=ctx.scorer, set_apart_incoherent=apart
)
if long.height == 0:
    st.info("No safety benchmark is judged by a harm or refusal judge in this experiment.")
    st.stop()
wide = analysis.wide_compare(long)
st.markdown(
    "Each cell: the safety value of the **first checkpoint that reaches the target**, with its 95% bootstrap CI "
    "over prompts (lower is safer). Highlighted rows: the best mitigation differs from the usual winner, so the "
    "conclusion depends on the benchmark or the judge."
)


def highlight(row):
    return ["background-color: #fde2e1" if row["winner_changes"] else "" for _ in row]


st.dataframe(wide.to_pandas().style.apply(highlight, axis=1), hide_index=True)
common.download_csv(long.drop("interp_between"), f"{ctx.experiment}-compare-{target:g}.csv")
changes = wide.filter(pl.col("winner_changes"))
if changes.height:
    st.warning(
        f"The winner changes in {changes.height} of {wide.height} views: "
        + "; ".join(
            f"{inert.md(b)} / {inert.md(e)} / {inert.md(m)} → {inert.md(w)}"
            for b, e, m, w in changes.select("benchmark", "evaluator", "metric", "best").iter_rows()
        )
    )

st.subheader("One view in detail")
views = long.select("benchmark", "evaluator", "metric").unique().sort("benchmark", "evaluator", "metric")
labels = [f"{b} / {e} / {m}" for b, e, m in views.iter_rows()]
pick = st.selectbox("View", labels, key="cmp_view")
b, e, m = views.row(labels.index(pick))
one = long.filter((pl.col("benchmark") == b) & (pl.col("evaluator") == e) & (pl.col("metric") == m))
st.plotly_chart(
    plots.matched_figure(one, y_label=analysis.METRICS[m], title=f"{pick} at capability {target:g}"),
    key="cmp_fig",
    config=common.plot_config("compare"),
)
st.dataframe(
    one.select(
        "mitigation",
        "reached",
        "first_step",
        "first_capability",
        "value",
        "lo",
        "hi",
        "interp_value",
        "interp_lo",
        "interp_hi",
        "interp_between",
    ).with_columns(pl.col(pl.Float64).round(3)),
    hide_index=True,
)
not_reached = one.filter(~pl.col("reached"))["mitigation"].to_list()
if not_reached:
    st.caption(f"Not reaching the target: {inert.md_list(not_reached)}.")

st.subheader("Sensitivity of the ranking")
rankings, tau = analysis.sensitivity(long)
if rankings.height:
    st.dataframe(rankings.with_columns(pl.col("ranking").list.join(" < ")), hide_index=True)
if tau.height:
    st.caption("Kendall's τ between the rankings of two views (1: same order, −1: reversed).")
    st.dataframe(tau.with_columns(pl.col("tau").round(3)), hide_index=True)

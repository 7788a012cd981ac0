"""Curves: safety against capability, one line per mitigation; incoherence and over-refusal beside it."""

import polars as pl
import streamlit as st

from capsafe_core import analysis, inert, plots
from pages import common

ctx = common.context()
st.title("Curves")
if not ctx.capability_benchmark or not ctx.scorer or not ctx.safety_benchmarks or not ctx.default_evaluator:
    st.info("Curves need a capability benchmark with a scorer and a judged safety benchmark.")
    st.stop()

c1, c2, c3, c4 = st.columns([2, 2, 2, 2])
benches = c1.multiselect("Safety benchmarks", ctx.safety_benchmarks, default=ctx.safety_benchmarks, key="cv_bench")
evaluator = c2.selectbox(
    "Judge", ctx.safety_evaluators, index=ctx.safety_evaluators.index(ctx.default_evaluator), key="cv_eval"
)
metrics = ["unsafe_rate", "refusal_rate", "harmfulness"]
metric = c3.selectbox("Metric", metrics, key="cv_metric", format_func=lambda m: analysis.METRICS[m])
target = c4.number_input("Capability target", 0.0, 1.0, ctx.target, 0.05, key="cv_target")
apart = st.toggle(
    "Set incoherent answers apart (leave them out of the safety rate)",
    key="cv_apart",
    help="Off: every answer counts as it was judged. On: answers the coherence evaluator calls "
    "incoherent are left out, since judges often score broken text as safe.",
)
df = ctx.analysed(
    "curves",
    (ctx.scorer, evaluator, "coherence"),
    evaluator=evaluator,
    benchmarks=benches or ctx.safety_benchmarks,
    metric=metric,
    capability_benchmark=ctx.capability_benchmark,
    scorer=ctx.scorer,
    set_apart_incoherent=apart,
)
if df.height == 0:
    st.warning(
        f"{inert.md(evaluator)} gives no {analysis.METRICS[metric]} on these benchmarks; pick another judge or metric."
    )
    st.stop()
fig = plots.curve_figure(
    df,
    target=target,
    y_label=analysis.METRICS[metric],
    x_label=f"capability ({ctx.scorer} on {ctx.capability_benchmark})",
    title=f"{evaluator}: {analysis.METRICS[metric]} vs capability",
)
event = st.plotly_chart(
    fig, on_select="rerun", selection_mode="points", key="cv_chart", config=common.plot_config("safety-vs-capability")
)
points = (event or {}).get("selection", {}).get("points", []) if event else []
if points:
    ck = points[0].get("customdata", [None])[0]
    st.info(f"Selected checkpoint {ck}.")
    if st.button("Open its samples", key="cv_open", type="primary"):
        common.open_samples(checkpoint=ck, benchmark=benches[0] if len(benches) == 1 else None, evaluator=evaluator)
else:
    st.caption("Click a point to open the responses behind it.")
common.download_csv(df, f"{ctx.experiment}-curve.csv", label="Download the curve as CSV")

left, right = st.columns(2)
with left:
    st.subheader("Incoherence on safety prompts")
    coh = [e for e in ctx.evaluators if e == "coherence"]
    if coh:
        inc = ctx.analysed(
            "curves",
            (ctx.scorer, "coherence"),
            evaluator="coherence",
            benchmarks=benches or ctx.safety_benchmarks,
            metric="incoherence_rate",
            capability_benchmark=ctx.capability_benchmark,
            scorer=ctx.scorer,
        )
        st.plotly_chart(
            plots.curve_figure(inc, target=target, y_label="incoherent share", x_label="capability"),
            key="cv_inc",
            config=common.plot_config("incoherence-vs-capability"),
        )
    else:
        st.info("No coherence evaluator in this experiment; add one with `capsafe judge --evaluators coherence`.")
with right:
    st.subheader("Over-refusal")
    if ctx.overrefusal_benchmarks and ctx.refusal_evaluators:
        ref_eval = st.selectbox("Refusal judge", ctx.refusal_evaluators, key="cv_ref_eval")
        over = ctx.analysed(
            "curves",
            (ctx.scorer, ref_eval),
            evaluator=ref_eval,
            benchmarks=ctx.overrefusal_benchmarks,
            metric="refusal_rate",
            capability_benchmark=ctx.capability_benchmark,
            scorer=ctx.scorer,
        )
        st.plotly_chart(
            plots.curve_figure(over, target=target, y_label="refusal rate on safe prompts", x_label="capability"),
            key="cv_over",
            config=common.plot_config("overrefusal-vs-capability"),
        )
        st.caption(f"on {inert.md_list(ctx.overrefusal_benchmarks)}")
    else:
        st.info("No over-refusal benchmark judged by a refusal judge in this experiment.")

with st.expander("Curve data"):
    st.dataframe(df.with_columns(pl.col(pl.Float64).round(4)), hide_index=True)

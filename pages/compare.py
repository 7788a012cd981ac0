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
needed = (ctx.scorer, *ctx.safety_evaluators, "coherence" if apart else None)  # the coherence flag when used
tables = ctx.analysed(
    "compare_tables",
    needed,
    target=target,
    capability_benchmark=ctx.capability_benchmark,
    scorer=ctx.scorer,
    set_apart_incoherent=apart,
)
long = tables["compare"]
if long.height == 0:
    st.info("No safety benchmark is judged by a harm or refusal judge in this experiment.")
    st.stop()
wide = analysis.wide_compare(long)
st.markdown(
    "Each cell: the safety value **interpolated at the target** between the checkpoints around it (lower is safer), "
    f"with its {analysis.WHAT_THE_CI_INCLUDES}. *Best (indistinguishable)*: the lowest mitigation and every one not "
    "significantly worse than it (paired bootstrap, Holm-corrected within the view). Highlighted rows: a "
    "**conclusion change**, a view that orders two mitigations significantly the other way round from another view."
)


def highlight(row):
    return ["background-color: #fde2e1" if row["conclusion changes"] else "" for _ in row]


st.dataframe(wide.to_pandas().style.apply(highlight, axis=1), hide_index=True)
common.download_csv(long.drop("interp_between", "best_set"), f"{ctx.experiment}-compare-{target:g}.csv")
changes = tables["changes"]
if changes.height:
    st.warning(
        f"The conclusion changes between views ({changes.height}): "
        + "; ".join(
            f"{inert.md(x)} is significantly safer than {inert.md(y)} by {inert.md(a)}, the reverse by {inert.md(b)}"
            for a, b, x, y in changes.select("view_a", "view_b", "x", "y").iter_rows()
        )
    )
else:
    st.success("No conclusion changes: no two views order a pair of mitigations significantly in opposite directions.")

st.subheader("One view in detail")
views = long.select("benchmark", "evaluator", "metric").unique().sort("benchmark", "evaluator", "metric")
labels = [f"{b} / {e} / {m}" for b, e, m in views.iter_rows()]
pick = st.selectbox("View", labels, key="cmp_view")
b, e, m = views.row(labels.index(pick))
one = long.filter((pl.col("benchmark") == b) & (pl.col("evaluator") == e) & (pl.col("metric") == m))
st.plotly_chart(
    plots.forest_figure(
        one,
        tables["runs"].filter((pl.col("benchmark") == b) & (pl.col("evaluator") == e) & (pl.col("metric") == m)),
        x_label=analysis.METRICS[m],
        title=f"{pick} at capability {target:g}",
    ),
    key="cmp_fig",
    config=common.plot_config("compare"),
)
diffs = tables["differences"].filter((pl.col("benchmark") == b) & (pl.col("evaluator") == e) & (pl.col("metric") == m))
if diffs.height:
    st.caption("Paired differences at the target (a − b, 95% CI; significant after Holm's correction within this view)")
    st.dataframe(analysis.difference_table(diffs).drop("benchmark", "evaluator", "metric"), hide_index=True)
if m in ("unsafe_rate", "refusal_rate"):
    known = set(ctx.safety_benchmarks + ctx.overrefusal_benchmarks)
    common.corrected_section(
        ctx,
        "cmp_correct",
        heading="This view corrected with the labels of {annotator}",
        as_caption=True,
        target=target,
        evaluator=e,
        benchmarks=[b] if b in known else b.split(", "),
        metric=m,
    )
st.dataframe(
    one.select(
        "mitigation",
        "reached",
        "seeds",
        "seeds_reached",
        "p_reached",
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
rankings, tau = analysis.ranked_views(long)
if rankings.height:
    st.dataframe(
        rankings.with_columns(pl.col("ranking").list.join(" < "), pl.col("best_set").list.join(", ")), hide_index=True
    )
if tau.height:
    st.caption(
        "Kendall's τ between the rankings of point values in two views (1: same order, −1: reversed); a "
        "different order need not be significant, see the conclusion changes above."
    )
    st.dataframe(tau.with_columns(pl.col("tau").round(3)), hide_index=True)

"""Judges: how far the evaluators agree with each other and with people, split by coherence."""

import polars as pl
import streamlit as st

from capsafe_core import analysis, inert, plots, reports
from pages import common

ctx = common.context()
st.title("Judges")
st.caption(
    "How far the judges agree with each other and with people, overall and split by coherence. Offline LLM judges "
    "use the 135M SmolLM2 by default: a weak judge, shown to exercise the machinery; point them at a strong model "
    "through an OpenAI-compatible server for real use."
)
v = ctx.verdicts("coherence", *ctx.safety_evaluators)  # the judges and the coherence flag
h = ctx.humans()
dims = [  # what the experiment holds (the pairs below say when fewer than two raters share items)
    d
    for d, have in (
        ("unsafe", bool(ctx.safety_benchmarks and (ctx.safety_evaluators or h.height))),
        ("refusal", bool(ctx.refusal_evaluators or h.height)),
    )
    if have
]
if not dims:
    st.info("No safety or refusal verdicts to compare in this experiment.")
    st.stop()
dimension = st.radio(
    "Dimension",
    dims,
    horizontal=True,
    key="jd_dim",
    format_func=lambda d: {"unsafe": "unsafe vs safe (safety prompts)", "refusal": "refusal vs not (all prompts)"}[d],
)
judges = tuple(sorted({"coherence", *ctx.safety_evaluators}))
pairs = common.agreement(ctx.path, ctx.version, common.stamp(ctx.path), ctx.experiment, dimension, judges)
if pairs.height == 0:
    st.info("Fewer than two raters share items on this dimension.")
    st.stop()
st.subheader("Agreement between raters")
st.markdown(reports.judges_summary(pairs))
show = pairs.select(
    "a",
    "b",
    "subset",
    "n",
    pl.col("agreement").round(3),
    pl.col("kappa").round(3),
    analysis.ci_expr(None, "kappa_lo", "kappa_hi").alias("κ 95% CI"),
    pl.col("prevalence").round(3),
    pl.col("pabak").round(3).alias("PABAK"),
    pl.col("ac1").round(3).alias("AC1"),
)
st.dataframe(show, hide_index=True)
st.caption(
    "Prevalence: share of 1s (unsafe or refusal) over both raters' verdicts. Where one verdict dominates, κ is low "
    "even when raters agree (the κ paradox); PABAK (2 × agreement − 1) and Gwet's AC1 are not pulled down by it."
)
errors = analysis.judge_errors(pairs)
if errors.height:
    st.subheader("Judges against people, by coherence")
    miss, alarm = {"unsafe": ("false safe", "false unsafe"), "refusal": ("missed refusal", "false refusal")}[dimension]
    st.dataframe(
        errors.select(
            "annotator",
            "judge",
            "subset",
            pl.col("positives").alias(f"{'unsafe' if dimension == 'unsafe' else 'refusal'} by people"),
            analysis.ci_expr("misses", "misses_lo", "misses_hi").alias(f"{miss} [95% CI]"),
            pl.col("negatives").alias(f"{'safe' if dimension == 'unsafe' else 'not refusal'} by people"),
            analysis.ci_expr("false_alarms", "false_alarms_lo", "false_alarms_hi").alias(f"{alarm} [95% CI]"),
        ),
        hide_index=True,
        key="jd_errors",
    )
    st.caption(
        f"{miss.capitalize()}: share of the answers people call {'unsafe' if dimension == 'unsafe' else 'refusals'} "
        f"that the judge does not; {alarm}: share of the others that it does (Wilson 95% CIs). Subsets split by the "
        "coherence evaluator (coherent / incoherent) and by people's own coherence flag (human_…)."
    )
common.download_csv(pairs.drop("confusion"), f"{ctx.experiment}-agreement-{dimension}.csv")
st.plotly_chart(
    plots.kappa_figure(pairs.filter(pl.col("subset").is_in(["all", "coherent", "incoherent"]))),
    key="jd_kappa",
    config=common.plot_config("kappa"),
)

st.subheader("Confusion matrix")
names = [f"{a} vs {b}" for a, b in pairs.select("a", "b").unique(maintain_order=True).iter_rows()]
c1, c2 = st.columns(2)
pick = c1.selectbox("Pair", names, key="jd_pair")
a, b = pick.split(" vs ")
subsets = pairs.filter((pl.col("a") == a) & (pl.col("b") == b))["subset"].to_list()
subset = c2.selectbox("Subset", subsets, key="jd_subset")
row = pairs.filter((pl.col("a") == a) & (pl.col("b") == b) & (pl.col("subset") == subset)).row(0, named=True)
word = {"unsafe": ["safe", "unsafe"], "refusal": ["not refusal", "refusal"]}[dimension]
st.plotly_chart(
    plots.confusion_figure(row["confusion"], word, x_title=b, y_title=a),
    key="jd_cm",
    config=common.plot_config("confusion"),
)
st.caption("Open the samples behind a cell:")
cells = st.columns(4)
for i, (va, vb) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
    count = row["confusion"][va][vb]
    if cells[i].button(
        f"{inert.md(a)}: {word[va]} · {inert.md(b)}: {word[vb]} ({count})", key=f"jd_cell_{va}{vb}", disabled=count == 0
    ):
        ids = analysis.disagreements(v, h, a, b, dimension=dimension, a_value=va, b_value=vb)
        if subset != "all":
            split = analysis.coherence_split(v, h).filter(pl.col("subset") == subset)
            ids = ids.join(split, on="generation_id", how="semi")
        common.open_samples(ids=",".join(str(i) for i in ids["generation_id"].head(500).to_list()))

st.subheader("Safe because broken")
st.caption(
    "Of the answers a judge called safe on safety prompts, the share the coherence evaluator calls "
    "incoherent: a model can look safe because it stopped working."
)
sbb = ctx.analysed("safe_because_broken", ("coherence", *ctx.safety_evaluators))
if sbb.height:
    st.dataframe(sbb.with_columns(pl.col("safe_because_broken").round(3)), hide_index=True)
    by_mit = ctx.analysed("safe_because_broken", ("coherence", *ctx.safety_evaluators), by=("mitigation",))
    with st.expander("per mitigation"):
        st.dataframe(by_mit.with_columns(pl.col("safe_because_broken").round(3)), hide_index=True)
else:
    st.info("Needs a coherence evaluator and a safety judge on the same answers.")

"""Samples: every response behind a number, filtered; the view is a shareable URL.

Model outputs are untrusted: they are shown only as plain text (st.code / st.dataframe cells),
never as Markdown or HTML.
"""

import polars as pl
import streamlit as st

from capsafe_core import inert
from capsafe_core.labels import coherence_flags
from capsafe_core.store.reads import SampleFilter
from pages import common

ctx = common.context()
st.title("Samples")
qp = st.query_params
PAGE = 25


def _int(name: str) -> int | None:
    try:
        return int(qp[name]) if name in qp and qp[name] != "" else None
    except ValueError:
        return None


def _pick(label: str, options: list[str], param: str, col) -> str | None:
    opts = ["(any)", *options]
    cur = qp.get(param)
    choice = col.selectbox(label, opts, index=opts.index(cur) if cur in opts else 0, key=f"sm_{param}")
    value = None if choice == "(any)" else choice
    if value is None:
        qp.pop(param, None)
    else:
        qp[param] = value
    return value


cks = common.checkpoints(ctx.path, ctx.version, ctx.experiment)  # no verdicts read: SQLite pages through them
c1, c0, c2, c3, c4 = st.columns([3, 1, 2, 3, 3])
mitigation = _pick("Mitigation", ctx.mitigations, "mitigation", c1)
runs = cks.filter(pl.col("mitigation") == mitigation) if mitigation else cks.head(0)
seeds = sorted(runs["seed"].unique().to_list())
seed = _pick("Seed", [str(s) for s in seeds], "seed", c0) if len(seeds) > 1 else None
if seed is not None:
    runs = runs.filter(pl.col("seed") == int(seed))
steps = sorted(runs["step"].unique().to_list())
step = _pick("Step", [str(s) for s in steps], "step", c2) if mitigation else None
held = common.contents(ctx.path, ctx.version, ctx.experiment)["benchmarks"]["benchmark"].to_list()
benchmark = _pick("Benchmark", sorted(held), "benchmark", c3)
category = _pick("Category", common.categories(ctx.path, ctx.mtime, ctx.experiment), "category", c4)
c5, c6, c7, c8 = st.columns(4)
evaluator = _pick("Evaluator", ctx.evaluators, "evaluator", c5)
labels = []
if evaluator:
    labels = common.evaluator_labels(ctx.path, ctx.version, evaluator)
label = _pick("Its verdict", labels, "label", c6) if evaluator else None
coherence = _pick("Coherence", ["coherent", "incoherent"], "coherence", c7)
human = _pick("Human label", ["labelled", "unlabelled"], "human", c8)
text = st.text_input("Text in prompt or response", value=qp.get("text", ""), key="sm_text")
if text:
    qp["text"] = text
else:
    qp.pop("text", None)
ids = tuple(int(x) for x in qp.get("ids", "").split(",") if x.strip().isdigit())
checkpoint = _int("checkpoint")
if ids or checkpoint:
    what = f"{len(ids)} chosen generations" if ids else f"checkpoint {checkpoint}"
    a, b = st.columns([4, 1])
    a.info(f"Showing {what} (from a link).")
    if b.button("Clear", key="sm_clear"):
        qp.pop("ids", None)
        qp.pop("checkpoint", None)
        st.rerun()

f = SampleFilter(
    mitigation=mitigation,
    seed=int(seed) if seed is not None else None,
    step=int(step) if step is not None else None,
    checkpoint_id=checkpoint,
    benchmark=benchmark,
    category=category,
    evaluator=evaluator,
    label=label,
    coherence=coherence,
    text=text or None,
    generation_ids=ids,
    human=human,
)
page = max(1, _int("page") or 1)
rows, total = common.samples(
    ctx.path, ctx.mtime, ctx.experiment, f, evaluator or ctx.default_evaluator, PAGE, (page - 1) * PAGE
)
pages = max(1, -(-total // PAGE))
p1, p2, p3 = st.columns([1, 1, 4])
page = p1.number_input("Page", 1, pages, min(page, pages), key="sm_page")
qp["page"] = str(page)
if page != (_int("page") or 1):
    st.rerun()
p3.markdown(f"**{total:,}** generations match · page {page} of {pages}")
sel = st.dataframe(
    rows,
    hide_index=True,
    on_select="rerun",
    selection_mode="single-row",
    key="sm_table",
    column_config={
        "prompt": st.column_config.TextColumn(width="medium"),
        "response": st.column_config.TextColumn(width="large"),
        "verdict": st.column_config.TextColumn(f"{evaluator or ctx.default_evaluator}"),
    },
)
chosen = sel.selection.rows if sel else []
gid = int(rows["generation_id"][chosen[0]]) if chosen and rows.height else _int("g")
if gid is None:
    st.caption("Select a row to see the whole prompt, response and every verdict.")
    st.stop()
qp["g"] = str(gid)
d = common.detail(ctx.path, gid)
if d is None:
    st.warning(f"No generation {gid} in this database.")
    st.stop()
st.divider()
st.subheader(f"Generation {gid}")
st.text(  # plain text: names from data are shown as they are, nothing in them is interpreted
    f"{d['experiment']} · {d['mitigation']} seed {d['seed']} step {d['step']} · "
    f"{d['benchmark']} ({d['bench_kind']}) · prompt {d['prompt_id']} · "
    f"category {d['category']} · "
    f"{d['n_tokens']} tokens, finish: {d['finish_reason']}"
)
left, right = st.columns(2)
with left:
    st.markdown("**Prompt**")
    st.code(str(d["prompt"]), language=None, wrap_lines=True, height=300)
    if d["reference"]:
        st.markdown("**Reference**")
        st.code(str(d["reference"]), language=None, wrap_lines=True)
with right:
    st.markdown("**Response** (plain text)")
    response = str(d["response"])
    if len(response) > 20000:
        st.caption(f"{len(response):,} characters; showing the first 20,000")
        response = response[:20000]
    st.code(response, language=None, wrap_lines=True, height=300)
j = d["judgments"]
assert isinstance(j, pl.DataFrame)
st.markdown("**Verdicts**")
st.dataframe(j.filter(pl.col("kind") != "coherence"), hide_index=True)
st.markdown("**Coherence** (combined flag and its components)")
flags = coherence_flags(j)
if flags.height:
    st.markdown(f"Flagged incoherent by **{inert.md_list(flags['component'].to_list())}**:")
    st.dataframe(flags, hide_index=True, column_config={"why": st.column_config.TextColumn(width="large")})
elif j.filter(pl.col("kind") == "coherence").height:
    st.caption("no coherence component flags this response")
st.dataframe(j.filter(pl.col("kind") == "coherence"), hide_index=True)
hl = d["human_labels"]
assert isinstance(hl, pl.DataFrame)
st.markdown("**Human labels**")
if hl.height:
    st.dataframe(hl, hide_index=True)
else:
    st.caption("none yet: label flagged samples on the Label page")

"""Label: an audit sample (drawn for estimates) or a queue of flagged samples, one at a time, with keyboard
shortcuts; every label is saved at once, with the queue it came from.

Shortcuts: y / n (coherent or not), then h (harmful), f (refusal; r is taken by Streamlit) or
b (benign) saves; s skips, u undoes.
"""

import polars as pl
import streamlit as st

from capsafe_core import audit, inert, labels
from capsafe_core.errors import CapsafeError
from capsafe_core.store import Store
from pages import common

ctx = common.context()
st.title("Label")
ss = st.session_state
ss.setdefault("lb_skipped", [])
ss.setdefault("lb_history", [])  # label ids saved in this session, newest last
ss.setdefault("lb_coherent", None)

c1, c2 = st.columns([1, 3])
if common.ACCESS.named_annotators:  # signed in with their own token: labels carry that name
    annotator = str(common.signed_in())
    c1.text_input("Annotator", value=annotator, disabled=True, key="lb_signed_in")
else:
    annotator = c1.text_input("Your name", value=st.query_params.get("annotator", ""), key="lb_annotator")
    if annotator:
        st.query_params["annotator"] = annotator
samples = common.audit_samples(ctx.path, ctx.mtime, ctx.experiment)
kinds = ["audit", "flagged"] if samples.height else ["flagged"]
kind = c2.radio(
    "Queue",
    kinds,
    horizontal=True,
    key="lb_queue",
    format_func=lambda k: {"audit": "Audit sample (for estimates)", "flagged": "Flagged (to find problems)"}[k],
)
if not annotator.strip():
    st.info("Enter your name to start labelling.")
    st.stop()
h = ctx.humans()
meta: dict[int, str] = {}
if kind == "audit":
    names = samples["name"].to_list()
    name = st.selectbox("Audit sample", names, index=len(names) - 1, key="lb_sample", format_func=inert.md)
    items = common.audit_items(ctx.path, ctx.mtime, ctx.experiment, name)
    left = audit.queue(items, h, annotator=annotator)
    q = left.filter(~pl.col("generation_id").is_in(ss.lb_skipped))
    total, done = items.height, items.height - left.height
    st.caption(
        "Drawn at random with known inclusion probabilities (stratified by checkpoint, coherence and judge "
        "agreement): these labels correct the judges' rates. Label in the shown order; a first part of the "
        "sample is still a random sample."
    )
    for gid, pos, stratum, p in q.select("generation_id", "position", "stratum", "inclusion_prob").iter_rows():
        where = f"audit {inert.md(name)} item {pos} of {total} · stratum {inert.md(stratum)}"
        meta[gid] = f"{where} · inclusion probability {p:.3g}"
else:
    reasons = st.multiselect(
        "Flagged because",
        list(labels.REASONS),
        default=list(labels.REASONS),
        key="lb_reasons",
        format_func=lambda r: labels.REASONS[r],
    )
    if not reasons:
        st.info("Choose at least one reason.")
        st.stop()
    st.caption(
        "Flagged responses were chosen because they look wrong: labelling them finds problems, and these labels "
        "are never used for estimates (use an audit sample for that: capsafe audit draw)."
    )
    names = tuple(sorted({"coherence", *ctx.safety_evaluators}))
    f = common.flags(ctx.path, ctx.version, ctx.experiment, names)
    q = labels.queue(f, h, reasons=reasons, annotator=annotator).filter(~pl.col("generation_id").is_in(ss.lb_skipped))
    done, total = labels.progress(f, h, reasons=reasons, annotator=annotator)
    for gid, why in q.head(1).select("generation_id", "reasons").iter_rows():
        meta[gid] = "flagged: " + inert.md(", ".join(labels.REASONS[r] for r in why))
what = "items of the audit sample" if kind == "audit" else "flagged samples"
st.progress(done / total if total else 1.0, text=f"{done} of {total} {what} labelled by {inert.md(annotator)}")


def store() -> Store:
    return Store.open(ctx.path, create=False)


def save(verdict: str, gid: int) -> None:
    if ss.lb_coherent is None:
        ss.lb_message = "First say whether the response is coherent (y / n)."
        return
    try:
        with store() as s:
            label_id = labels.save_label(
                s,
                gid,
                annotator=annotator,
                label=verdict,
                coherent=ss.lb_coherent,
                note=ss.get("lb_note") or None,
                source=kind,
            )
    except CapsafeError as e:
        ss.lb_message = str(e)
        return
    ss.lb_history.append(label_id)
    ss.lb_coherent = None
    ss.lb_note = ""
    ss.lb_message = f"Saved '{verdict}' for generation {gid}."


def undo() -> None:
    if not ss.lb_history:
        ss.lb_message = "Nothing to undo."
        return
    with store() as s:
        gid = labels.undo(s, ss.lb_history.pop(), annotator=annotator)
    ss.lb_message = f"Undid the label of generation {gid}."


def skip(gid: int) -> None:
    ss.lb_skipped.append(gid)
    ss.lb_coherent = None


def set_coherent(value: bool) -> None:
    ss.lb_coherent = value


if ss.get("lb_message"):
    st.toast(inert.md(ss.lb_message))
    ss.lb_message = ""
if q.height == 0:
    st.success(f"Queue empty: every one of these {what} has your label.")
    st.button("Undo last (u)", on_click=undo, shortcut="u", key="lb_undo_empty")
    st.stop()

gid = int(q["generation_id"][0])
d = common.detail(ctx.path, gid)
assert d is not None
st.caption(
    f"Generation {gid} · {inert.md(d['mitigation'])} step {d['step']} · {inert.md(d['benchmark'])} · {meta[gid]}"
)
left, right = st.columns(2)
with left:
    st.markdown("**Prompt**")
    st.code(str(d["prompt"]), language=None, wrap_lines=True, height=260)
with right:
    st.markdown("**Response** (plain text)")
    st.code(str(d["response"])[:20000], language=None, wrap_lines=True, height=260)

st.markdown("**1. Is the response coherent?** (y / n)")
y, n, state = st.columns([1, 1, 4])
y.button(
    "Coherent (y)",
    on_click=set_coherent,
    args=(True,),
    shortcut="y",
    key="lb_y",
    type="primary" if ss.lb_coherent is True else "secondary",
)
n.button(
    "Incoherent (n)",
    on_click=set_coherent,
    args=(False,),
    shortcut="n",
    key="lb_n",
    type="primary" if ss.lb_coherent is False else "secondary",
)
state.markdown({None: "_not chosen yet_", True: "coherent", False: "incoherent"}[ss.lb_coherent])
st.text_input("Note (optional)", key="lb_note")
st.markdown("**2. Verdict** (saves at once)")
b1, b2, b3, b4, b5 = st.columns(5)
b1.button("Harmful (h)", on_click=save, args=("harmful", gid), shortcut="h", key="lb_h")
b2.button("Refusal (f)", on_click=save, args=("refusal", gid), shortcut="f", key="lb_r")
b3.button("Benign (b)", on_click=save, args=("benign", gid), shortcut="b", key="lb_b")
b4.button(
    "Skip (s)",
    on_click=skip,
    args=(gid,),
    shortcut="s",
    key="lb_s",
    disabled=kind == "audit",
    help="An audit sample is labelled in its order: skipping would make the labelled part non-random.",
)
b5.button("Undo (u)", on_click=undo, shortcut="u", key="lb_u")
with st.expander("What the judges said"):
    j = d["judgments"]
    assert isinstance(j, pl.DataFrame)
    st.dataframe(j, hide_index=True)

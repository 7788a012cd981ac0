"""What every page shares: the database choice, cached readers and the experiment's settings.

Readers take the database path and its modification time, so new data invalidates the cache;
the SQLite connection is opened inside each reader (connections are per thread).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import streamlit as st

from capsafe_core import access, bundled, inert, reports
from capsafe_core.errors import CapsafeError
from capsafe_core.store import Store, reads, summary

ACCESS = access.Access.from_env()  # set by capsafe serve; open (no login) on loopback


def default_db() -> str:
    return os.environ.get("CAPSAFE_DB") or str(bundled.demo_db())


def db_path() -> str:
    if ACCESS.fixed_database:  # served beyond loopback: only the operator's databases, never a typed path
        names = list(ACCESS.databases)
        return ACCESS.databases[str(st.session_state.get("db_name") or names[0])]
    return str(st.session_state.get("db_path") or st.query_params.get("db") or default_db())


def signed_in() -> str | None:
    """Who uses this session: the annotator's name or ``user`` (shared token); ``owner`` on loopback;
    ``None`` before sign-in."""
    if ACCESS.mode == "open":
        return "owner"
    who = st.session_state.get("_identity")
    return str(who) if who else None


def sign_in_page() -> None:
    """The only page before sign-in: a token form (a wrong token waits a second before it is refused)."""
    st.title("Sign in")
    with st.form("sign_in"):
        token = st.text_input("Access token", type="password")
        if st.form_submit_button("Sign in", type="primary"):
            who = ACCESS.identify(token)
            if who is None:
                time.sleep(1.0)
                st.error("Wrong token.")
            else:
                st.session_state["_identity"] = who
                st.rerun()


def stamp(path: str) -> float:
    """Changes when the database does (WAL writes touch the -wal file, not the main one)."""
    times = [Path(p).stat().st_mtime_ns for p in (path, path + "-wal") if Path(p).exists()]
    return float(max(times)) if times else 0.0


def verdict_version(path: str) -> str:
    """Changes when generations or judgments do (not when a human label is saved), so saving labels
    does not invalidate the cached verdicts. Asked again only when the file changes."""
    return _verdict_version(path, stamp(path))


@st.cache_data(show_spinner=False, max_entries=8)
def _verdict_version(path: str, file_stamp: float) -> str:
    with _open(path) as s:
        return reads.verdict_stamp(s)


@st.cache_data(show_spinner=False, max_entries=16)
def contents(path: str, version: str, experiment: str) -> dict[str, pl.DataFrame]:
    """What the experiment holds (benchmarks, evaluators, mitigations), without reading its verdicts."""
    with _open(path) as s:
        return summary.contents(s, experiment)


def _open(path: str) -> Store:
    """Read-only: the dashboard's readers never write (labels open their own writing store)."""
    return Store.open(path, read_only=True)


@st.cache_data(show_spinner=False)
def experiments(path: str, mtime: float) -> pl.DataFrame:
    with _open(path) as s:
        return s.experiments()


@st.cache_data(show_spinner=False)
def counts(path: str, mtime: float) -> dict[str, int]:
    with _open(path) as s:
        return s.counts()


@st.cache_resource(show_spinner="Reading generations…", max_entries=8)
def generations(path: str, version: str, experiment: str) -> pl.DataFrame:
    """The experiment's generations (ids, checkpoint, prompt), read once for all its evaluators' reads."""
    with _open(path) as s:
        return reads.generations(s, int(s.experiment_id(experiment)))


@st.cache_resource(show_spinner="Reading prompts…", max_entries=8)
def held_prompts(path: str, version: str, experiment: str) -> pl.DataFrame:
    """The experiment's prompts (ids, benchmark, category), read once for all its evaluators' reads."""
    with _open(path) as s:
        return reads.prompts(s, int(s.experiment_id(experiment)))


@st.cache_resource(show_spinner="Reading verdicts…", max_entries=64)
def evaluator_verdicts(path: str, version: str, experiment: str, evaluator: str) -> pl.DataFrame:
    """One evaluator's verdicts in the experiment, read once and shared (not copied) between reruns, pages
    and sessions: polars frames are never changed in place."""
    gens, held = generations(path, version, experiment), held_prompts(path, version, experiment)
    with _open(path) as s:
        return reads.verdicts(s, experiment, evaluators=[evaluator], generations_frame=gens, prompts_frame=held)


def verdicts(path: str, version: str, experiment: str, evaluators: tuple[str, ...] | None = None) -> pl.DataFrame:
    """The experiment's verdicts (only ``evaluators``' where given): the per-evaluator frames side by side
    (no copy), so pages that show different evaluators share what they read."""
    names = (
        evaluators if evaluators is not None else tuple(contents(path, version, experiment)["evaluators"]["evaluator"])
    )
    frames = [evaluator_verdicts(path, version, experiment, e) for e in names]
    return pl.concat(frames, rechunk=False) if frames else reads.empty_verdicts()


@st.cache_data(show_spinner="Computing…", max_entries=64)
def analysed(
    name: str,
    path: str,
    version: str,
    experiment: str,
    evaluators: tuple[str, ...],
    kwargs: tuple[tuple[str, Any], ...],
) -> Any:
    """``capsafe_core.analysis.<name>`` on the verdicts of ``evaluators``, cached by its arguments: a rerun
    with the same choices (a warm page) does not recompute it."""
    from capsafe_core import analysis

    v = verdicts(path, version, experiment, evaluators)
    return getattr(analysis, name)(v, **{k: list(x) if isinstance(x, tuple) else x for k, x in kwargs})


@st.cache_data(show_spinner="Finding flagged responses…", max_entries=8)
def flags(path: str, version: str, experiment: str, evaluators: tuple[str, ...]) -> pl.DataFrame:
    """``labels.flagged`` on the coherence flag and the safety judges, with every evaluator's unparsed
    verdicts found by SQLite (not by reading them all)."""
    from capsafe_core import labels

    with _open(path) as s:
        unparsed = summary.unparsed_ids(s, experiment)
    return labels.flagged(verdicts(path, version, experiment, evaluators), unparsed=unparsed)


@st.cache_data(show_spinner=False, max_entries=64)
def evaluator_labels(path: str, version: str, evaluator: str) -> list[str]:
    with _open(path) as s:
        return summary.evaluator_labels(s, evaluator)


@st.cache_data(show_spinner=False, max_entries=16)
def checkpoints(path: str, version: str, experiment: str) -> pl.DataFrame:
    """``mitigation, seed, step`` of the experiment's checkpoints."""
    with _open(path) as s:
        return s.checkpoints(experiment).select("mitigation", "seed", "step")


@st.cache_data(show_spinner=False)
def humans(path: str, mtime: float, experiment: str) -> pl.DataFrame:
    with _open(path) as s:
        return reads.human_labels(s, experiment)


@st.cache_data(show_spinner=False)
def categories(path: str, mtime: float, experiment: str) -> list[str]:
    with _open(path) as s:
        return reads.categories(s, experiment)


@st.cache_data(show_spinner=False)
def samples(
    path: str, mtime: float, experiment: str, f: reads.SampleFilter, evaluator: str | None, limit: int, offset: int
) -> tuple[pl.DataFrame, int]:
    with _open(path) as s:
        return reads.samples(s, experiment, f, evaluator=evaluator, limit=limit, offset=offset)


@st.cache_data(show_spinner="Comparing raters…", max_entries=8)
def agreement(
    path: str, version: str, human_stamp: float, experiment: str, dimension: str, evaluators: tuple[str, ...]
) -> pl.DataFrame:
    """``analysis.agreement`` between ``evaluators`` (the judges and the coherence flag) and people."""
    from capsafe_core import analysis

    return analysis.agreement(
        verdicts(path, version, experiment, evaluators), humans(path, human_stamp, experiment), dimension=dimension
    )


@st.cache_data(show_spinner=False)
def audit_samples(path: str, mtime: float, experiment: str) -> pl.DataFrame:
    """The experiment's audit samples (``capsafe_core.audit.progress``)."""
    from capsafe_core import audit

    with _open(path) as s:
        return audit.progress(s, experiment)


@st.cache_data(show_spinner=False)
def audit_items(path: str, mtime: float, experiment: str, name: str) -> pl.DataFrame:
    """``generation_id, position, stratum, inclusion_prob`` of one audit sample."""
    from capsafe_core.store import audit as store_audit

    with _open(path) as s:
        return store_audit.items(s, store_audit.sample_id(s, experiment, name))


@st.cache_data(show_spinner=False)
def chosen_design(path: str, mtime: float, experiment: str, annotator: str) -> tuple[str | None, object]:
    from capsafe_core import audit

    with _open(path) as s:
        return audit.chosen_design(s, experiment, annotator)


def correction_picker(ctx: Context, key: str) -> tuple[str, str | None, object] | None:
    """The "corrected with human labels" choice: the annotator chosen (None: no correction) and the audit sample whose
    design weighs their labels (newest holding them; none: labels taken as a random sample)."""
    names = sorted(ctx.humans()["annotator"].unique().to_list())
    if not names:
        return None
    wanted = st.query_params.get("annotator")
    pick = st.selectbox(
        "Corrected with human labels (annotator)",
        ["(no correction)", *names],
        index=names.index(wanted) + 1 if wanted in names else 0,
        key=key,
        format_func=inert.md,
        help="A judge's rate corrected by a person's labels (PPI, per coherence stratum). Labels of an audit "
        "sample are weighted by its design; the Label page's flagged queue never feeds estimates.",
    )
    if pick == "(no correction)":
        return None
    sample, design = chosen_design(ctx.path, stamp(ctx.path), ctx.experiment, pick)
    return pick, sample, design


def corrected_section(
    ctx: Context,
    key: str,
    *,
    heading: str,
    as_caption: bool = False,
    target: float,
    evaluator: str,
    benchmarks: list[str],
    metric: str = "unsafe_rate",
) -> tuple[str, str | None] | None:
    """The picker and, for the annotator chosen, one view's values at the target corrected with their labels
    beside the judge's (``analysis.at_target``), the best set on them, and what the CI covers. Returns the
    annotator and audit sample used (None: no correction chosen). ``heading`` names the annotator where it
    says ``{annotator}``; a subheading, or a caption with ``as_caption``."""
    from capsafe_core import analysis
    from capsafe_core.analysis import at_target

    picked = correction_picker(ctx, key)
    if picked is None:
        return None
    annotator, sample, design = picked
    text = heading.format(annotator=inert.md(annotator))
    (st.caption if as_caption else st.subheader)(text)
    v = ctx.verdicts(ctx.scorer, evaluator, "coherence")  # the corrected rate is stratified by the coherence flag
    assert ctx.capability_benchmark and ctx.scorer
    try:
        corrected = at_target.corrected_at_target(
            v,
            ctx.humans(),
            cap_pv=analysis.capability_values(v, capability_benchmark=ctx.capability_benchmark, scorer=ctx.scorer),
            target=target,
            evaluator=evaluator,
            benchmarks=benchmarks,
            annotator=annotator,
            metric=metric,
            design=design,
        )
    except CapsafeError as e:  # e.g. an audit sample drawn from other benchmarks
        st.info(inert.md(e))
        return annotator, sample
    st.table(at_target.display(corrected))
    st.markdown(reports.corrected_sentence(corrected))
    how = f"weighted by the design of audit sample {inert.md(sample)}" if sample else "taken as a random sample"
    st.caption(f"{at_target.WHAT_THE_CORRECTED_CI_INCLUDES}. Labels {how}.")
    return annotator, sample


def detail(path: str, generation_id: int) -> dict[str, object] | None:
    with _open(path) as s:
        return reads.generation_detail(s, generation_id)


@dataclass(frozen=True)
class Context(reports.ExperimentSetup):
    """The chosen database and experiment, and the experiment's setup (``reports.experiment_setup``)."""

    path: str = ""
    mtime: float = 0.0
    version: str = ""

    def analysed(self, name: str, evaluators: tuple[str | None, ...], **kwargs: Any) -> Any:
        """A cached ``analysis.<name>(verdicts of evaluators, **kwargs)`` (lists become tuples for the key)."""
        names = tuple(sorted({e for e in evaluators if e}))
        key = tuple(sorted((k, tuple(x) if isinstance(x, list) else x) for k, x in kwargs.items()))
        return analysed(name, self.path, self.version, self.experiment, names, key)

    def verdicts(self, *evaluators: str | None) -> pl.DataFrame:
        """All verdicts, or only those of ``evaluators`` (what a page shows)."""
        names = tuple(sorted({e for e in evaluators if e})) if evaluators else None
        return verdicts(self.path, self.version, self.experiment, names)

    def humans(self) -> pl.DataFrame:
        return humans(self.path, stamp(self.path), self.experiment)


def sidebar() -> Context | None:
    """Database picker and experiment selector (in the sidebar of every page)."""
    with st.sidebar:
        st.markdown("### capsafe")
        if ACCESS.mode != "open":
            st.caption(f"Signed in as {inert.md(signed_in())}")
            if st.button("Sign out", key="sign_out"):
                st.session_state.clear()
                st.rerun()
        if ACCESS.fixed_database:
            if len(ACCESS.databases) > 1:
                st.selectbox("Database", list(ACCESS.databases), key="db_name")
            path = db_path()
        else:
            path = st.text_input(
                "Database",
                value=db_path(),
                key="db_path",
                help="A capsafe SQLite file. Default: the bundled demo, or $CAPSAFE_DB.",
            )
        if not Path(path).exists():
            st.error(f"No database at {inert.md(path)}; enter the path of a capsafe database.")
            return None
        mtime = stamp(path)
        try:
            exps = experiments(path, mtime)
        except CapsafeError as e:
            st.error(inert.md(e))
            return None
        if exps.height == 0:
            st.warning("This database has no experiments yet; import or run some with the capsafe command.")
            return None
        names = exps["name"].to_list()
        wanted = st.query_params.get("experiment")
        index = names.index(wanted) if wanted in names else 0
        experiment = st.selectbox("Experiment", names, index=index, key="experiment")
        st.query_params["experiment"] = experiment
        row = exps.filter(pl.col("name") == experiment).to_dicts()[0]
    version = verdict_version(path)
    setup = reports.setup_from(row, **contents(path, version, experiment))
    return Context(**vars(setup), path=path, mtime=mtime, version=version)


def context() -> Context:
    """The sidebar's context, or stop the page with a message."""
    if not st.session_state.get("_via_app"):
        # Streamlit ran this page on its own (a deep link on a freshly started server, before app.py ever
        # ran): go through the router, which signs in, reads the sidebar, then comes back to this page
        st.session_state["_wanted"] = (
            "pages/" + Path(sys._getframe(1).f_globals["__file__"]).name,
            dict(st.query_params),
        )
        st.switch_page("app.py")
    ctx = st.session_state.get("_ctx")
    if ctx is None or signed_in() is None:
        st.stop()
    return ctx


def download_csv(frame: pl.DataFrame, name: str, *, label: str = "Download CSV") -> None:
    st.download_button(label, frame.write_csv().encode(), file_name=name, mime="text/csv")


def plot_config(key: str) -> dict[str, object]:
    """Plotly toolbar: the camera button exports the figure as PNG or SVG (chosen here)."""
    fmt = st.session_state.get("figure_format", "png")
    return {"toImageButtonOptions": {"format": fmt, "filename": key, "scale": 2}, "displaylogo": False}


def open_samples(**params: object) -> None:
    """Go to the Samples page with these filters in the URL."""
    for k in (
        "mitigation",
        "step",
        "checkpoint",
        "benchmark",
        "evaluator",
        "label",
        "coherence",
        "ids",
        "text",
        "category",
        "g",
    ):
        st.query_params.pop(k, None)
    for k, v in params.items():
        if v is not None:
            st.query_params[k] = str(v)
    st.switch_page("pages/samples.py", query_params=dict(st.query_params))

"""``capsafe report``: one self-contained HTML file that tells an experiment's story offline: setup and
provenance, safety at the capability target with its uncertainty (corrected with human labels where
asked), figures, the sensitivity to benchmark and judge, where judges fail, and the limitations the data
show. Everything is inline (plotly.js included); every text from data is escaped; the numbers come from
the same analysis functions as the dashboard and ``capsafe compare``."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import polars as pl

from capsafe_core import analysis, reports
from capsafe_core.errors import BadInput
from capsafe_core.jsonl import json_safe
from capsafe_core.report import failures, render, sections
from capsafe_core.store import Store, now, reads


def build_report(
    store: Store, *, experiment: str | None = None, target: float | None = None, annotator: str | None = None
) -> str:
    """The report's HTML (the experiment defaults to the database's only or first one)."""
    name = reports.experiments(store, experiment)[0]
    if target is not None and not 0.0 <= target <= 1.0:
        raise BadInput(f"--target {target} is not a capability in [0, 1]")
    v = reads.verdicts(store, name)
    humans = reads.human_labels(store, name)
    setup = reports.setup(store, name, v)
    if annotator is not None and annotator not in set(humans["annotator"].to_list()):
        from capsafe_core.errors import unknown_name

        names = sorted(set(humans["annotator"].to_list()))
        raise unknown_name("annotator", annotator, names, hint=f"those who labelled {name}")
    x = sections.Inputs(
        store, setup, v, humans, setup.target if target is None else target, annotator, render.Figures()
    )
    answer, data = sections.answer_section(x)
    sens, compare = _sensitivity(store, x)
    parts = [
        ("setup", "Setup and provenance", sections.setup_section(x)),
        ("answer", f"The answer: safety at capability {x.target:g}", answer),
        ("figures", "Figures", sections.figures_section(x)),
        ("sensitivity", "Sensitivity to benchmark and judge", sens),
        ("judges", "Where judges fail", sections.judges_section(x)),
        ("limitations", "Limitations", failures.limitations_html(
            failures.limitations(store, v, humans, data.get("overview", [])))),
    ]  # fmt: skip
    title = f"capsafe report: {name}"
    foot = f"Written {now()} by capsafe on Python {platform.python_version()} ({platform.machine()})."
    parts[-1] = (*parts[-1][:2], parts[-1][2] + render.para(foot, "note"))
    return render.page(title, parts, {"experiment": name, "target": x.target, **data, "compare": compare})


def _sensitivity(store: Store, x: sections.Inputs) -> tuple[str, list[dict[str, Any]]]:
    """Every benchmark × judge view at the target (``capsafe compare``'s tables) and the conclusion changes."""
    if not x.can_match:
        return render.empty("No capability measure: there is no target to compare views at."), []
    tables = reports.compare_report(store, target=x.target, experiment=x.setup.experiment)
    long = tables["compare"]
    if long.height == 0:
        return render.empty("No safety benchmark judged by a harm or refusal judge."), []
    wide = analysis.wide_compare(long)
    body = render.table(wide) + render.para(
        f"Each cell: the value interpolated at the target with its {analysis.WHAT_THE_CI_INCLUDES}; best set: the "
        "lowest mitigation and those not significantly worse (Holm within the view).",
        "note",
    )
    changes = tables["changes"]
    if changes.height:
        body += "<h3>Conclusion changes</h3>" + render.table(changes.select("view_a", "view_b", "x", "y"))
        body += render.para("x is significantly safer than y in view_a, and y than x in view_b.", "note")
    else:
        body += render.para("No conclusion changes: no two views order a pair of mitigations significantly apart.")
    return body, _json_rows(long)


def _json_rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return list(json_safe(frame.to_dicts()))


def write_report(store: Store, out: Path, **kwargs: Any) -> int:
    """Write the report to ``out``; returns its size in bytes."""
    text = build_report(store, **kwargs)
    out.write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))

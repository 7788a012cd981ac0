"""Where judges fail (a gallery of responses behind the numbers) and the limitations the data show."""

from __future__ import annotations

import json

import polars as pl

from capsafe_core import analysis
from capsafe_core.report.render import empty, esc, output
from capsafe_core.store import Store, reads

PER_KIND = 3


def gallery_ids(v: pl.DataFrame, evaluator: str | None, coherence: str = "coherence") -> dict[str, list[int]]:
    """A few generations per kind (lowest ids: stable): incoherent answers a judge calls safe, and answers
    on which the safety judges disagree."""
    judged = v.filter((pl.col("bench_kind") == "safety") & pl.col("ev_kind").is_in(["harm", "refusal"]))
    judged = judged.with_columns(analysis.value_expr("unsafe_rate").alias("u")).filter(pl.col("u").is_not_null())
    incoherent = v.filter((pl.col("evaluator") == coherence) & (pl.col("label") == "incoherent"))
    safe = judged.filter((pl.col("evaluator") == evaluator) & (pl.col("u") == 0))
    broken = safe.join(incoherent.select("generation_id"), on="generation_id", how="semi")
    spread = judged.group_by("generation_id").agg((pl.col("u").max() != pl.col("u").min()).alias("d"))
    return {
        "incoherent answers the judge calls safe": sorted(broken["generation_id"].unique().to_list())[:PER_KIND],
        "safety judges disagree": sorted(spread.filter("d")["generation_id"].to_list())[:PER_KIND],
    }


def gallery(store: Store, v: pl.DataFrame, evaluator: str | None) -> str:
    out = "<h3>Responses behind the numbers</h3>"
    for kind, ids in gallery_ids(v, evaluator).items():
        out += f"<h4>{esc(kind.capitalize())}</h4>"
        if not ids:
            out += empty("None in this experiment.")
        for gid in ids:
            d = reads.generation_detail(store, gid)
            if d is None:
                continue
            j = d["judgments"]
            assert isinstance(j, pl.DataFrame)
            said = j.filter(pl.col("label").is_not_null()).select("evaluator", "label").iter_rows()
            verdicts = " · ".join(f"{esc(e)}: {esc(lab)}" for e, lab in said)
            out += (
                f'<div class="card"><p class="note">Generation {gid} · {esc(d["mitigation"])} seed {esc(d["seed"])} '
                f"step {esc(d['step'])} · {esc(d['benchmark'])}</p><p><b>Prompt</b></p>{output(d['prompt'], 600)}"
                f"<p><b>Response</b> (plain text)</p>{output(d['response'])}<p class='note'>{verdicts}</p></div>"
            )
    return out


def limitations(store: Store, v: pl.DataFrame, humans: pl.DataFrame, head: list[dict[str, object]]) -> list[str]:
    """Caveats computed from the data."""
    out = []
    sizes = v.group_by("benchmark").agg(pl.col("prompt_id").n_unique().alias("n")).sort("benchmark")
    for bench, n in sizes.filter(pl.col("n") < 200).iter_rows():
        out.append(
            f"{bench} has {n} prompts per checkpoint: a rate near 0.5 is known to about "
            f"±{1.96 * (0.25 / n) ** 0.5:.2f} (95%) from prompt sampling alone."
        )
    seeds = v.group_by("mitigation").agg(pl.col("seed").n_unique().alias("k"))
    single = sorted(seeds.filter(pl.col("k") == 1)["mitigation"].to_list())
    if single:
        out.append(
            f"Single run (one seed): {', '.join(single)}. Run-to-run variation of fine-tuning is not measured for "
            "them; repeated runs of the same set-up can differ."
        )
    unparsed = v.group_by("evaluator").agg((pl.col("label") == "unparsed").mean().alias("share"))
    for ev, share in unparsed.filter(pl.col("share") > 0).sort("evaluator").iter_rows():
        out.append(f"{ev}: {share:.1%} of its answers could not be read (unparsed, left out of its rates).")
    evs = store.evaluators().filter(pl.col("name").is_in(v["evaluator"].unique().to_list()))
    for name, config in evs.select("name", "config").unique("name").sort("name").iter_rows():
        model = str((json.loads(config or "{}") or {}).get("judge_model") or "")
        if "smollm2" in model.lower() or "135m" in model.lower():
            out.append(f"{name} is judged by {model}, a 135M-parameter model far too weak to be trusted as a judge.")
    if humans.height == 0:
        out.append("No human labels: how far the judges err is not measured on this experiment.")
    missed = [str(r["mitigation"]) for r in head if r.get("interp_value") is None]
    if missed:
        out.append(f"Not reaching the capability target: {', '.join(missed)}.")
    if not out:
        out.append("None found in the data (prompt counts, seeds, unparsed answers, judges, human labels).")
    return out


def limitations_html(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"

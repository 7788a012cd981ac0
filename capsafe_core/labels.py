"""Human labelling: the queue of flagged samples, saving a label at once, and undo.

A sample is flagged for one or more ``REASONS``; a person gives a verdict (``harmful``,
``refusal``, ``benign``), says whether the response is coherent, and may add a note. Every label
is its own row (history); the latest per annotator counts.
"""

from __future__ import annotations

import polars as pl

from capsafe_core.analysis.rates import value_expr
from capsafe_core.errors import BadInput
from capsafe_core.store import Store
from capsafe_core.store import labels as store_labels
from capsafe_core.vocabulary import PAGE_LABELS

REASONS = {
    "incoherent": "the coherence evaluator calls the response incoherent",
    "judges_disagree": "safety judges disagree (some unsafe, some safe)",
    "safe_but_incoherent": "a safety judge says safe, but the response is incoherent",
    "unparsed": "a judge's output could not be read",
}


def flagged(v: pl.DataFrame, *, coherence: str = "coherence", unparsed: pl.DataFrame | None = None) -> pl.DataFrame:
    """``generation_id, reasons`` (list) for every flagged generation of the verdict frame; ``unparsed``
    (``generation_id``) gives the unparsed ones where ``v`` holds only some evaluators."""
    lazy = v.lazy()  # only the columns used are read out of a frame of millions of verdicts
    incoherent = (
        lazy.filter((pl.col("evaluator") == coherence) & (pl.col("label") == "incoherent"))
        .select("generation_id")
        .unique()
    )
    safety = (
        lazy.filter((pl.col("bench_kind") == "safety") & pl.col("ev_kind").is_in(["harm", "refusal"]))
        .select("generation_id", value_expr("unsafe_rate").alias("unsafe"))
        .filter(pl.col("unsafe").is_not_null())
    )
    per_gen = safety.group_by("generation_id").agg(
        pl.col("unsafe").min().alias("lo"), pl.col("unsafe").max().alias("hi")
    )
    disagree = per_gen.filter(pl.col("lo") != pl.col("hi")).select("generation_id")
    judged_safe = per_gen.filter(pl.col("lo") == 0).select("generation_id")
    safe_incoherent = judged_safe.join(incoherent, on="generation_id", how="semi")
    found = (
        lazy.filter(pl.col("label") == "unparsed").select("generation_id").unique()
        if unparsed is None
        else unparsed.lazy().select("generation_id")
    )
    parts = [
        f.with_columns(pl.lit(r).alias("reason"))
        for r, f in (
            ("incoherent", incoherent),
            ("judges_disagree", disagree),
            ("safe_but_incoherent", safe_incoherent),
            ("unparsed", found),
        )
    ]
    return (
        pl.concat(parts)
        .group_by("generation_id")
        .agg(pl.col("reason").sort().alias("reasons"))
        .sort("generation_id")
        .collect()
    )


def queue(flags: pl.DataFrame, humans: pl.DataFrame, *, reasons: list[str], annotator: str) -> pl.DataFrame:
    """Generations of ``flags`` (``flagged``'s frame) flagged for any of ``reasons`` that ``annotator`` has
    not labelled yet, in a stable order that mixes checkpoints (by a hash of the generation id)."""
    unknown = [r for r in reasons if r not in REASONS]
    if unknown:
        raise BadInput(f"Unknown flag reason '{unknown[0]}'; use {', '.join(REASONS)}")
    f = _for_reasons(flags, reasons)
    done = humans.filter(pl.col("annotator") == annotator).select("generation_id") if humans.height else None
    if done is not None:
        f = f.join(done, on="generation_id", how="anti")
    return f.with_columns(pl.col("generation_id").hash(seed=7).alias("_o")).sort("_o").drop("_o")


def _for_reasons(flags: pl.DataFrame, reasons: list[str]) -> pl.DataFrame:
    return flags.filter(pl.col("reasons").list.set_intersection(reasons).list.len() > 0)


def save_label(
    store: Store,
    generation_id: int,
    *,
    annotator: str,
    label: str,
    coherent: bool | None,
    note: str | None = None,
    source: str = "flagged",
) -> int:
    """Store one human label at once; returns its row id. ``source``: the queue (``flagged`` labels never
    feed estimates; ``audit`` ones do, weighted by the sample's design)."""
    annotator = annotator.strip()
    if not annotator:
        raise BadInput("Enter your name as annotator before labelling")
    if label not in PAGE_LABELS:
        raise BadInput(f"Unknown label '{label}'; use {', '.join(PAGE_LABELS)}")
    if source not in ("flagged", "audit"):
        raise BadInput(f"Unknown label source '{source}'; use flagged or audit")
    return store_labels.add_label(
        store, generation_id, annotator=annotator, label=label, coherent=coherent, note=note, source=source
    )


def undo(store: Store, label_id: int, *, annotator: str) -> int | None:
    """Delete one of ``annotator``'s labels; returns its generation id (``None`` if it was not theirs)."""
    return store_labels.delete_label(store, label_id, annotator=annotator)


def progress(flags: pl.DataFrame, humans: pl.DataFrame, *, reasons: list[str], annotator: str) -> tuple[int, int]:
    """(labelled by ``annotator``, flagged in total) for the chosen reasons (``flags``: ``flagged``'s frame)."""
    f = _for_reasons(flags, reasons)
    if not humans.height:
        return 0, f.height
    mine = humans.filter(pl.col("annotator") == annotator).select("generation_id")
    return f.join(mine, on="generation_id", how="semi").height, f.height


def coherence_flags(judgments: pl.DataFrame) -> pl.DataFrame:
    """``component, why`` of the coherence components that call one generation incoherent (each
    component's newest version; the detail view's ``evaluator, kind, version, label, ..., explanation``)."""
    parts = judgments.filter((pl.col("kind") == "coherence") & (pl.col("evaluator") != "coherence"))
    newest = parts.with_columns(pl.col("version").cast(pl.Int64, strict=False).alias("_v")).filter(
        pl.col("_v") == pl.col("_v").max().over("evaluator")
    )
    return newest.filter(pl.col("label") == "incoherent").select(
        pl.col("evaluator").alias("component"), pl.col("explanation").alias("why")
    )


__all__ = ["REASONS", "coherence_flags", "flagged", "progress", "queue", "save_label", "undo"]

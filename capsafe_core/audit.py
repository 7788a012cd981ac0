"""Audit samples: generations drawn at random, with a known design, for people to label, so that their
labels can correct a judge's rate (``analysis.corrected``). The Label page's flagged queues find problems;
only audit samples (and imported labels of a random sample or census) feed estimates.

``draw`` builds the population (the responses to safety prompts of the checkpoints around the capability
target, or of the checkpoints named), its strata (checkpoint × coherence flag × whether the safety judges
agree) and each stratum's judge-error SD from the labels so far, then draws (``analysis.design``) and
stores the sample with every item's stratum and inclusion probability. ``export_csv`` / ``import_csv``
round-trip a sample through a spreadsheet or another labelling tool.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from capsafe_core import reports, verdicts
from capsafe_core.analysis import design as sampling
from capsafe_core.analysis.at_target import target_weights
from capsafe_core.analysis.compare import capability_values
from capsafe_core.analysis.corrected import Design
from capsafe_core.analysis.rates import value_expr
from capsafe_core.errors import BadInput, unknown_name
from capsafe_core.store import Store, now, reads
from capsafe_core.store import audit as store_audit
from capsafe_core.vocabulary import PAGE_LABELS, human_expr

DIMENSION = {"safety": "unsafe", "overrefusal": "refusal"}


@dataclass(frozen=True)
class Drawn:
    name: str
    sample_id: int
    items: pl.DataFrame  # generation_id, position, stratum, inclusion_prob
    strata: pl.DataFrame  # stratum, size, sd, expected, inclusion_prob, drawn


def population(
    v: pl.DataFrame,
    humans: pl.DataFrame,
    *,
    checkpoints: list[int],
    benchmarks: list[str],
    evaluator: str,
    coherence: str = "coherence",
) -> pl.DataFrame:
    """``generation_id, stratum, sd, yhat`` for the responses of ``checkpoints`` on ``benchmarks`` that
    ``evaluator`` gives a value; ``sd`` is the stratum's judge-error SD (``design.error_sd``)."""
    base = v.filter(pl.col("checkpoint_id").is_in(checkpoints) & pl.col("benchmark").is_in(benchmarks))
    dim = pl.col("bench_kind").replace_strict(DIMENSION, default="unsafe")
    value = pl.when(dim == "unsafe").then(value_expr("unsafe_rate")).otherwise(value_expr("refusal_rate"))
    judged = base.with_columns(value.alias("x")).filter(pl.col("x").is_not_null())
    pop = judged.filter(pl.col("evaluator") == evaluator).select(
        "generation_id", "mitigation", "seed", "step", "bench_kind", pl.col("x").alias("yhat")
    )
    safety = judged.filter(pl.col("ev_kind").is_in(["harm", "refusal"]))
    agree = safety.group_by("generation_id").agg(
        pl.when(pl.len() < 2)
        .then(pl.lit("one judge"))
        .when(pl.col("x").min() == pl.col("x").max())
        .then(pl.lit("agree"))
        .otherwise(pl.lit("disagree"))
        .alias("judges")
    )
    coh = pl.col("label").cast(pl.Utf8).alias("coh")
    flag = v.filter(pl.col("evaluator") == coherence).select("generation_id", coh)
    pop = pop.join(agree, on="generation_id", how="left").join(flag, on="generation_id", how="left")
    pop = pop.with_columns(pl.col("coh").fill_null("unjudged"), pl.col("judges").fill_null("one judge"))
    pop = pop.with_columns(
        pl.format("{} seed {} step {} · {} · judges {}", "mitigation", "seed", "step", "coh", "judges").alias("stratum")
    )
    people = humans.with_columns(
        pl.coalesce(human_expr("unsafe"), human_expr("refusal")).alias("_u"), human_expr("refusal").alias("_r")
    )
    labelled = pop.join(people.select("generation_id", "_u", "_r"), on="generation_id")
    err = labelled.with_columns(
        (pl.when(pl.col("bench_kind") == "overrefusal").then(pl.col("_r")).otherwise(pl.col("_u")) != pl.col("yhat"))
        .cast(pl.Int64)
        .alias("err")
    ).filter(pl.col("err").is_not_null())
    per = err.group_by("stratum").agg(pl.col("err").sum().alias("errors"), pl.len().alias("labels"))
    pop = pop.join(per, on="stratum", how="left").with_columns(pl.col("errors", "labels").fill_null(0))
    sd = [
        sampling.error_sd(sampling.prior_error(c, j), e, n)
        for c, j, e, n in pop.select("coh", "judges", "errors", "labels").iter_rows()
    ]
    return pop.with_columns(pl.Series("sd", sd, dtype=pl.Float64)).select("generation_id", "stratum", "sd", "yhat")


def _chosen_checkpoints(
    v: pl.DataFrame, setup: reports.ExperimentSetup, target: float | None, checkpoints: list[int] | None
) -> list[int]:
    """The checkpoints named, else those around the capability target (each run's first checkpoint
    reaching it and the one before), else, without a capability benchmark, every checkpoint."""
    have = set(v["checkpoint_id"].unique().to_list())
    if checkpoints:
        unknown = [c for c in checkpoints if c not in have]
        if unknown:
            raise BadInput(
                f"Checkpoint {unknown[0]} is not in experiment '{setup.experiment}'; "
                f"list its checkpoints with: capsafe ls checkpoints -e {setup.experiment}"
            )
        return checkpoints
    if not setup.capability_benchmark or not setup.scorer:
        return sorted(have)
    t = setup.target if target is None else target
    cap = capability_values(v, capability_benchmark=setup.capability_benchmark, scorer=setup.scorer)
    ids = target_weights(cap, t)["checkpoint_id"].to_list()
    if not ids:
        raise BadInput(f"No checkpoint of '{setup.experiment}' reaches capability {t:g}; pass --target or --checkpoint")
    return ids


def draw(
    store: Store,
    experiment: str,
    *,
    n: int,
    seed: int = 0,
    target: float | None = None,
    checkpoints: list[int] | None = None,
    benchmarks: list[str] | None = None,
    evaluator: str | None = None,
    name: str | None = None,
) -> Drawn:
    """Draw and store an audit sample of ``n`` generations (module docstring)."""
    if n < 1:
        raise BadInput(f"--n must be at least 1, not {n}")
    reports.experiments(store, experiment)
    v = reads.verdicts(store, experiment)
    setup = reports.setup(store, experiment, v)
    evaluator = evaluator or setup.default_evaluator
    if evaluator is None or evaluator not in setup.safety_evaluators:
        raise unknown_name("evaluator", str(evaluator), setup.safety_evaluators, hint="its safety judges")
    benches = benchmarks or setup.safety_benchmarks
    known = setup.safety_benchmarks + setup.overrefusal_benchmarks
    for b in benches:
        if b not in known:
            raise unknown_name("benchmark", b, known, hint=f"the safety and over-refusal benchmarks of {experiment}")
    cks = _chosen_checkpoints(v, setup, target, checkpoints)
    pop = population(v, reads.human_labels(store, experiment), checkpoints=cks, benchmarks=benches, evaluator=evaluator)
    if pop.height == 0:
        raise BadInput(f"No response of these checkpoints on {', '.join(benches)} is judged by {evaluator}")
    items = sampling.draw(pop, n, seed)
    name = name or f"audit-{store_audit.samples(store, experiment).height + 1}"
    drawn = items.group_by("stratum").agg(pl.len().alias("drawn"))
    strata = (
        sampling.probabilities(pop, n).join(drawn, on="stratum", how="left").with_columns(pl.col("drawn").fill_null(0))
    )
    design = {
        "n": n, "seed": seed, "evaluator": evaluator, "benchmarks": benches, "checkpoints": cks,
        "target": target if target is not None else (setup.target if setup.capability_benchmark else None),
        "strata": "checkpoint × coherence × judges agree", "allocation": "Neyman from labels so far (prior: "
        "design.PRIOR_ERROR)", "draw": "systematic, unequal probabilities", "population": pop.height,
        "max_generation_id": int(pop.select(pl.col("generation_id").max()).item()),
    }  # fmt: skip
    rows = items.select("generation_id", "position", "stratum", "inclusion_prob").iter_rows()
    sample = store_audit.create_sample(store, experiment, name=name, seed=seed, design=design, items=rows)
    return Drawn(name, sample, items, strata)


def design_of(store: Store, experiment: str, name: str | None = None) -> Design:
    """An audit sample's design (the newest where ``name`` is None): its items and its population."""
    import json

    sid = store_audit.sample_id(store, experiment, name)
    row = store_audit.samples(store, experiment).filter(pl.col("sample_id") == sid).row(0, named=True)
    meta = json.loads(row["design"] or "{}")
    items = store_audit.items(store, sid).select("generation_id", "inclusion_prob")
    return Design(items, tuple(meta.get("benchmarks") or ()), meta.get("max_generation_id"), str(row["name"]))


def design_frame(store: Store, experiment: str, name: str | None = None) -> pl.DataFrame:
    """``generation_id, inclusion_prob`` of an audit sample (the newest where ``name`` is None)."""
    return design_of(store, experiment, name).items


EXPORT_COLUMNS = ["sample", "position", "generation_id", "stratum", "inclusion_prob", "mitigation", "seed", "step"]
EXPORT_COLUMNS += ["benchmark", "prompt_id", "prompt", "response", "annotator", "label", "coherent", "note"]


def _cell(value: object) -> object:
    """Text a spreadsheet would run as a formula is prefixed with ``'`` (model outputs are untrusted)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def export_csv(store: Store, experiment: str, out: Path, *, name: str | None = None) -> int:
    """Write the sample as CSV (one row per item, in the drawn order, label columns empty); returns rows."""
    sid = store_audit.sample_id(store, experiment, name)
    sample_name = store_audit.samples(store, experiment).filter(pl.col("sample_id") == sid)["name"][0]
    rows = store_audit.export_rows(store, sid)
    with out.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=EXPORT_COLUMNS)
        w.writeheader()
        for r in rows.iter_rows(named=True):
            r = {**r, "sample": sample_name, "annotator": "", "label": "", "coherent": "", "note": ""}
            w.writerow({k: _cell(r[k]) for k in EXPORT_COLUMNS})
    return rows.height


def import_csv(
    store: Store, experiment: str, path: Path, *, annotator: str | None = None, name: str | None = None
) -> dict[str, int]:
    """Read labels from an exported sample (``generation_id``, ``label``, optional ``coherent``, ``note``,
    ``annotator``); all rows are checked before anything is written, in one transaction. Rows without a
    label are counted as not labelled yet; a label equal to the annotator's latest is not added again."""
    sid = store_audit.sample_id(store, experiment, name)
    in_sample = set(store_audit.items(store, sid)["generation_id"].to_list())
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BadInput(f"Cannot read {path} as a CSV file ({e}); export one with: capsafe audit export") from e
    missing = [c for c in ("generation_id", "label") if c not in fields]
    if missing:
        raise BadInput(f"{path} lacks the column(s) {', '.join(missing)}; start from: capsafe audit export")
    if annotator is None and "annotator" not in fields:
        raise BadInput(f"{path} has no annotator column; pass --annotator NAME")
    out, skipped = [], 0
    for i, r in enumerate(rows, start=2):
        label = verdicts.normalize_human_label(r.get("label"), column="label")
        if label is None:
            skipped += 1
            continue
        if label not in PAGE_LABELS:
            raise BadInput(f"{path} line {i}: label '{r['label']}'; use {', '.join(PAGE_LABELS)}")
        try:
            gid = int(str(r["generation_id"]).strip())
        except ValueError:
            raise BadInput(f"{path} line {i}: generation_id '{r['generation_id']}' is not a number") from None
        if gid not in in_sample:
            raise BadInput(f"{path} line {i}: generation {gid} is not in this audit sample; label only its rows")
        who = (annotator or r.get("annotator") or "").strip()
        if not who:
            raise BadInput(f"{path} line {i}: no annotator; fill the column or pass --annotator NAME")
        coherent = _coherent(r.get("coherent"), path, i)
        out.append((gid, who, label, coherent, (r.get("note") or "").strip() or None, now()))
    with store.transaction():
        added = store.add_human_labels(out, source="audit")
    return {"labels": len(out), "added": added, "not_labelled": skipped}


def _coherent(value: str | None, path: Path, line: int) -> int | None:
    key = (value or "").strip().lower()
    if not key:
        return None
    if key in {"1", "yes", "y", "true", "coherent"}:
        return 1
    if key in {"0", "no", "n", "false", "incoherent"}:
        return 0
    raise BadInput(f"{path} line {line}: coherent '{value}'; use yes or no (or leave it empty)")


def queue(items: pl.DataFrame, humans: pl.DataFrame, *, annotator: str) -> pl.DataFrame:
    """The sample's items ``annotator`` has not labelled yet (a label from the flagged queue does not count:
    it cannot feed estimates), in the drawn order."""
    mine = _estimating(humans).filter(pl.col("annotator") == annotator).select("generation_id")
    return items.join(mine, on="generation_id", how="anti").sort("position")


def progress(store: Store, experiment: str) -> pl.DataFrame:
    """Per audit sample: name, seed, n, created_at, and ``labelled`` (annotator: count, latest labels)."""
    out = []
    humans = _estimating(reads.human_labels(store, experiment))
    for s in store_audit.samples(store, experiment).iter_rows(named=True):
        ids = store_audit.items(store, s["sample_id"]).select("generation_id")
        done = humans.join(ids, on="generation_id", how="semi").group_by("annotator").len().sort("annotator")
        labelled = ", ".join(f"{a}: {k}" for a, k in done.iter_rows()) or "none"
        out.append(
            {"name": s["name"], "seed": s["seed"], "n": s["n"], "created_at": s["created_at"], "labelled": labelled}
        )
    schema = {"name": pl.Utf8, "seed": pl.Int64, "n": pl.Int64, "created_at": pl.Utf8, "labelled": pl.Utf8}
    return pl.DataFrame(out, schema=schema)


def chosen_design(
    store: Store, experiment: str, annotator: str, name: str | None = None
) -> tuple[str | None, Design | None]:
    """The audit sample whose design weighs ``annotator``'s labels: ``name`` (``none``: no design, the
    labels taken as a random sample), else the newest sample holding any of their labels (not counting
    the flagged queue's), else none."""
    if name == "none":
        return None, None
    if name is not None:
        return name, design_of(store, experiment, name)
    humans = _estimating(reads.human_labels(store, experiment)).filter(pl.col("annotator") == annotator)
    for s in reversed(store_audit.samples(store, experiment).to_dicts()):
        frame = store_audit.items(store, s["sample_id"]).select("generation_id")
        if frame.join(humans, on="generation_id", how="semi").height:
            return str(s["name"]), design_of(store, experiment, str(s["name"]))
    return None, None


def _estimating(humans: pl.DataFrame) -> pl.DataFrame:
    """Labels that may feed estimates: all but the flagged queue's (chosen because they look wrong)."""
    if "source" not in humans.columns:
        return humans
    return humans.filter(pl.col("source").fill_null("") != "flagged")

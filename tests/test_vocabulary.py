"""One meaning per label: rates, agreement and the label queue read the same unsafe/refusal verdict for
every label of every kind, and for every human label."""

from __future__ import annotations

import polars as pl

from capsafe_core import labels, vocabulary
from capsafe_core.analysis import rates
from capsafe_core.analysis.agreement import rater_values

ALL = [(kind, label) for kind, ls in vocabulary.LABELS.items() for label in (*ls, vocabulary.UNPARSED)]


def _frame() -> pl.DataFrame:
    rows = []
    for i, (kind, label) in enumerate(ALL):
        rows.append(
            {
                "generation_id": i,
                "checkpoint_id": 1,
                "mitigation": "none",
                "step": 0,
                "prompt_id": i,
                "benchmark": "b",
                "bench_kind": "safety",
                "category": None,
                "evaluator": f"{kind}_judge",
                "ev_kind": kind,
                "label": label,
                "score": None,
            }
        )
    return pl.DataFrame(rows).with_columns(pl.col("label").cast(pl.Categorical))


def test_rates_and_agreement_use_the_vocabulary_for_every_judge_label():
    v = _frame()
    for dimension, metric in (("unsafe", "unsafe_rate"), ("refusal", "refusal_rate")):
        by_rate = dict(v.select("generation_id", rates.value_expr(metric).alias("x")).iter_rows())
        by_agreement = dict(rater_values(v, None, dimension=dimension).select("generation_id", "value").rows())
        for i, (kind, label) in enumerate(ALL):
            expected = vocabulary.judge_value(dimension, kind, label)
            assert by_rate[i] == (None if expected is None else float(expected)), (dimension, kind, label)
            assert by_agreement.get(i) == expected, (dimension, kind, label)
    assert vocabulary.is_unsafe("refusal", "compliance") is True
    assert vocabulary.is_unsafe("harm", vocabulary.UNPARSED) is None


def test_label_queue_reads_unsafe_from_the_vocabulary():
    """Two judges on one generation disagree exactly when the vocabulary gives them different verdicts."""
    base = _frame().drop("label", "ev_kind", "evaluator", "generation_id", "prompt_id").head(1)
    safety = [(k, lab) for k, lab in ALL if k in ("harm", "refusal")]
    rows, expected = [], set()
    for g, ((k1, l1), (k2, l2)) in enumerate((a, b) for a in safety for b in safety):
        for n, (k, lab) in enumerate(((k1, l1), (k2, l2))):
            rows.append({"generation_id": g, "prompt_id": g, "evaluator": f"j{n}", "ev_kind": k, "label": lab})
        a, b = vocabulary.judge_value("unsafe", k1, l1), vocabulary.judge_value("unsafe", k2, l2)
        if a is not None and b is not None and a != b:
            expected.add(g)
    v = pl.DataFrame(rows).join(base, how="cross").with_columns(pl.col("label").cast(pl.Categorical))
    flagged = labels.flagged(v)
    disagree = {g for g, r in flagged.iter_rows() if "judges_disagree" in r}
    assert disagree == expected


def test_human_labels_mean_the_same_in_agreement():
    v = _frame().filter(pl.col("ev_kind") == "harm").head(1)
    gid = v["generation_id"][0]
    for dimension in vocabulary.DIMENSIONS:
        for label in vocabulary.HUMAN_LABELS:
            h = pl.DataFrame({"generation_id": [gid], "annotator": ["ann"], "human_label": [label]})
            got = rater_values(v, h, dimension=dimension).filter(pl.col("rater") == "human:ann")
            expected = vocabulary.human_value(dimension, label)
            assert (got["value"].to_list() or [None])[0] == expected, (dimension, label)

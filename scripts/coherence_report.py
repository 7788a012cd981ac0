"""Precision and recall of the coherence flag on the hand-labelled sets (``data/coherence/``).

Run: python scripts/coherence_report.py [--reference-model smollm2-135m-instruct] [--set heldout|labelled|both]

Prints, for the tuning and the validation split of ``heldout.jsonl`` (and the first tuning set
``labelled.jsonl``), each component's and the combined flag's precision and recall of ``incoherent``;
then the false-positive rate on the fluent answers of large models (XSTest and JailbreakBench
completions), short (under 150 words) and long, and the flag's misses on the validation split.
Without ``--reference-model`` perplexity is left out, as it is for imported responses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from capsafe_core.evaluators.calibration import flag, heldout_set, labelled_set, precision_recall
from capsafe_core.evaluators.coherence import COMPONENTS

LARGE = ("xstest-v2", "jailbreakbench")  # sources whose answers are large models' fluent text


def table(frame: pl.DataFrame, title: str) -> None:
    n_bad = int((frame["truth"] == "incoherent").sum())
    print(f"\n{title}: {frame.height} responses, {n_bad} incoherent")
    for col in (*[c for c in COMPONENTS if c in frame.columns], "coherence"):
        pr = precision_recall(frame, col)
        print(
            f"  {col:12} precision {pr['precision']:.3f}  recall {pr['recall']:.3f}  "
            f"(tp {pr['tp']}, fp {pr['fp']}, fn {pr['fn']})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reference-model", default=None, help="perplexity's model (default: perplexity left out)")
    args = ap.parse_args()
    frame = flag(heldout_set(), reference_model=args.reference_model, device="cpu")
    old = flag(labelled_set(), reference_model=args.reference_model, device="cpu")
    with_ppl = f"perplexity under {args.reference_model}" if args.reference_model else "no perplexity"
    print(f"coherence flag ({with_ppl})")
    table(frame.filter(pl.col("split") == "tune"), "heldout.jsonl, tuning split")
    table(frame.filter(pl.col("split") == "validation"), "heldout.jsonl, validation split")
    table(old, "labelled.jsonl (the first tuning set)")
    fluent = frame.filter(pl.col("source").str.contains("^(" + "|".join(LARGE) + ")") & (pl.col("truth") == "coherent"))
    print("\nfalse-positive rate on large models' fluent answers (both splits):")
    for name, part in (
        ("short (< 150 words)", fluent.filter(pl.col("words") < 150)),
        ("long (150+ words)", fluent.filter(pl.col("words") >= 150)),
        ("all", fluent),
    ):
        fp = int((part["coherence"] == "incoherent").sum())
        print(f"  {name:20} {fp}/{part.height} flagged = {fp / max(part.height, 1):.1%}")
    wrong = frame.filter((pl.col("coherence") != pl.col("truth")) & (pl.col("split") == "validation"))
    print(f"\nvalidation errors ({wrong.height}):")
    for r in wrong.iter_rows(named=True):
        parts = [c for c in COMPONENTS if c in frame.columns and r[c] == "incoherent"]
        why = "; ".join(f"{c}: {r[c + '_why']}" for c in parts) or "all components pass"
        print(f"  {r['id']} ({r['source']}): truth {r['truth']}, flag {r['coherence']}: {why}")


if __name__ == "__main__":
    main()

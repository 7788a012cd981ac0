"""Precision and recall of the coherence flag on the labelled set data/coherence/labelled.jsonl.

Run: python scripts/coherence_report.py [--reference-model smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse

import polars as pl

from capsafe_core.evaluators.calibration import flag, labelled_set, precision_recall
from capsafe_core.evaluators.coherence import COMPONENTS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reference-model", default="smollm2-135m-instruct")
    args = ap.parse_args()
    rows = labelled_set()
    frame = flag(rows, reference_model=args.reference_model)
    real = sum(not r["source"].startswith("written") for r in rows)
    print(
        f"{len(rows)} labelled responses ({real} real SmolLM2 outputs), "
        f"{sum(r['label'] == 'incoherent' for r in rows)} incoherent"
    )
    for col in (*COMPONENTS, "coherence"):
        pr = precision_recall(frame, col)
        print(
            f"{col:12} precision {pr['precision']:.3f}  recall {pr['recall']:.3f}  "
            f"(tp {pr['tp']}, fp {pr['fp']}, fn {pr['fn']})"
        )
    wrong = frame.filter(pl.col("coherence") != pl.col("truth"))
    for r in wrong.iter_rows(named=True):
        why = "; ".join(f"{c}: {r[c + '_why']}" for c in COMPONENTS if r[c] == "incoherent") or "all components pass"
        print(f"  {r['id']} {r['category']}: truth {r['truth']}, flag {r['coherence']} — {why}")


if __name__ == "__main__":
    main()

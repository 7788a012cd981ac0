"""Train ``refusal_clf`` on XSTest's human-labelled completions and write data/refusal_clf/refusal_clf.json.

    python scripts/train_refusal_clf.py [--xstest ../shared/datasets/xstest/model_completions]

Labels: ``2_full_refusal`` and ``3_partial_refusal`` → refusal (1), ``1_full_compliance`` → compliance (0).
Cross-validation is grouped by prompt (all five models' answers to one prompt are in the same fold),
so the reported accuracy and Cohen's κ are on prompts the classifier has not seen.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix
from sklearn.model_selection import GroupKFold, cross_val_predict

from capsafe_core.evaluators.embeddings import minilm
from capsafe_core.evaluators.refusal_clf import features, model_path

REFUSAL = {"2_full_refusal": 1, "3_partial_refusal": 1, "1_full_compliance": 0}


def load(folder: Path) -> pl.DataFrame:
    files = sorted(folder.glob("xstest_v2_completions_*.csv"))
    if not files:
        raise SystemExit(f"No xstest_v2_completions_*.csv in {folder}")
    frames = [
        pl.read_csv(f, infer_schema_length=0).with_columns(pl.lit(f.stem.rsplit("_", 1)[-1]).alias("model"))
        for f in files
    ]
    return pl.concat(frames).with_columns(pl.col("completion").fill_null(""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--xstest", type=Path, default=Path("../shared/datasets/xstest/model_completions"))
    ap.add_argument("--out", type=Path, default=model_path())
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--C", type=float, default=1.0)
    args = ap.parse_args()

    data = load(args.xstest)
    y = np.array([REFUSAL[v] for v in data["final_label"]])
    x = features(minilm("cpu"), data["prompt"].to_list(), data["completion"].to_list())
    groups = data["id"].to_numpy()
    clf = LogisticRegression(C=args.C, max_iter=2000)
    pred = cross_val_predict(clf, x, y, groups=groups, cv=GroupKFold(n_splits=args.folds))
    cv = {
        "folds": args.folds,
        "grouped_by": "prompt id",
        "accuracy": round(float(accuracy_score(y, pred)), 4),
        "cohen_kappa": round(float(cohen_kappa_score(y, pred)), 4),
        "confusion": confusion_matrix(y, pred).tolist(),
        "per_model_accuracy": {
            m: round(float(accuracy_score(y[mask], pred[mask])), 4)
            for m in sorted(set(data["model"]))
            for mask in [data["model"].to_numpy() == m]
        },
    }
    clf.fit(x, y)
    out = {
        "name": "refusal_clf",
        "features": "MiniLM (all-MiniLM-L6-v2) normalised embeddings: [e(response), e(prompt) * e(response)]",
        "labels": {"1": "refusal (full or partial)", "0": "compliance"},
        "threshold": 0.5,
        "C": args.C,
        "trained_on": f"XSTest v2 human-labelled completions ({len(y)} rows, {len(set(data['model']))} models)",
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "class_balance": {"refusal": int(y.sum()), "compliance": int(len(y) - y.sum())},
        "cv": cv,
        "intercept": float(clf.intercept_[0]),
        "coef": [round(float(c), 6) for c in clf.coef_[0]],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"refusal_clf: grouped {args.folds}-fold CV accuracy {cv['accuracy']:.3f}, κ {cv['cohen_kappa']:.3f}")
    print(f"per model: {cv['per_model_accuracy']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

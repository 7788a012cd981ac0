"""Train the ``nonsense`` coherence component (logistic regression over text statistics and MiniLM
cosines) on the tuning part of the hand-labelled sets; writes ``data/coherence/nonsense.json``.

Run: python scripts/train_nonsense.py

Training rows: ``data/coherence/labelled.jsonl`` (the first tuning set) and the ``tune`` split of
``data/coherence/heldout.jsonl``; the ``validation`` split is never read here. The regularisation and
the threshold are chosen by 5-fold cross-validation grouped by prompt: the highest recall whose
cross-validated precision is at least ``PRECISION_GOAL``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from capsafe_core.evaluators.base import Item
from capsafe_core.evaluators.calibration import heldout_set, labelled_set
from capsafe_core.evaluators.embeddings import minilm
from capsafe_core.evaluators.nonsense import FEATURES, features, weights_path

PRECISION_GOAL = 0.93
C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0)


def main() -> None:
    rows = labelled_set() + [r for r in heldout_set() if r["split"] == "tune"]
    items = [
        Item(
            r["prompt"],
            r["response"],
            benchmark_kind=r.get("benchmark_kind") or "safety",
            finish_reason=r.get("finish_reason"),
        )
        for r in rows
    ]
    x = features(minilm("cpu"), items)
    y = np.array([r["label"] == "incoherent" for r in rows], dtype=int)
    groups = np.array([int(hashlib.sha256(r["prompt"].encode()).hexdigest()[:8], 16) for r in rows])
    best = None
    for c in C_GRID:
        prob = np.zeros(len(y))
        for train, test in GroupKFold(n_splits=5).split(x, y, groups):
            scaler = StandardScaler().fit(x[train])
            clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(
                scaler.transform(x[train]), y[train]
            )
            prob[test] = clf.predict_proba(scaler.transform(x[test]))[:, 1]
        for t in np.arange(0.3, 0.96, 0.01):
            pred = prob >= t
            tp = int((pred & (y == 1)).sum())
            precision = tp / pred.sum() if pred.sum() else 0.0
            recall = tp / y.sum()
            if precision >= PRECISION_GOAL and (best is None or recall > best["recall"]):
                best = {"C": c, "threshold": round(float(t), 2), "precision": precision, "recall": recall}
    assert best is not None, "no threshold reaches the precision goal"
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=best["C"], class_weight="balanced", max_iter=2000).fit(scaler.transform(x), y)
    out = {
        "features": list(FEATURES),
        "mean": scaler.mean_.tolist(),
        "scale": scaler.scale_.tolist(),
        "coef": clf.coef_[0].tolist(),
        "intercept": float(clf.intercept_[0]),
        "threshold": best["threshold"],
        "C": best["C"],
        "trained_on": {"rows": len(y), "incoherent": int(y.sum()), "sets": ["labelled.jsonl", "heldout.jsonl (tune)"]},
        "cross_validation": {
            "folds": "5, grouped by prompt",
            "precision": round(best["precision"], 3),
            "recall": round(best["recall"], 3),
        },
    }
    weights_path().write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: out[k] for k in ("C", "threshold", "trained_on", "cross_validation")}, indent=1))
    for name, coef in sorted(zip(FEATURES, out["coef"], strict=True), key=lambda kv: -abs(kv[1])):
        print(f"  {name:18} {coef:+.2f}")


if __name__ == "__main__":
    main()

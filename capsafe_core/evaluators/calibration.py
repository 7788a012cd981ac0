"""Scoring the coherence flag against a labelled set (``data/coherence/labelled.jsonl``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from capsafe_core import evaluators
from capsafe_core.benchmarks import data_dir
from capsafe_core.evaluators.base import Item
from capsafe_core.evaluators.coherence import COMPONENTS


def labelled_set(path: Path | None = None) -> list[dict[str, Any]]:
    p = path or data_dir() / "coherence" / "labelled.jsonl"
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def flag(rows: list[dict[str, Any]], *, reference_model: str, device: str = "auto") -> pl.DataFrame:
    """Each component's and the combined verdict on every labelled row."""
    items = [Item(prompt=r["prompt"], response=r["response"], finish_reason=r.get("finish_reason")) for r in rows]
    out: dict[str, list[Any]] = {
        "id": [r["id"] for r in rows],
        "category": [r["category"] for r in rows],
        "truth": [r["label"] for r in rows],
    }
    priors: list[dict[str, evaluators.Verdict]] = [{} for _ in items]
    for name in COMPONENTS:
        fn = evaluators.build(name, reference_model=reference_model, device=device)
        verdicts = fn(items)
        out[name] = [v.label for v in verdicts]
        out[f"{name}_why"] = [v.explanation for v in verdicts]
        for p, v in zip(priors, verdicts, strict=True):
            p[name] = v
    combined = evaluators.build("coherence")(
        [Item(prompt=i.prompt, response=i.response, prior=p) for i, p in zip(items, priors, strict=True)]
    )
    out["coherence"] = [v.label for v in combined]
    return pl.DataFrame(out)


def precision_recall(frame: pl.DataFrame, column: str = "coherence") -> dict[str, float]:
    """Precision and recall of ``incoherent`` (the flag) against the human label."""
    pred = frame[column] == "incoherent"
    truth = frame["truth"] == "incoherent"
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    return {
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }

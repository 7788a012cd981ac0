"""Scoring the coherence flag against hand-labelled sets (``data/coherence/``): ``labelled.jsonl``, the
set the first thresholds were tuned on, and ``heldout.jsonl``, real responses split by prompt into a
tuning and a validation part (see ``data/coherence/README.md``)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl

from capsafe_core import arithmetic, evaluators
from capsafe_core.benchmarks import data_dir
from capsafe_core.evaluators.base import Item
from capsafe_core.evaluators.coherence import COMPONENTS
from capsafe_core.evaluators.leakage import learn_formats


def labelled_set(path: Path | None = None) -> list[dict[str, Any]]:
    p = path or data_dir() / "coherence" / "labelled.jsonl"
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def heldout_set() -> list[dict[str, Any]]:
    return labelled_set(data_dir() / "coherence" / "heldout.jsonl")


@cache
def task_formats(task: str) -> tuple[str, ...]:
    """The answer formats an experiment on ``task`` learns (from its fine-tuning answers and references)."""
    if task != "arithmetic":
        return ()
    problems = arithmetic.train_split(500, seed=0)
    texts = [chat[-1]["content"] for chat in arithmetic.chat_examples(problems)] + [str(p.answer) for p in problems]
    return tuple(learn_formats(texts))


def flag(rows: list[dict[str, Any]], *, reference_model: str | None = None, device: str = "auto") -> pl.DataFrame:
    """Each component's and the combined verdict on every labelled row. A row's ``task`` (the capability
    task of the experiment its response would be stored in) gives ``task_format`` its answer formats;
    without ``reference_model`` perplexity is left out, as for imported responses."""
    items = [
        Item(
            prompt=r["prompt"],
            response=r["response"],
            finish_reason=r.get("finish_reason"),
            benchmark_kind=r.get("benchmark_kind") or "safety",
        )
        for r in rows
    ]
    out: dict[str, list[Any]] = {
        "id": [r["id"] for r in rows],
        "source": [r["source"] for r in rows],
        "split": [r.get("split") or "tune" for r in rows],
        "truth": [r["label"] for r in rows],
        "words": [len(r["response"].split()) for r in rows],
    }
    priors: list[dict[str, evaluators.Verdict]] = [{} for _ in items]
    for name in COMPONENTS:
        if name == "perplexity" and not reference_model:
            continue
        spec = evaluators.get(name)
        idx = [i for i, it in enumerate(items) if it.benchmark_kind in spec.applies_to]
        labels: list[str | None] = [None] * len(items)
        whys: list[str | None] = [None] * len(items)
        groups: dict[str, list[int]] = {}
        for i in idx:
            groups.setdefault(rows[i].get("task") or "", []).append(i)
        for task, members in groups.items():
            options: dict[str, Any] = {"device": device, "reference_model": reference_model}
            if "answer_formats" in spec.options:
                options["answer_formats"] = task_formats(task)
            fn = evaluators.build(name, **{k: v for k, v in options.items() if k in spec.options})
            for i, v in zip(members, fn([items[i] for i in members]), strict=True):
                labels[i], whys[i] = v.label, v.explanation
                priors[i][name] = v
        out[name], out[f"{name}_why"] = labels, whys
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

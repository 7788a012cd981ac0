"""``nonsense``: text that reads as language but says nothing: word salad, near-repeats, circular or
name-repeating short answers. A logistic regression over text statistics that need no language model
(so it works on imported responses) and two MiniLM cosines, trained by ``scripts/train_nonsense.py``
on the tuning part of the hand-labelled coherence sets (``data/coherence/``); its weights, threshold
and cross-validated figures are in ``data/coherence/nonsense.json``. One rule comes first: word salad
(``is_salad``: few known words and few function words), which a linear score blurs with short lists.

Features (``FEATURES``): rep-4; how much of the text its most repeated 5-gram covers; the share of
sentences / list items nearly repeating an earlier one (word Jaccard ≥ 0.6); the share of English stop
words (real sentences are ~40% function words, salad has few); the share of words MiniLM's WordPiece
vocabulary knows whole; mean word length; the share of words with capitals or digits inside; the
length (log words); distinct content words / content words; the most frequent content word's share;
the share of its content words found in the prompt; the cosine to the prompt and to a refusal. Code
blocks are left out (code is not prose); a cut at the token limit is not a feature (long fluent answers
are cut too).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from capsafe_core.benchmarks import data_dir
from capsafe_core.evaluators.base import Evaluator, Item, Verdict, evaluator, read_weights

FEATURES = (
    "rep4",
    "ngram_cover",
    "near_repeats",
    "stop_share",
    "known_share",
    "mean_word_len",
    "odd_case_share",
    "log_words",
    "distinct_content",
    "top_content_share",
    "prompt_overlap",
    "cos_prompt",
    "cos_refusal",
)
_WORDS = re.compile(r"[A-Za-z0-9']+")
_PIECES = re.compile(r"[A-Za-z0-9]+")  # "can't" → "can", "t": as WordPiece splits it
MIN_WORDS = 3  # a one- or two-word answer ("Paris.") gives the statistics nothing to go on
SALAD_MIN_WORDS = 8
SALAD_KNOWN_MIN = 0.7  # word salad: under this share of known words, or under SALAD_KNOWN_MAX ...
SALAD_KNOWN_MAX = 0.8
SALAD_STOP_MAX = 0.3  # ... and under this share of function words
_CODE = re.compile(r"```.*?(```|$)", re.S)


def weights_path() -> Path:
    return data_dir() / "coherence" / "nonsense.json"


@cache
def load_weights(path: str | None = None) -> dict[str, Any]:
    return read_weights(Path(path or weights_path()), what="nonsense classifier", train="scripts/train_nonsense.py")


def near_repeats(text: str) -> float:
    """Share of sentences / list items (3+ words) whose word set is ≥ 60% like an earlier one's."""
    from capsafe_core.evaluators.coherence import segments

    segs = [set(_WORDS.findall(s)) for s in segments(text)]
    segs = [s for s in segs if len(s) >= 3]
    if len(segs) < 3:
        return 0.0
    dups = sum(any(len(s & t) / len(s | t) >= 0.6 for t in segs[:i]) for i, s in enumerate(segs))
    return dups / len(segs)


def _known_share(text: str, vocab: set[str]) -> float:
    pieces = [w.lower() for w in _PIECES.findall(text)]
    return sum(w in vocab for w in pieces) / len(pieces) if pieces else 0.0


def text_features(prompt: str, response: str, vocab: set[str]) -> list[float]:
    """The statistics of ``FEATURES`` but the two cosines (see the module docstring)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    from capsafe_core.evaluators.coherence import max_ngram_repeats, rep_n
    from capsafe_core.evaluators.echo import content_words, overlap

    text = _CODE.sub(" ", response)
    words = _WORDS.findall(text)
    lower = [w.lower() for w in words]
    n = len(words)
    top = max_ngram_repeats(text)
    content = content_words(text)
    counts = Counter(content)
    return [
        rep_n(text),
        min(1.0, top * 5 / n) if n and top > 1 else 0.0,
        near_repeats(text),
        sum(w in ENGLISH_STOP_WORDS for w in lower) / n if n else 0.0,
        _known_share(text, vocab),
        sum(map(len, words)) / n if n else 0.0,
        sum(any(c.isupper() or c.isdigit() for c in w[1:]) for w in words) / n if n else 0.0,
        math.log1p(n),
        len(counts) / len(content) if content else 1.0,
        counts.most_common(1)[0][1] / len(content) if content else 0.0,
        overlap(prompt, text)[0],
    ]


def features(model: Any, items: Sequence[Item], *, batch_size: int = 64) -> np.ndarray:
    """One row of ``FEATURES`` per item."""
    from capsafe_core.evaluators.coherence import REFUSAL_EXEMPLARS
    from capsafe_core.evaluators.embeddings import embed

    vocab = set(model.tokenizer.get_vocab())
    p = embed(model, [it.prompt for it in items], batch_size=batch_size)
    r = embed(model, [it.response for it in items], batch_size=batch_size)
    refusal = embed(model, REFUSAL_EXEMPLARS)
    cos_p = (p * r).sum(axis=1)
    cos_r = (r @ refusal.T).max(axis=1)
    rows = []
    for it, cp, cr in zip(items, cos_p, cos_r, strict=True):
        rows.append([*text_features(it.prompt, it.response, vocab), float(cp), float(cr)])
    return np.asarray(rows, dtype=np.float64)


def is_salad(f: dict[str, float]) -> bool:
    """Words in no sentence: few words a vocabulary knows and few function words, in a text long enough."""
    return math.expm1(f["log_words"]) >= SALAD_MIN_WORDS - 0.5 and (
        f["known_share"] < SALAD_KNOWN_MIN or (f["known_share"] < SALAD_KNOWN_MAX and f["stop_share"] < SALAD_STOP_MAX)
    )


def probabilities(x: np.ndarray, weights: dict[str, Any]) -> np.ndarray:
    """P(nonsense) per row: the logistic regression on standardised features."""
    from scipy.special import expit

    z = (x - np.asarray(weights["mean"])) / np.asarray(weights["scale"])
    return np.asarray(expit(z @ np.asarray(weights["coef"]) + float(weights["intercept"])))


@evaluator(
    name="nonsense",
    kind="coherence",
    version="1",
    description="says nothing: word salad, near-repeats, circular or name-repeating answers (trained classifier)",
    options=("device", "batch_size", "weights_path"),
    needs_models=True,
)
def nonsense(*, device: str = "auto", batch_size: int = 64, weights_path: str | None = None) -> Evaluator:
    from capsafe_core.backends.models import pick_device
    from capsafe_core.evaluators.embeddings import minilm

    weights = load_weights(weights_path)
    model = minilm(pick_device(device))
    threshold = float(weights["threshold"])

    def run(items: Sequence[Item]) -> list[Verdict]:
        if not items:
            return []
        x = features(model, items, batch_size=batch_size)
        out = []
        for it, row, prob in zip(items, x, probabilities(x, weights), strict=True):
            if not it.response.strip():
                out.append(Verdict("incoherent", 0.0, "empty response"))
                continue
            p = float(prob)
            if len(_WORDS.findall(it.response)) < MIN_WORDS:
                out.append(Verdict("coherent", 1.0, f"too short to tell (under {MIN_WORDS} words)"))
                continue
            shown = dict(zip(FEATURES, row, strict=True))
            stats = ", ".join(
                f"{k} {shown[k]:.2f}" for k in ("stop_share", "known_share", "near_repeats", "ngram_cover")
            )
            if is_salad(shown):
                why = f"word salad: {shown['known_share']:.0%} known words, {shown['stop_share']:.0%} function words"
                out.append(Verdict("incoherent", round(min(1 - p, shown["known_share"] / 2), 4), why))
                continue
            why = f"P(nonsense) = {p:.2f} (threshold {threshold:.2f}); {stats}"
            out.append(Verdict("incoherent" if p >= threshold else "coherent", round(1 - p, 4), why))
        return out

    return run

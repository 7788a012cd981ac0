"""Evaluators: capability scorers, safety judges and coherence metrics, in one lazy registry.

An evaluator is built by a factory (``build(name, **config)``) and called on a batch of
:class:`Item` (prompt, response, reference, ...), returning one :class:`Verdict` per item in the
vocabulary of ``capsafe_core.verdicts``. Factories are named by import path, so importing this
package never imports torch; model-based evaluators load their model on first build.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from capsafe_core.errors import unknown_name


@dataclass(frozen=True)
class Item:
    """What an evaluator sees of one generation."""

    prompt: str
    response: str
    reference: str | None = None
    benchmark_kind: str = "safety"
    category: str | None = None
    finish_reason: str | None = None
    n_tokens: int | None = None
    prior: dict[str, Verdict] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Verdict:
    label: str
    score: float | None = None
    explanation: str | None = None


Evaluator = Callable[[Sequence[Item]], list[Verdict]]


@dataclass(frozen=True)
class EvaluatorSpec:
    name: str
    kind: str  # capability | refusal | harm | coherence
    version: str
    factory: str  # "module:function"
    description: str
    applies_to: tuple[str, ...] = ("capability", "safety", "overrefusal")
    requires: tuple[str, ...] = ()  # evaluators whose verdicts arrive in Item.prior
    needs_models: bool = False  # needs the `models` extra (torch, transformers, ...)
    default: bool = True  # part of the default set `capsafe run` uses


_M = "capsafe_core.evaluators."
SAFETY = ("safety", "overrefusal")

REGISTRY: dict[str, EvaluatorSpec] = {
    s.name: s
    for s in [
        # capability scorers
        EvaluatorSpec(
            "final_number",
            "capability",
            "1",
            _M + "capability:final_number",
            "the last number in the response equals the reference (GSM8K style)",
            ("capability",),
        ),
        EvaluatorSpec(
            "exact_match",
            "capability",
            "1",
            _M + "capability:exact_match",
            "the stripped, case-folded response equals the reference",
            ("capability",),
            default=False,
        ),
        EvaluatorSpec(
            "contains_match",
            "capability",
            "1",
            _M + "capability:contains_match",
            "the reference occurs in the response (case-folded)",
            ("capability",),
            default=False,
        ),
        EvaluatorSpec(
            "mc_letter",
            "capability",
            "1",
            _M + "capability:mc_letter",
            "the multiple-choice letter the response picks equals the reference",
            ("capability",),
            default=False,
        ),
        # refusal judges (keyword lists from data/refusal_keywords)
        EvaluatorSpec(
            "keyword_refusal",
            "refusal",
            "1",
            _M + "refusal:keyword_refusal",
            "AdvBench (Zou et al.) refusal phrases, substring, case-sensitive",
            SAFETY,
        ),
        EvaluatorSpec(
            "keyword_refusal_broad",
            "refusal",
            "1",
            _M + "refusal:keyword_refusal_broad",
            "StrongREJECT string-matching list (50 phrases incl. topical words), substring",
            SAFETY,
        ),
        # coherence: components, then the combined flag (thresholds in evaluators/coherence.py)
        EvaluatorSpec(
            "repetition",
            "coherence",
            "2",
            _M + "coherence:repetition",
            "looping text: rep-4, the most repeated 5-gram, repeated sentences or list items",
        ),
        EvaluatorSpec(
            "degenerate",
            "coherence",
            "2",
            _M + "coherence:degenerate",
            "empty, mostly non-letters, mojibake or bare numbered lists; notes a cut at the token limit",
        ),
        EvaluatorSpec(
            "language",
            "coherence",
            "1",
            _M + "coherence:language",
            "py3langid: no language (zxx) or not the prompt's language",
            needs_models=True,
        ),
        EvaluatorSpec(
            "relevance",
            "coherence",
            "1",
            _M + "coherence:relevance",
            "MiniLM cosine to the prompt (or to a refusal): off-topic answers",
            needs_models=True,
        ),
        EvaluatorSpec(
            "perplexity",
            "coherence",
            "1",
            _M + "coherence:perplexity",
            "perplexity of the response given the prompt under the reference (step-0) model",
            needs_models=True,
        ),
        EvaluatorSpec(
            "coherence",
            "coherence",
            "2",
            _M + "coherence:coherence",
            "combined flag: incoherent if any component is; score = smallest component score",
            requires=("repetition", "degenerate", "language", "relevance", "perplexity"),
        ),
        EvaluatorSpec(
            "xstest_strmatch",
            "refusal",
            "1",
            _M + "refusal:xstest_strmatch",
            "XSTest string match: response starts with a refusal prefix (case-folded)",
            SAFETY,
        ),
        # LLM judges (capsafe_core/evaluators/llm_judges.py): the original prompts, any judge model
        EvaluatorSpec(
            "strongreject_rubric",
            "harm",
            "1",
            _M + "llm_judges:strongreject_rubric",
            "StrongREJECT rubric grader: refused, convincing, specific → score in [0, 1] (LLM judge)",
            SAFETY,
            needs_models=True,
            default=False,
        ),
        EvaluatorSpec(
            "qi_harmfulness",
            "harm",
            "1",
            _M + "llm_judges:qi_harmfulness",
            "Qi et al. 2023 GPT-4 judge: harmfulness 1–5 ('#thescore:'); unsafe = 5 (LLM judge)",
            SAFETY,
            needs_models=True,
            default=False,
        ),
        EvaluatorSpec(
            "harmbench_cls",
            "harm",
            "1",
            _M + "llm_judges:harmbench_cls",
            "HarmBench classifier prompt: yes/no on the generation clipped to 512 tokens (LLM judge)",
            SAFETY,
            needs_models=True,
            default=False,
        ),
        EvaluatorSpec(
            "llamaguard",
            "harm",
            "1",
            _M + "llm_judges:llamaguard",
            "Llama Guard 3 prompt and S1–S14 taxonomy: safe/unsafe + categories (LLM judge)",
            SAFETY,
            needs_models=True,
            default=False,
        ),
        EvaluatorSpec(
            "em_coherence",
            "coherence",
            "1",
            _M + "llm_judges:em_coherence",
            "emergent-misalignment coherence 0–100, probability-weighted over number tokens; > 50 coherent (LLM judge)",
            needs_models=True,
            default=False,
        ),
        EvaluatorSpec(
            "refusal_clf",
            "refusal",
            "1",
            _M + "refusal_clf:refusal_clf",
            "MiniLM embeddings + logistic regression trained on XSTest's human-labelled completions",
            SAFETY,
            needs_models=True,
        ),
    ]
}


def registry() -> dict[str, EvaluatorSpec]:
    return dict(REGISTRY)


def get(name: str) -> EvaluatorSpec:
    if name not in REGISTRY:
        raise unknown_name("evaluator", name, REGISTRY, hint="list them with: capsafe ls evaluators")
    return REGISTRY[name]


def build(name: str, **config: Any) -> Evaluator:
    """Instantiate an evaluator by name (loads its model, if it has one)."""
    spec = get(name)
    module, func = spec.factory.split(":")
    factory = getattr(importlib.import_module(module), func)
    accepted = inspect.signature(factory).parameters
    fn: Evaluator = factory(**{k: v for k, v in config.items() if k in accepted and v is not None})
    return fn


def resolve(names: Sequence[str] | str | None) -> list[EvaluatorSpec]:
    """Evaluator specs by name (comma-separated string allowed), with their requirements first."""
    if names is None:
        wanted = [s.name for s in REGISTRY.values() if s.default]
    elif isinstance(names, str):
        wanted = [n.strip() for n in names.split(",") if n.strip()]
    else:
        wanted = list(names)
    out: list[EvaluatorSpec] = []

    def add(n: str) -> None:
        spec = get(n)
        for r in spec.requires:
            add(r)
        if spec not in out:
            out.append(spec)

    for n in wanted:
        add(n)
    return out


__all__ = ["REGISTRY", "Evaluator", "EvaluatorSpec", "Item", "Verdict", "build", "get", "registry", "resolve"]

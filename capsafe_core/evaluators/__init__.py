"""Evaluators: capability scorers, safety judges and coherence metrics, in one registry.

Each evaluator is a factory decorated with ``@evaluator(name=..., kind=..., version=...,
applies_to=..., options=...)`` beside its code (``base.evaluator``); ``build(name, **options)`` makes
the callable that turns a batch of :class:`Item` into one :class:`Verdict` each, in the vocabulary of
``capsafe_core.vocabulary``. The evaluator modules import no model library at import time (models load
when a factory is built), so importing this package imports neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from capsafe_core.errors import BadInput, unknown_name
from capsafe_core.evaluators import (
    capability,
    coherence,
    echo,
    leakage,
    llm_judges,
    nonsense,
    perplexity,
    refusal,
    refusal_clf,
)
from capsafe_core.evaluators.base import (
    REGISTRY,
    SAFETY,
    Evaluator,
    EvaluatorOptions,
    EvaluatorSpec,
    Item,
    Verdict,
    evaluator,
)

MODULES = (
    capability,
    refusal,
    leakage,
    echo,
    nonsense,
    perplexity,
    coherence,
    llm_judges,
    refusal_clf,
)  # importing them registers their evaluators


def registry() -> dict[str, EvaluatorSpec]:
    return dict(REGISTRY)


def get(name: str) -> EvaluatorSpec:
    if name not in REGISTRY:
        raise unknown_name("evaluator", name, REGISTRY, hint="list them with: capsafe ls evaluators")
    return REGISTRY[name]


def build(name: str, **options: Any) -> Evaluator:
    """Instantiate an evaluator by name (loads its model, if it has one). Options are
    ``EvaluatorOptions``; an unknown one is a one-line error, and the evaluator gets those it declares."""
    spec = get(name)
    given = EvaluatorOptions.parse(options)
    fn: Evaluator = spec.factory(**given.given(spec.options))
    return fn


def check_options(name: str, options: dict[str, Any]) -> None:
    """Refuse options the evaluator does not take (for options given for one evaluator only)."""
    spec = get(name)
    EvaluatorOptions.parse(options)
    extra = [k for k in options if k not in spec.options]
    if extra:
        takes = ", ".join(spec.options) or "none"
        raise BadInput(f"Evaluator '{name}' takes no option '{extra[0]}'; its options: {takes}")


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


__all__ = [
    "REGISTRY",
    "SAFETY",
    "Evaluator",
    "EvaluatorOptions",
    "EvaluatorSpec",
    "Item",
    "Verdict",
    "build",
    "check_options",
    "evaluator",
    "get",
    "registry",
    "resolve",
]

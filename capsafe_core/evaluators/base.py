"""What every evaluator shares: the item it sees, the verdict it gives, its options, and the registry
its factory enters through ``@evaluator(...)``, written beside the code it describes."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capsafe_core.errors import BadInput


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
ALL_KINDS = ("capability", "safety", "overrefusal")
SAFETY = ("safety", "overrefusal")


@dataclass(frozen=True)
class EvaluatorOptions:
    """Every option an evaluator may take; each evaluator declares the ones it uses (``options=``)."""

    reference_model: str | None = None  # perplexity: the model the response's perplexity is measured under
    device: str | None = None  # auto, cpu, cuda, cuda:1
    dtype: str | None = None  # auto, float32, bfloat16
    batch_size: int | None = None
    weights_path: str | None = None  # refusal_clf: other classifier weights
    judge_model: str | None = None  # LLM judges: a folder, GGUF, alias, or a server's model name
    judge_backend: str | None = None  # transformers | openai
    judge_base_url: str | None = None
    judge_max_new_tokens: int | None = None
    judge_batch_size: int | None = None
    answer_formats: tuple[str, ...] | None = None  # task_format: learned per experiment by the judge runner

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> EvaluatorOptions:
        """Options from a mapping; an unknown name is a one-line error naming the accepted ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in config:
            if key not in names:
                raise BadInput(f"Unknown evaluator option '{key}'; the options are: {', '.join(names)}")
        return cls(**config)

    def given(self, wanted: Sequence[str]) -> dict[str, Any]:
        """The options in ``wanted`` that are set (the factory's defaults stand for the others)."""
        return {k: getattr(self, k) for k in wanted if getattr(self, k) is not None}


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(EvaluatorOptions))


@dataclass(frozen=True)
class EvaluatorSpec:
    name: str
    kind: str  # capability | refusal | harm | coherence
    version: str
    factory: Callable[..., Evaluator]
    description: str
    applies_to: tuple[str, ...] = ALL_KINDS
    requires: tuple[str, ...] = ()  # evaluators whose verdicts arrive in Item.prior
    options: tuple[str, ...] = ()  # the EvaluatorOptions its factory takes
    needs_models: bool = False  # needs the `models` extra (torch, transformers, ...)
    default: bool = True  # part of the default set `capsafe run` uses

    @property
    def is_llm_judge(self) -> bool:
        return "judge_model" in self.options


REGISTRY: dict[str, EvaluatorSpec] = {}


def read_weights(path: Path, *, what: str, train: str) -> dict[str, Any]:
    """A trained evaluator's JSON weights; a one-line error naming the script that trains them."""
    if not path.exists():
        from capsafe_core.errors import NotFound

        raise NotFound(f"No {what} at {path}; train it with: python {train}")
    weights: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return weights


def evaluator(
    *,
    name: str,
    kind: str,
    version: str,
    description: str,
    applies_to: tuple[str, ...] = ALL_KINDS,
    requires: tuple[str, ...] = (),
    options: tuple[str, ...] = (),
    needs_models: bool = False,
    default: bool = True,
) -> Callable[[Callable[..., Evaluator]], Callable[..., Evaluator]]:
    """Register the decorated factory as evaluator ``name`` (bump ``version`` when its verdicts change)."""
    unknown = [o for o in options if o not in OPTION_NAMES]
    if unknown:
        raise ValueError(f"evaluator {name}: unknown options {unknown}; add them to EvaluatorOptions")

    def register(factory: Callable[..., Evaluator]) -> Callable[..., Evaluator]:
        if name in REGISTRY:
            raise ValueError(f"evaluator {name} is registered twice")
        REGISTRY[name] = EvaluatorSpec(
            name, kind, version, factory, description, applies_to, requires, options, needs_models, default
        )
        return factory

    return register

"""``perplexity``: perplexity of the response given the prompt under a reference model (by default the
experiment's step-0 model); incoherent above ``PPL_MAX`` (word salad). It needs a model this machine can
load: the judge runner leaves it out where there is none (imported answers of other models), and the
combined ``coherence`` flag says so."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Any

from capsafe_core.evaluators.base import Evaluator, Item, Verdict, evaluator
from capsafe_core.evaluators.coherence import MAX_SCORED_TOKENS, PPL_MAX, PPL_TOKEN_BUDGET, _ok


@evaluator(
    name="perplexity",
    kind="coherence",
    version="1",
    description="perplexity of the response given the prompt under the reference (step-0) model",
    options=("reference_model", "dtype", "device", "batch_size"),
    needs_models=True,
)
def perplexity(
    *, reference_model: str | None = None, dtype: str = "auto", device: str = "auto", batch_size: int | None = None
) -> Evaluator:
    """Perplexity of the response given the prompt (chat template applied) under ``reference_model``."""
    from capsafe_core.errors import BadInput

    if not reference_model:
        raise BadInput("The perplexity metric needs a reference model; pass --reference-model PATH_OR_ALIAS")
    model, tok, dev = _reference(reference_model, dtype, device)

    def run(items: Sequence[Item]) -> list[Verdict]:
        ppls = conditional_perplexity(model, tok, dev, items, batch_size=batch_size)
        out = []
        for ppl in ppls:
            if ppl is None:
                out.append(_ok(False, 0.0, "empty response"))
            else:
                score = PPL_MAX / (PPL_MAX + ppl)  # 0.5 at the threshold
                why = f"perplexity {ppl:.1f} (max {PPL_MAX:g}) under {reference_model}"
                out.append(_ok(ppl <= PPL_MAX, score, why))
        return out

    return run


@cache
def _reference(ref: str, dtype: str, device: str) -> tuple[Any, Any, str]:
    from capsafe_core.backends.models import load_model, resolve_model

    return load_model(resolve_model(ref), dtype=dtype, device=device)


def tokenized(tok: Any, items: Sequence[Item]) -> list[tuple[list[int], list[int]] | None]:
    """(prompt with the chat template and generation prompt, response up to ``MAX_SCORED_TOKENS``) token
    ids per item; None for an empty response."""
    rows: list[tuple[list[int], list[int]] | None] = []
    for it in items:
        if not it.response.strip():
            rows.append(None)
            continue
        msgs = [{"role": "user", "content": it.prompt}]
        if getattr(tok, "chat_template", None):
            prefix = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        else:
            prefix = it.prompt + "\n"
        p_ids = tok(prefix, add_special_tokens=False)["input_ids"]
        r_ids = tok(it.response, add_special_tokens=False)["input_ids"][:MAX_SCORED_TOKENS]
        rows.append((p_ids, r_ids) if r_ids else None)
    return rows


def conditional_perplexity(
    model: Any, tok: Any, device: str, items: Sequence[Item], *, batch_size: int | None = None
) -> list[float | None]:
    """Perplexity of each response given its prompt under ``model`` (None for an empty response):
    ``backends.scoring`` runs them in length-sorted groups of ``PPL_TOKEN_BUDGET`` padded tokens (and
    ``batch_size`` rows at most where given), the prompts' shared prefix once."""
    from capsafe_core.backends import scoring

    rows = tokenized(tok, items)
    todo = [(i, r) for i, r in enumerate(rows) if r is not None]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    scored = scoring.answer_logprobs(
        model, [r for _, r in todo], pad_id=pad, tokens=PPL_TOKEN_BUDGET, batch_size=batch_size
    )
    out: list[float | None] = [None] * len(rows)
    for (i, _), lp in zip(todo, scored, strict=True):
        out[i] = float(math.exp(-lp.mean().item()))
    return out

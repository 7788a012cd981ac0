"""Log-probabilities of given answers after their prompts under a model (perplexity and the like).

Sequences are sorted by length and run in groups of like lengths (``kvcache.prefill_groups``), left
padded with the positions an unpadded run has; the prompts' shared first tokens (a chat template's
system prompt) are run once and copied into every row's cache; the vocabulary is projected at the
answer's positions only; on a CPU the linear weights are packed once per call (``packing``).
"""

from __future__ import annotations

import inspect
from typing import Any

from capsafe_core.backends import attention, kvcache, norms, packing


def answer_logprobs(
    model: Any,
    rows: list[tuple[list[int], list[int]]],
    *,
    pad_id: int,
    tokens: int = kvcache.PREFILL_TOKENS,
    batch_size: int | None = None,
) -> list[Any]:
    """Per (prompt ids, answer ids) row: a float32 tensor of each answer token's log-probability.
    A group holds at most ``tokens`` padded tokens and ``batch_size`` rows; every answer is non-empty."""
    import torch

    if any(not answer for _, answer in rows):
        raise ValueError("every answer needs at least one token")
    prefix = kvcache.shared_prefix(model, [p for p, _ in rows]) if len(rows) > 1 else None
    shared = len(prefix) if prefix is not None else 0
    seqs = [p[shared:] + a for p, a in rows]
    order = sorted(range(len(rows)), key=lambda i: -len(seqs[i]))
    out: list[Any] = [None] * len(rows)
    # on a CPU: capsafe's attention for the sequences (``attention._prompts``), linear weights packed once
    with torch.inference_mode(), attention.using(model), packing.packed(model, tokens), norms.compiled(model):
        for a, b in kvcache.prefill_groups([len(seqs[i]) for i in order], tokens=tokens, rows=batch_size):
            idx = order[a:b]
            scored = _group(model, [seqs[i] for i in idx], [len(rows[i][1]) for i in idx], prefix, pad_id)
            for i, lp in zip(idx, scored, strict=True):
                out[i] = lp
    return out


def _group(
    model: Any, seqs: list[list[int]], answers: list[int], prefix: kvcache.Prefix | None, pad_id: int
) -> list[Any]:
    """One forward pass over ``seqs`` (longest first; each ends with an answer of ``answers[j]`` tokens),
    inside ``answer_logprobs``' inference mode: each answer's token log-probabilities."""
    import torch

    device = next(model.parameters()).device
    shared = len(prefix) if prefix is not None else 0
    ids, own = kvcache.left_padded(seqs, pad_id)
    positions = (own.cumsum(-1) - 1 + shared).clamp(min=shared)
    mask = torch.cat([own.new_ones((len(seqs), shared)), own], dim=1)
    answer = max(answers)  # logits of the last answer+1 positions suffice
    keep = "logits_to_keep" in inspect.signature(model.forward).parameters
    extra: dict[str, Any] = {"logits_to_keep": answer + 1} if keep else {}
    if prefix is not None:
        cache = kvcache.new_cache(model, shared + len(seqs[0]), buffered=True, batch=len(seqs))
        prefix.fill(cache, len(seqs))
        extra.update({kvcache.cache_argument(model): cache, "use_cache": True})
    logits = model(
        input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device), **extra
    ).logits
    logits = logits[:, -(answer + 1) : -1].float()
    target = ids[:, -answer:].to(device)
    lp = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return [lp[j, answer - n :].cpu() for j, n in enumerate(answers)]

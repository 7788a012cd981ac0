"""Log-probabilities of given answers after their prompts under a model (perplexity and the like).

Sequences are sorted by length and run in groups of like lengths (``kvcache.prefill_groups``), left
padded with the positions an unpadded run has; the prompts' shared first tokens (a chat template's
system prompt) are run once and copied into every row's cache; the vocabulary is projected at the
answer's positions only.
"""

from __future__ import annotations

import inspect
from typing import Any

from capsafe_core.backends import kvcache


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
    device = next(model.parameters()).device
    prefix = kvcache.shared_prefix(model, [p for p, _ in rows]) if len(rows) > 1 else None
    shared = len(prefix) if prefix is not None else 0
    seqs = [p[shared:] + a for p, a in rows]
    order = sorted(range(len(rows)), key=lambda i: -len(seqs[i]))
    keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters
    out: list[Any] = [None] * len(rows)
    for a, b in kvcache.prefill_groups([len(seqs[i]) for i in order], tokens=tokens, rows=batch_size):
        idx = order[a:b]
        width = len(seqs[idx[0]])
        ids, own = kvcache.left_padded([seqs[i] for i in idx], pad_id)
        positions = (own.cumsum(-1) - 1 + shared).clamp(min=shared)
        mask = torch.cat([own.new_ones((len(idx), shared)), own], dim=1)
        answer = max(len(rows[i][1]) for i in idx)  # logits of the last answer+1 positions suffice
        extra: dict[str, Any] = {"logits_to_keep": answer + 1} if keep_arg else {}
        if prefix is not None:
            cache = kvcache.new_cache(model, shared + width, buffered=True, batch=len(idx))
            prefix.fill(cache, len(idx))
            extra.update({kvcache.cache_argument(model): cache, "use_cache": True})
        with torch.inference_mode():
            logits = model(
                input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device), **extra
            ).logits
            logits = logits[:, -(answer + 1) : -1].float()
            target = ids[:, -answer:].to(device)
            lp = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        for j, i in enumerate(idx):
            out[i] = lp[j, answer - len(rows[i][1]) :].cpu()
    return out

"""A decoding loop for a batch of left-padded prompts that stops computing finished rows.

``transformers``' ``generate`` keeps every row of a batch until the longest answer ends, so a
batch of short refusals and one 64-token answer costs 64 full steps. Here a row that emits an
end token leaves the batch (its KV cache rows are dropped), and the prompt's logits are computed
for its last position only. Greedy outputs equal ``generate``'s (same positions, same masks, same
argmax; ``tests/test_backend_hf.py`` checks against an unbatched ``generate`` loop). Models whose
generation config asks for logits processors this loop does not implement (a repetition penalty,
n-gram blocking, bad words, ...) are left to ``generate`` (``supported``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# generation-config fields whose non-default values change the next token beyond temperature/top-p
_PROCESSORS = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "sequence_bias": (None,),
    "guidance_scale": (None, 1.0),
    "exponential_decay_length_penalty": (None,),
}


def supported(model: Any) -> bool:
    """Can this loop stand in for ``generate`` on ``model`` (a decoder-only model whose generation
    config asks for nothing but temperature and top-p)?"""
    if getattr(model.config, "is_encoder_decoder", False):
        return False
    cfg = getattr(model, "generation_config", None)
    return all(getattr(cfg, name, None) in defaults for name, defaults in _PROCESSORS.items())


@dataclass
class Decoded:
    """Per row: the generated token ids (up to and including an end token), and, when asked, the
    top log-probabilities at each step as (ids, values)."""

    tokens: list[list[int]]
    top: list[list[tuple[list[int], list[float]]]] = field(default_factory=list)


def decode(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    *,
    max_new_tokens: int,
    eos_ids: set[int],
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: Any = None,
    top_logprobs: int = 0,
) -> Decoded:
    """Generate up to ``max_new_tokens`` per row; greedy when ``temperature`` is 0."""
    import torch
    from transformers import DynamicCache

    n = input_ids.shape[0]
    positions = attention_mask.long().cumsum(-1) - 1
    positions.masked_fill_(attention_mask == 0, 1)  # as generate does for left padding
    cache = DynamicCache(config=model.config)
    cache_arg = _cache_argument(model)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **{cache_arg: cache},
    )
    logits = out.logits[:, -1, :]
    rows = torch.arange(n, device=input_ids.device)  # original row of each row still decoding
    last = positions[:, -1]
    mask = attention_mask
    eos = torch.tensor(sorted(eos_ids), device=input_ids.device)
    result = Decoded([[] for _ in range(n)], [[] for _ in range(n)] if top_logprobs else [])
    for step in range(max_new_tokens):
        nxt = _next_token(logits, temperature, top_p, generator)
        if top_logprobs:
            top = torch.log_softmax(logits.float(), dim=-1).topk(top_logprobs, dim=-1)
            for r, ids, vals in zip(rows.tolist(), top.indices.tolist(), top.values.tolist(), strict=True):
                result.top[r].append((ids, vals))
        for r, t in zip(rows.tolist(), nxt.tolist(), strict=True):
            result.tokens[r].append(t)
        if step == max_new_tokens - 1:
            break
        going = ~torch.isin(nxt, eos)
        if not bool(going.all()):
            if not bool(going.any()):
                break
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, nxt, mask, last = rows[keep], nxt[keep], mask[keep], last[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        last = last + 1
        out = model(
            input_ids=nxt[:, None],
            attention_mask=mask,
            position_ids=last[:, None],
            use_cache=True,
            **{cache_arg: cache},
        )
        logits = out.logits[:, -1, :]
    return result


def _cache_argument(model: Any) -> str:
    """``cache`` in newer ``transformers`` (``past_key_values`` is deprecated there), else ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _next_token(logits: Any, temperature: float, top_p: float, generator: Any) -> Any:
    import torch

    if temperature <= 0:  # in float32: the same maximum (an exact upcast); a bf16 argmax is slow on CPUs
        return logits.float().argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(dim=-1) - sorted_p > top_p  # keep the smallest set reaching top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)

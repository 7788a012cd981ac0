"""A decoding loop for a batch of prompts that stops computing finished rows.

``transformers``' ``generate`` keeps every row of a batch until the longest answer ends, so a
batch of short refusals and one 64-token answer costs 64 full steps. Here finished rows leave the
batch (once they are an eighth of it: dropping rows copies the cache), the prompts' shared prefix
is run once (``kvcache.Prefix``), prompts are run in groups of like lengths into one preallocated
cache (``kvcache.BufferedLayer``; padding costs no forward pass), the logits are computed for the
last position only, and on a CPU a decoding step's attention is ``backends.attention``'s (compiled where
it can be, ``backends.native``, as are RMSNorm and the greedy argmax) and the linear weights are packed
once per call (``backends.packing``). Greedy
outputs equal ``generate``'s (same positions, same masks, same argmax; ``tests/test_backend_hf.py``
and ``tests/test_decoding_parts.py`` check against an unbatched ``generate`` loop in fp32). Models
whose generation config asks for logits processors this loop does not implement (a repetition
penalty, n-gram blocking, bad words, ...) are left to ``generate`` (``supported``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from capsafe_core.backends import attention, kvcache, native, norms, packing
from capsafe_core.backends.kvcache import Prefix

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


COMPACT_SHARE = 8  # finished rows leave the batch once they are an eighth of it (or all of it)


def decode(
    model: Any,
    prompts: list[list[int]],
    *,
    pad_id: int,
    max_new_tokens: int,
    eos_ids: set[int],
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: Any = None,
    top_logprobs: int = 0,
    prefix: Prefix | None = None,
) -> Decoded:
    """Generate up to ``max_new_tokens`` for each prompt (token ids); greedy when ``temperature`` is 0.
    ``prefix``: first tokens every prompt starts with, already run through the model (``kvcache``)."""
    import torch

    device = next(model.parameters()).device
    shared = len(prefix) if prefix is not None else 0
    if prefix is not None and any(p[:shared] != prefix.ids or len(p) <= shared for p in prompts):
        raise ValueError("every prompt must start with the prefix and go on after it")
    n = len(prompts)
    order = sorted(range(n), key=lambda i: -len(prompts[i]))  # longest first: prefill groups of like lengths
    prompts = [prompts[i] for i in order]
    result = Decoded([[] for _ in range(n)], [[] for _ in range(n)] if top_logprobs else [])
    steps: AbstractContextManager[None]
    with attention.using(model) as own_attention, packing.packed(model, n), norms.compiled(model):
        if own_attention and kvcache.plain_layers(model):
            cache, logits = _bucketed_prefill(model, prompts, prefix, max_new_tokens, pad_id, device)
            mask, steps = None, attention.bucketed(cache)
        else:
            cache, logits, mask = _prefill_all(model, prompts, prefix, max_new_tokens, pad_id, device)
            steps = nullcontext()
        cache_arg = {kvcache.cache_argument(model): cache}
        last = torch.tensor([len(p) - 1 for p in prompts], device=device)
        rows = torch.tensor(order, device=device)  # original row of each row in the batch
        done = torch.zeros(n, dtype=torch.bool, device=device)  # finished rows not yet dropped
        eos = torch.tensor(sorted(eos_ids), device=device)
        with steps:
            for step in range(max_new_tokens):
                nxt = _next_token(logits, temperature, top_p, generator)
                live = (~done).nonzero().squeeze(1).tolist() if bool(done.any()) else None
                _record(result, rows, nxt, logits if top_logprobs else None, top_logprobs, live)
                if step == max_new_tokens - 1:
                    break
                done = done | torch.isin(nxt, eos)
                finished = int(done.sum())
                if finished == len(rows):
                    break
                if finished and finished * COMPACT_SHARE >= len(rows):
                    keep = (~done).nonzero().squeeze(1)
                    if mask is None:
                        cache.keep(keep)
                    else:
                        cache.batch_select_indices(keep)
                        mask = mask[keep]
                    rows, nxt, last, done = rows[keep], nxt[keep], last[keep], done[keep]
                if mask is None:
                    cache.open_next()
                else:
                    mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
                last = last + 1
                out = model(
                    input_ids=nxt[:, None],
                    attention_mask=mask,
                    position_ids=last[:, None],
                    use_cache=True,
                    **cache_arg,
                )
                logits = out.logits[:, -1, :]
    return result


def _padding(prompts: list[list[int]], shared: int, device: Any) -> Any:
    """Attention mask (rows × the longest prompt) of prompts starting with ``shared`` common tokens: the
    shared prefix, left padding, each prompt's own tokens."""
    import torch

    _, own = kvcache.left_padded([p[shared:] for p in prompts], 0)
    return torch.cat([own.new_ones((len(prompts), shared)), own], dim=1).to(device)


def _prefill_all(
    model: Any, prompts: list[list[int]], prefix: Prefix | None, new: int, pad_id: int, device: Any
) -> tuple[Any, Any, Any]:
    """One cache for the whole batch, padded to its longest prompt (prefilled in groups of like lengths
    where the cache is buffered): (cache, last logits, attention mask)."""
    shared = len(prefix) if prefix is not None else 0
    buffered = kvcache.plain_layers(model)
    groups = kvcache.prefill_groups([len(p) - shared for p in prompts]) if buffered else [(0, len(prompts))]
    return _filled(model, prompts, prefix, new, pad_id, device, groups, buffered=buffered)


def _bucketed_prefill(
    model: Any, prompts: list[list[int]], prefix: Prefix | None, new: int, pad_id: int, device: Any
) -> tuple[Any, Any]:
    """Rows in buckets of like prompt lengths, each bucket its own cache (``kvcache.Buckets``):
    (cache, last logits)."""
    import torch

    shared = len(prefix) if prefix is not None else 0
    lengths = [len(p) - shared for p in prompts]
    groups = kvcache.prefill_groups(lengths)
    parts, valid, logits = [], [], []
    for a, b in kvcache.buckets(groups, [lengths[g[0]] for g in groups]):
        own = [(c - a, d - a) for c, d in groups if a <= c < b]
        cache, first, mask = _filled(model, prompts[a:b], prefix, new, pad_id, device, own, buffered=True)
        opened = torch.zeros((b - a, 1, 1, cache.layers[0].capacity), dtype=torch.bool, device=device)
        opened[:, 0, 0, : mask.shape[1]] = mask.bool()
        parts.append(cache)
        valid.append(opened)
        logits.append(first)
    return kvcache.Buckets(parts, valid), torch.cat(logits)


def _filled(
    model: Any,
    prompts: list[list[int]],
    prefix: Prefix | None,
    new: int,
    pad_id: int,
    device: Any,
    groups: list[tuple[int, int]],
    *,
    buffered: bool,
) -> tuple[Any, Any, Any]:
    """A cache for ``prompts`` (longest first) with room for ``new`` tokens, the prefix copied in and the
    prompts run group by group: (cache, last logits, attention mask)."""
    import torch

    shared = len(prefix) if prefix is not None else 0
    width, n = len(prompts[0]) - shared, len(prompts)
    cache = kvcache.new_cache(model, shared + width + new, buffered=buffered, batch=n)
    if prefix is not None:
        prefix.fill(cache, n)
    mask = _padding(prompts, shared, device)
    logits = torch.cat(
        [_prefill(model, cache, prompts[a:b], mask[a:b], slice(a, b), shared, pad_id) for a, b in groups]
    )
    for layer in cache.layers if buffered else []:
        layer.rows, layer.length = None, shared + width
    return cache, logits, mask


def _prefill(model: Any, cache: Any, prompts: list[list[int]], mask: Any, rows: slice, shared: int, pad_id: int) -> Any:
    """Run a group of prompts (the first the longest) through ``model`` into their ``rows`` of the cache;
    the logits at each one's last position."""

    device = mask.device
    ids, _ = kvcache.left_padded([p[shared:] for p in prompts], pad_id)
    width = ids.shape[1]  # this group's; the batch's is mask's
    own = mask[:, mask.shape[1] - width :]
    positions = (own.cumsum(-1) - 1 + shared).clamp_(min=shared)
    for layer in cache.layers:
        if isinstance(layer, kvcache.BufferedLayer):
            layer.rows, layer.length = rows, mask.shape[1] - width
    out = model(
        input_ids=ids.to(device),
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **{kvcache.cache_argument(model): cache},
    )
    return out.logits[:, -1, :]


def _record(result: Decoded, rows: Any, nxt: Any, logits: Any, k: int, live: list[int] | None) -> None:
    """Append each unfinished row's token (and top-k log-probabilities) to its original row."""
    import torch

    picked = range(len(rows)) if live is None else live
    originals, tokens = rows.tolist(), nxt.tolist()
    if logits is not None:
        top = torch.log_softmax(logits.float(), dim=-1).topk(k, dim=-1)
        ids, vals = top.indices.tolist(), top.values.tolist()
        for j in picked:
            result.top[originals[j]].append((ids[j], vals[j]))
    for j in picked:
        result.tokens[originals[j]].append(tokens[j])


def _next_token(logits: Any, temperature: float, top_p: float, generator: Any) -> Any:
    import torch

    if temperature <= 0:  # in float32: the same maximum (an exact upcast); a bf16 argmax is slow on CPUs
        cpu = logits.device.type == "cpu" and logits.dtype in (torch.bfloat16, torch.float32)
        kernel = native.kernel() if cpu else None
        if kernel is not None and logits.dim() == 2 and logits.shape[1] and logits.stride(1) == 1:
            return kernel.argmax(logits)  # the same, without the float32 copy
        return logits.float().argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(dim=-1) - sorted_p > top_p  # keep the smallest set reaching top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)

"""Attention on a CPU as two small matrix products per key-value head, for decoding and for prompts.

PyTorch's SDPA kernel for CPUs is slow at these sizes: for a decoding step (one query per row) it takes
milliseconds per layer in bfloat16 (about 15× the two products here, ``bench/generation.py``), and for
prompts it was 1.5–2.6× slower than the products up to 300 positions and 1.6× at 600. ``transformers``'
eager attention first copies every key and value head to each query head it serves. Here the query
heads sharing a key-value head are stacked instead, so the cache is read once; a prompt's queries go a
block at a time, each block reading only the positions it may attend to. Both use capsafe's compiled
kernel instead (``native``: each query in one pass, masked positions skipped) where it could be built.
Other devices (and dropout, soft-capping, sinks) go to ``transformers``' SDPA attention.

``using(model)`` switches a model to this attention for the duration of a ``with`` block, when its
architecture takes attention functions from ``transformers``' ``AttentionInterface``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from capsafe_core.backends import native

NAME = "capsafe_decode"
_registered = False


def attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """``transformers``' attention-function signature; query (rows, heads, queries, dim), key and value
    (rows, kv heads, positions, dim); returns (rows, queries, heads, dim)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    special = dropout or kwargs.get("softcap") or kwargs.get("s_aux") is not None
    if query.device.type != "cpu" or special:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    if query.shape[2] > 1:
        causal = getattr(module, "is_causal", True) and kwargs.get("is_causal") is not False
        return _prompts(query, key, value, attention_mask, scale, causal=causal), None
    layer = _buckets.current if _buckets is not None else None
    if layer is None:
        mask = None if attention_mask is None else attention_mask[:, :, -1:, : key.shape[-2]]
        return _one_query(query, key, value, mask, scale), None
    parts = [
        _one_query(query[a:b], part.keys, part.values, valid, scale)
        for part, valid, (a, b) in zip(layer.parts, _buckets.valid, _buckets.bounds, strict=True)
    ]
    return torch.cat(parts) if len(parts) > 1 else parts[0], None


def _one_query(query: Any, key: Any, value: Any, mask: Any, scale: float) -> Any:
    """Attention of one query per row; ``mask`` (rows, 1, 1, positions): bool (True attends) or additive."""
    import torch

    compiled = _compiled(query, key, value, mask, scale, causal=False)
    if compiled is not None:
        return compiled
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    q = query.reshape(rows, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(q, key.transpose(-1, -2)) * scale
    if mask is not None:
        bool_mask = mask.dtype == torch.bool
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if bool_mask else scores + mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(probs, value)  # (rows, kv heads, heads per kv head, dim)
    return out.reshape(rows, 1, heads, value.shape[-1])


def _compiled(query: Any, key: Any, value: Any, mask: Any, scale: float, *, causal: bool) -> Any:
    """Attention by capsafe's compiled kernel (``native``), (rows, queries, heads, dim); None where it is
    not built or does not take these tensors. ``mask`` (rows or 1, 1, queries, positions) or None (then
    ``causal`` says whether a query attends to later positions)."""
    import torch

    if not _compiled_takes(query, key, value, mask):
        return None
    kernel = native.kernel()
    if kernel is None:
        return None
    rows, _, n, _ = query.shape
    positions = key.shape[-2]
    if mask is not None:
        valid = mask[:, 0].expand(rows, n, positions)
    elif causal:  # query i is position positions - n + i
        valid = torch.ones(n, positions, dtype=torch.bool).tril(positions - n).expand(rows, n, positions)
    else:
        valid = torch.ones(positions, dtype=torch.bool).expand(rows, n, positions)
    return kernel.attention(query, key, value, valid if valid.stride(-1) == 1 else valid.contiguous(), scale, False)


def _compiled_takes(query: Any, key: Any, value: Any, mask: Any) -> bool:
    """Can the compiled kernel take these: float32 or bfloat16 alike, every last dimension contiguous,
    keys and values of the queries' dimension, grouped heads, a bool mask (or none) of the right shape?"""
    import torch

    rows, heads, n, dim = query.shape
    return (
        query.dtype in (torch.float32, torch.bfloat16)
        and query.dtype == key.dtype == value.dtype
        and key.shape == value.shape
        and key.shape[-1] == dim
        and heads % key.shape[1] == 0
        and query.stride(-1) == key.stride(-1) == value.stride(-1) == 1
        and (
            mask is None
            or (
                mask.dtype == torch.bool
                and mask.dim() == 4
                and mask.shape[0] in (1, rows)
                and mask.shape[1] == 1
                and tuple(mask.shape[2:]) == (n, key.shape[-2])
            )
        )
    )


QUERY_BLOCK = 32  # a prompt's queries per pair of products: their scores stay in cache


def _prompts(query: Any, key: Any, value: Any, mask: Any, scale: float, *, causal: bool) -> Any:
    """Attention of several queries per row (prompts), a block of queries at a time, the query heads
    sharing a key-value head stacked; each block reads only the positions it may attend to when causal.
    ``mask`` (rows, 1, queries, positions) bool or additive, or None. Returns (rows, queries, heads, dim).
    Measured on a CPU in bfloat16: 1.5–2.6× PyTorch's SDPA kernel up to 300 positions, 1.6× at 600.
    The compiled kernel, where it is built, instead."""
    import torch

    compiled = _compiled(query, key, value, mask, scale, causal=causal)
    if compiled is not None:
        return compiled
    rows, heads, n, dim = query.shape
    kv_heads, positions = key.shape[1], key.shape[-2]
    group, offset = heads // kv_heads, positions - n  # query i is position offset + i
    q = query.view(rows, kv_heads, group, n, dim)
    out = query.new_empty((rows, n, kv_heads, group, value.shape[-1]))
    for start in range(0, n, QUERY_BLOCK):
        end = min(n, start + QUERY_BLOCK)
        seen = offset + end if causal else positions  # later positions are masked for every query here
        block = q[:, :, :, start:end].reshape(rows, kv_heads, group * (end - start), dim)
        scores = torch.matmul(block, key[:, :, :seen].transpose(-1, -2)) * scale
        scores = scores.view(rows, kv_heads, group, end - start, seen)
        if mask is not None:
            m = mask[:, :, None, start:end, :seen]
            scores = scores.masked_fill(~m, torch.finfo(scores.dtype).min) if m.dtype == torch.bool else scores + m
        elif causal:
            allowed = torch.ones(end - start, seen, dtype=torch.bool, device=query.device).tril(offset + start)
            scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
        part = torch.matmul(probs.view(rows, kv_heads, group * (end - start), seen), value[:, :, :seen])
        out[:, start:end] = part.view(rows, kv_heads, group, end - start, -1).permute(0, 3, 1, 2, 4)
    return out.view(rows, n, heads, value.shape[-1])


_buckets: Any = None  # the kvcache.Buckets a decoding step reads, inside ``bucketed``


@contextmanager
def bucketed(cache: Any) -> Iterator[None]:
    """Decoding steps inside the block read each row's bucket of ``cache`` (a ``kvcache.Buckets``)."""
    global _buckets
    _buckets = cache
    try:
        yield
    finally:
        _buckets = None


def _register() -> None:
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

        AttentionInterface.register(NAME, attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
        _registered = True


@contextmanager
def using(model: Any) -> Iterator[bool]:
    """Use this attention in ``model`` inside the block (yields whether it does): on a CPU, for models
    whose attention is SDPA or eager and can be switched; the model's own attention is restored after."""
    current = getattr(getattr(model, "config", None), "_attn_implementation", None)
    device = getattr(next(model.parameters(), None), "device", None)
    ok = current in ("sdpa", "eager") and getattr(device, "type", "") == "cpu"
    ok = ok and hasattr(model, "set_attn_implementation") and hasattr(model, "_can_set_attn_implementation")
    if ok:
        _register()
        try:
            ok = bool(model._can_set_attn_implementation())
            if ok:
                model.set_attn_implementation(NAME)
        except (ValueError, KeyError, ImportError):
            ok = False
    try:
        yield ok
    finally:
        if ok:
            model.set_attn_implementation(current)

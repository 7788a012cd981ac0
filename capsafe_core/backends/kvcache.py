"""A KV cache for capsafe's decoding loop: preallocated buffers written in place, and a prompt prefix
shared by every row.

``transformers``' ``DynamicCache`` concatenates each step's keys and values onto the whole cache (a copy
of everything so far, every step, every layer). ``BufferedLayer`` allocates room for the prompt and
the answer once (zeros) and writes each step into it; attention reads the whole buffer, its unwritten
positions masked as the future (a view of the written part would be copied by every matrix product).
``Prefix`` is the prompts' common first tokens (a chat template's system prompt and turn header), run
through the model once and copied into every row, instead of once per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers.cache_utils import DynamicCache, DynamicLayer


class BufferedLayer(DynamicLayer):
    """A layer's keys and values in buffers of ``capacity`` positions (grown by doubling if exceeded);
    ``length`` of them written."""

    def __init__(self, capacity: int, batch: int | None = None) -> None:
        super().__init__()
        self.capacity = capacity
        self.batch = batch  # rows; None: those of the first update
        self.length = 0
        self.rows: slice | None = None  # when set, updates write (and attention reads) these rows only

    def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
        self.device = key_states.device
        self._keys = self._room(key_states, self.batch, self.capacity)
        self._values = self._room(value_states, self.batch, self.capacity)
        self.is_initialized = True

    @staticmethod
    def _room(like: Any, batch: int | None, capacity: int) -> Any:
        rows, heads, _, dim = like.shape
        return like.new_zeros((batch or rows, heads, capacity, dim))

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            self._grow(max(end, 2 * self._keys.shape[-2]))
        if self.rows is None:
            self._keys[:, :, self.length : end] = key_states
            self._values[:, :, self.length : end] = value_states
            self.length = end
            self.keys, self.values = self._keys, self._values
            return self.keys, self.values
        # a group of rows' prompts (several positions each): attention reads the written positions only
        keys, values = self._keys[self.rows, :, :end], self._values[self.rows, :, :end]
        keys[:, :, self.length :] = key_states
        values[:, :, self.length :] = value_states
        self.length = end
        return keys, values

    def _grow(self, capacity: int) -> None:
        keys = self._room(self._keys, None, capacity)
        values = self._room(self._values, None, capacity)
        keys[:, :, : self.length] = self._keys[:, :, : self.length]
        values[:, :, : self.length] = self._values[:, :, : self.length]
        self._keys, self._values = keys, values
        self.capacity = capacity

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        if self.rows is not None:
            return self.length + query_length, 0
        return max(self.capacity, self.length + query_length), 0

    def written(self) -> tuple[Any, Any]:
        """The keys and values written so far."""
        return self._keys[:, :, : self.length], self._values[:, :, : self.length]

    def batch_select_indices(self, indices: Any) -> None:
        if self.is_initialized:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self.keys, self.values = self._keys, self._values

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self.keys, self.values = self._keys, self._values

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of positions to remove")
        if self.is_initialized:
            self._keys[:, :, self.length + tokens_to_remove : self.length] = 0
            self._values[:, :, self.length + tokens_to_remove : self.length] = 0
        self.length = max(0, self.length + tokens_to_remove)

    def reset(self) -> None:
        self.length = 0
        super().reset()


def plain_layers(model: Any) -> bool:
    """Does every layer of ``model``'s cache keep all positions (no sliding window, no recurrent state)?
    Only then are the buffers and a shared prefix used."""
    layers = DynamicCache(config=model.config).layers
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def new_cache(model: Any, capacity: int, *, buffered: bool, batch: int | None = None) -> Any:
    """An empty cache for ``model``: buffered layers of ``capacity`` positions for ``batch`` rows, or
    ``transformers``' own."""
    cache = DynamicCache(config=model.config)
    if buffered:
        cache.layers = [BufferedLayer(capacity, batch) for _ in cache.layers]
    return cache


@dataclass
class Prefix:
    """Token ids every prompt starts with, and each layer's (keys, values) for them in one row."""

    ids: list[int]
    kv: list[tuple[Any, Any]]

    def __len__(self) -> int:
        return len(self.ids)

    def fill(self, cache: Any, rows: int) -> None:
        """Write the prefix into every one of ``rows`` rows of an empty cache."""
        for layer, (k, v) in zip(cache.layers, self.kv, strict=True):
            layer.update(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1))


def left_padded(seqs: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    """(ids, own), rows × the longest's length: the sequences left-padded with ``pad_id``, and 1 where a
    position holds the row's own token."""
    import torch

    width = max(len(q) for q in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    own = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, q in enumerate(seqs):
        ids[i, width - len(q) :] = torch.tensor(q)
        own[i, width - len(q) :] = 1
    return ids, own


PREFILL_TOKENS = 4096  # (padded) prompt tokens per forward pass of a prefill
PREFILL_SLACK = 1.1  # padded tokens per real one a prefill group may hold (1.25: 2% slower, 1.05: 3%)


def prefill_groups(
    lengths: list[int], *, tokens: int = PREFILL_TOKENS, slack: float = PREFILL_SLACK, rows: int | None = None
) -> list[tuple[int, int]]:
    """Consecutive groups of sequences (``lengths`` sorted longest first) run through a model together,
    padded to their first: at most ``slack`` padded tokens per real one, ``tokens`` in all and ``rows``
    sequences (a longer sequence goes alone)."""
    out, start, real = [], 0, 0
    for i, length in enumerate(lengths):
        padded = (i - start + 1) * lengths[start]
        full = rows is not None and i - start >= rows
        if i > start and (full or padded > tokens or padded > slack * (real + length)):
            out.append((start, i))
            start, real = i, 0
        real += length
    if lengths:
        out.append((start, len(lengths)))
    return out


MIN_PREFIX = 4  # fewer shared tokens are not worth a forward pass


def common_prefix(prompts: list[list[int]]) -> list[int]:
    """The longest run of first tokens all prompts share, leaving each at least one token of its own
    (the last position's logits come from the batch)."""
    if not prompts:
        return []
    first, shared = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        shared = next((j for j in range(shared) if p[j] != first[j]), shared)
    return list(first[: max(0, shared)])


def shared_prefix(model: Any, prompts: list[list[int]], *, position_ids: Any = None) -> Prefix | None:
    """``prompts``' common prefix run through ``model`` once (None when shorter than ``MIN_PREFIX`` or when
    the model's cache is not plain)."""
    import torch

    ids = common_prefix(prompts)
    if len(ids) < MIN_PREFIX or not plain_layers(model):
        return None
    device = next(model.parameters()).device
    cache = new_cache(model, len(ids), buffered=True)
    tensor = torch.tensor([ids], device=device)
    positions = torch.arange(len(ids), device=device)[None, :]
    arg = {cache_argument(model): cache}
    with torch.inference_mode():
        model(input_ids=tensor, position_ids=positions, use_cache=True, logits_to_keep=1, **arg)
    return Prefix(ids, [layer.written() for layer in cache.layers])


def cache_argument(model: Any) -> str:
    """``cache`` in newer ``transformers`` (``past_key_values`` is deprecated there), else ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


BUCKET_RATIO = 0.5  # a new bucket starts where prompts are at most half as long as the bucket's first
MAX_BUCKETS = 4  # each costs a few small operations per layer and step


def buckets(groups: list[tuple[int, int]], widths: list[int]) -> list[tuple[int, int]]:
    """Prefill groups (row ranges, longest prompts first, ``widths`` each group's) merged into at most
    ``MAX_BUCKETS`` row ranges of like lengths."""
    out: list[tuple[int, int]] = []
    bucket_width = 0
    for (a, b), width in zip(groups, widths, strict=True):
        if out and (len(out) == MAX_BUCKETS or width > BUCKET_RATIO * bucket_width):
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
            bucket_width = width
    return out


class BucketedLayer(DynamicLayer):
    """One layer's cache for rows kept in buckets, each bucket a ``BufferedLayer`` of its own width:
    a decoding step's attention (``attention.attention``) reads each row's own bucket, so short prompts
    do not read long prompts' padding. ``update`` writes each bucket's rows and notes itself as the
    layer attention reads next."""

    def __init__(self, parts: list[BufferedLayer], owner: Buckets) -> None:
        super().__init__()
        self.parts, self.owner = parts, owner
        self.is_initialized = True

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        for part, (a, b) in zip(self.parts, self.owner.bounds, strict=True):
            part.update(key_states[a:b], value_states[a:b])
        self.owner.current = self
        return key_states, value_states

    def get_seq_length(self) -> int:
        return max(p.length for p in self.parts)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return max(p.capacity for p in self.parts), 0

    def batch_select_indices(self, indices: Any) -> None:
        raise NotImplementedError("select rows with Buckets.keep")


class Buckets(DynamicCache):
    """A cache of rows in buckets (``BucketedLayer``): per bucket, its rows' range in the batch, its
    layers' buffers and which of its positions each row attends to (``valid``: rows × 1 × 1 × positions)."""

    def __init__(self, parts: list[Any], valid: list[Any]) -> None:
        super().__init__()
        self.current: BucketedLayer | None = None
        self.valid = valid
        self.bounds: list[tuple[int, int]] = []
        self._set_bounds([v.shape[0] for v in valid])
        self.bucketed = [BucketedLayer([p.layers[i] for p in parts], self) for i in range(len(parts[0].layers))]
        self.layers = list(self.bucketed)

    def _set_bounds(self, sizes: list[int]) -> None:
        ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
        self.bounds = [(e - s, e) for s, e in zip(sizes, ends, strict=True)]

    def open_next(self) -> None:
        """Let each row attend to the position the next step writes."""
        for v, part in zip(self.valid, self.bucketed[0].parts, strict=True):
            v[..., part.length] = True

    def keep(self, indices: Any) -> None:
        """Keep these rows (indices into the batch, ascending), in order."""
        sizes, kept_parts = [], []
        for g, (a, b) in enumerate(self.bounds):
            local = indices[(indices >= a) & (indices < b)] - a
            sizes.append(int(local.numel()))
            self.valid[g] = self.valid[g][local]
            for layer in self.bucketed:
                layer.parts[g].batch_select_indices(local)
            kept_parts.append(sizes[-1] > 0)
        self.valid = [v for v, k in zip(self.valid, kept_parts, strict=True) if k]
        for layer in self.bucketed:
            layer.parts = [p for p, k in zip(layer.parts, kept_parts, strict=True) if k]
        self._set_bounds([s for s in sizes if s])

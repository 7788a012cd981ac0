"""Benchmark: the demo's evaluation of one checkpoint, before and after capsafe's decoding loop,
measured in the same run.

Run: python bench/demo_eval.py [--model runs/demo/aligned] [--limit 100] [--checkpoints 1]

One checkpoint is what the demo evaluates at every save: 100 prompts each of arithmetic (capability),
HarmBench and StrongREJECT (safety) and XSTest-safe (over-refusal), 64 new tokens, greedy, then every
default evaluator. *Before*: transformers' ``generate`` at the demo's former fixed batch of 16, and
the former perplexity (batches of 16 in item order, every position projected to the vocabulary).
*After*: capsafe's loop (finished rows leave the batch) with the batch chosen from the workload and
free memory; perplexity in length-sorted batches of a token budget, the answer's positions only; each
text embedded once by MiniLM. Each goes into its own new database; the time is split into generation
and judging. A mitigation of the demo evaluates six checkpoints (step 0 and five saves).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from capsafe_core.backends import Decoding
from capsafe_core.backends.hf import TransformersBackend
from capsafe_core.evaluators import perplexity
from capsafe_core.evaluators.base import Item
from capsafe_core.runner import RunSpec, run_checkpoint
from capsafe_core.store import Store

BENCHMARKS = ["arithmetic", "harmbench", "strongreject", "xstest_safe"]


def legacy_perplexity(
    model: Any, tok: Any, device: str, items: Sequence[Item], *, batch_size: int | None = 16
) -> list[float | None]:
    """The perplexity computation before this change: batches of 16 in item order, the full
    vocabulary projection at every position (prompt included)."""
    import math

    import torch

    rows = [None if pr is None else (pr[0] + pr[1], len(pr[0])) for pr in perplexity.tokenized(tok, items)]
    out: list[float | None] = [None] * len(rows)
    todo = [i for i, r in enumerate(rows) if r is not None]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    size = batch_size or 16
    for start in range(0, len(todo), size):
        idx = todo[start : start + size]
        seqs = [rows[i] for i in idx]
        width = max(len(s[0]) for s in seqs if s)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for j, s in enumerate(seqs):
            assert s is not None
            ids[j, : len(s[0])] = torch.tensor(s[0])
            mask[j, : len(s[0])] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        target = ids[:, 1:].to(device)
        tok_lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        for j, (i, s) in enumerate(zip(idx, seqs, strict=True)):
            assert s is not None
            seq, plen = s
            lp = tok_lp[j, plen - 1 : len(seq) - 1]
            out[i] = float(math.exp(-lp.mean().item())) if lp.numel() else None
    return out


def evaluate(model: str, limit: int, *, fast: bool, folder: Path) -> tuple[float, float, int, int]:
    """(generation seconds, judging seconds, generations, batch size) for one checkpoint."""
    backend = TransformersBackend(model, batch_size=None if fast else 16, fast_decode=fast)
    generate, spent = backend.generate, [0.0]

    def timed_generate(*args, **kwargs):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = generate(*args, **kwargs)
        spent[0] += time.perf_counter() - t0
        return out

    backend.generate = timed_generate  # type: ignore[method-assign]
    spec = RunSpec(
        experiment="bench",
        model=model,
        benchmarks=BENCHMARKS,
        limit=limit,
        decoding=Decoding(max_new_tokens=64),
        reference_model=model,
    )
    current = perplexity.conditional_perplexity
    perplexity.conditional_perplexity = current if fast else legacy_perplexity  # type: ignore[assignment]
    try:
        with Store.open(folder / ("after.db" if fast else "before.db")) as store:
            t0 = time.perf_counter()
            result = run_checkpoint(store, spec, progress=False, backend=backend)
            total = time.perf_counter() - t0
    finally:
        perplexity.conditional_perplexity = current  # type: ignore[assignment]
    batch = backend.batch_size
    backend.close()
    return spent[0], total - spent[0], result.generations_added, batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    default = "runs/demo/aligned" if Path("runs/demo/aligned/config.json").exists() else "smollm2-135m-instruct"
    ap.add_argument("--model", default=default)
    ap.add_argument("--limit", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = evaluate(args.model, args.limit, fast=False, folder=Path(tmp))
        after = evaluate(args.model, args.limit, fast=True, folder=Path(tmp))
    print(f"one checkpoint of the demo: {args.model}, {after[2]} prompts ({', '.join(BENCHMARKS)}), 64 new tokens")
    print(f"{'':44} {'generate':>9} {'judge':>8} {'total':>8}")
    for name, (g, j, _, _) in (
        ("before: generate, batch 16", before),
        (f"after: capsafe loop, batch {after[3]}", after),
    ):
        print(f"{name:44} {g:8.1f}s {j:7.1f}s {g + j:7.1f}s")
    b, a = sum(before[:2]), sum(after[:2])
    print(f"generation {before[0] / after[0]:.2f}x faster; the checkpoint's evaluation {b / a:.2f}x faster")
    print(f"a mitigation of the demo (6 checkpoints): {6 * b / 60:.1f} min before, {6 * a / 60:.1f} min after")


if __name__ == "__main__":
    main()

"""Benchmark: the demo's evaluation of one checkpoint, before and after capsafe's decoding loop,
measured in the same run.

Run: python bench/demo_eval.py [--model runs/demo/aligned] [--limit 100] [--checkpoints 1]

One checkpoint is what the demo evaluates at every save: 100 prompts each of arithmetic (capability),
HarmBench and StrongREJECT (safety) and XSTest-safe (over-refusal), 64 new tokens, greedy, then every
default evaluator. *Before*: transformers' ``generate`` at the demo's former fixed batch of 16.
*After*: capsafe's loop (finished rows leave the batch) with the batch chosen from the workload and
free memory. Each goes into its own new database; the time is split into generation and judging.
A mitigation of the demo evaluates six checkpoints (step 0 and five saves).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from capsafe_core.backends import Decoding
from capsafe_core.backends.hf import TransformersBackend
from capsafe_core.runner import RunSpec, run_checkpoint
from capsafe_core.store import Store

BENCHMARKS = ["arithmetic", "harmbench", "strongreject", "xstest_safe"]


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
    with Store.open(folder / ("after.db" if fast else "before.db")) as store:
        t0 = time.perf_counter()
        result = run_checkpoint(store, spec, progress=False, backend=backend)
        total = time.perf_counter() - t0
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

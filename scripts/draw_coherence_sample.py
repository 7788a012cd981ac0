"""Draw the responses of the held-out coherence set (``data/coherence/heldout.jsonl``), unlabelled.

Run once: python scripts/draw_coherence_sample.py [--db data/demo.db] [--out /tmp/candidates.jsonl]

Sources (fixed seed): the demo database (the raw SmolLM2, the aligned step 0, fine-tuned checkpoints
of every mitigation; non-capability prompts, plus a few capability answers), XSTest v2 completions of
five chat models (GPT-4, Llama-2 twice, Mistral twice; half of them long) and JailbreakBench attack
artifacts (GPT-3.5/4, Llama-2-7B, Vicuna-13B), and the raw SmolLM2 sampled at temperature 1.6
(generated here, on a CPU, in about two minutes). Each row gets its split from a hash of its prompt, so
all answers to one prompt fall in one part. Labels are added by hand (see data/coherence/README.md).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def split_of(prompt: str) -> str:
    """``tune`` or ``validation``, half each, from the prompt alone."""
    return "tune" if int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 2 == 0 else "validation"


def demo_rows(db: Path, rng: random.Random) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    rows = conn.execute(
        """SELECT e.name, c.mitigation, c.step, b.name, b.kind, p.text, g.response, g.finish_reason
           FROM generations g JOIN checkpoints c ON c.id = g.checkpoint_id JOIN experiments e ON e.id = c.experiment_id
           JOIN prompts p ON p.id = g.prompt_id JOIN benchmarks b ON b.id = p.benchmark_id
           WHERE NOT (c.meta LIKE '%copied_from%') ORDER BY g.id"""
    ).fetchall()
    out = []

    def take(pred: Any, n: int, source: str) -> None:
        pool = [r for r in rows if pred(r)]
        for r in rng.sample(pool, min(n, len(pool))):
            out.append(
                {
                    "source": f"{source} ({r[1]}, step {r[2]}, {r[3]})",
                    "model": "SmolLM2-135M-Instruct" + ("" if r[0] == "smollm2-raw" else " (demo)"),
                    "benchmark_kind": r[4],
                    "finish_reason": r[7],
                    "prompt": r[5],
                    "response": r[6],
                }
            )

    take(lambda r: r[0] == "smollm2-raw" and r[4] != "capability", 35, "smollm2-raw")
    take(lambda r: r[0] != "smollm2-raw" and r[2] == 0 and r[4] != "capability", 15, "smollm2-aligned")
    for mit in ("none", "lora", "safety_mix", "lower_lr"):
        take(lambda r, m=mit: r[0] != "smollm2-raw" and r[1] == m and r[2] > 0 and r[4] != "capability", 32, "demo")
    take(lambda r: r[0] != "smollm2-raw" and r[2] > 0 and r[4] == "capability", 10, "demo")
    return out


def xstest_rows(rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for path in sorted((DATASETS / "xstest" / "model_completions").glob("*.csv")):
        model = path.stem.split("_")[-1]
        with path.open(encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["completion"].strip()]
        long = [r for r in rows if len(r["completion"].split()) >= 150]
        short = [r for r in rows if len(r["completion"].split()) < 150]
        for r in rng.sample(long, min(5, len(long))) + rng.sample(short, 5):
            out.append(
                {
                    "source": f"xstest-v2 ({model}, {r['type']})",
                    "model": model,
                    "benchmark_kind": "overrefusal" if not r["type"].startswith("contrast") else "safety",
                    "finish_reason": None,
                    "prompt": r["prompt"],
                    "response": r["completion"],
                }
            )
    return out


def jbb_rows(rng: random.Random) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (DATASETS / "jailbreakbench" / "jbb_artifacts_flat.jsonl").open()]
    rows = [r for r in rows if r.get("response") and r.get("prompt")]
    out = []
    for model in sorted({r["model"] for r in rows}):
        pool = [r for r in rows if r["model"] == model]
        lists = [r for r in pool if "\n1." in r["response"] or "\n- " in r["response"]]
        picks = rng.sample(lists, min(6, len(lists)))
        picks += rng.sample([r for r in pool if r not in picks], 13 - len(picks))
        for r in picks:
            out.append(
                {
                    "source": f"jailbreakbench ({model}, {r['method']})",
                    "model": model,
                    "benchmark_kind": "safety",
                    "finish_reason": None,
                    "prompt": r["prompt"],
                    "response": r["response"],
                }
            )
    return out


def hot_rows(n: int) -> list[dict[str, Any]]:
    """The raw SmolLM2 sampled hot (temperature 1.6): loose, drifting text, by capsafe's own backend."""
    from capsafe_core import benchmarks
    from capsafe_core.backends import Decoding
    from capsafe_core.backends.hf import TransformersBackend

    prompts = []
    for name in ("harmbench", "strongreject", "xstest_safe"):
        prompts += [(name, p) for p in benchmarks.select(benchmarks.load(name), limit=n // 3, seed=7)]
    backend = TransformersBackend("smollm2-135m-instruct", dtype="float32", device="cpu")
    done = backend.generate(
        [[{"role": "user", "content": p.text}] for _, p in prompts],
        Decoding(max_new_tokens=64, temperature=1.6, top_p=1.0, seed=7),
    )
    return [
        {
            "source": f"smollm2-hot (temperature 1.6, {name})",
            "model": "SmolLM2-135M-Instruct",
            "benchmark_kind": benchmarks.get(name).kind,
            "finish_reason": c.finish_reason,
            "prompt": p.text,
            "response": c.text,
        }
        for (name, p), c in zip(prompts, done, strict=True)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", type=Path, default=Path("data/demo.db"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/candidates.jsonl"))
    args = ap.parse_args()
    rng = random.Random(20261202)
    rows = demo_rows(args.db, rng) + xstest_rows(rng) + jbb_rows(rng) + hot_rows(30)
    seen: set[tuple[str, str]] = set()
    with args.out.open("w", encoding="utf-8") as f:
        for i, r in enumerate(rows):
            key = (r["prompt"], r["response"])
            if key in seen:
                continue
            seen.add(key)
            task = "arithmetic" if r["source"].startswith(("demo", "smollm2")) else None  # the experiment's task
            r = {"id": f"ho-{i:03d}", **r, "split": split_of(r["prompt"]), "task": task, "label": None, "note": ""}
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(seen)} responses -> {args.out}")


if __name__ == "__main__":
    main()

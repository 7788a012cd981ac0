"""Benchmark: capsafe's batched transformers backend vs an unbatched generate loop vs llama.cpp.

Run: python bench/generation.py [--prompts 32] [--max-new-tokens 64] [--batch-size 16]

All three generate greedily for the same prompts (AdvBench, XSTest and arithmetic, chat template
applied) with the same token limit, from the same model: the shipped SmolLM2-135M-Instruct GGUF
(dequantized for transformers, in the dtype capsafe picks; llama.cpp runs the Q4_1 file itself).
Prints generated tokens/s for each and the ratios against the unbatched loop, measured in this run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from capsafe_core import benchmarks
from capsafe_core.backends import Decoding, chat
from capsafe_core.backends.hf import TransformersBackend
from capsafe_core.backends.models import resolve_model


def prompts(n: int) -> list[str]:
    per = max(1, n // 4)
    out = [
        p.text
        for b in ("advbench", "xstest_safe", "xstest_unsafe", "arithmetic")
        for p in benchmarks.select(benchmarks.load(b), limit=per)
    ]
    return out[:n]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()
    texts = prompts(args.prompts)
    chats = [chat(t) for t in texts]
    dec = Decoding(max_new_tokens=args.max_new_tokens)

    backend = TransformersBackend("smollm2-135m-instruct", dtype=args.dtype, batch_size=args.batch_size)
    backend.generate(chats[:2], Decoding(max_new_tokens=4))  # warm-up
    batched, t_b = timed(lambda: backend.generate(chats, dec))
    backend.batch_size = 1
    loop, t_l = timed(lambda: [backend.generate([c], dec)[0] for c in chats])
    dtype = str(backend.model.dtype).replace("torch.", "")
    backend.close()

    from llama_cpp import Llama

    llm = Llama(model_path=str(resolve_model("smollm2-135m-instruct").path), n_ctx=2048, verbose=False)
    llm.create_chat_completion(messages=chats[0], max_tokens=4, temperature=0.0)  # warm-up

    def run_llama() -> list[int]:
        return [
            llm.create_chat_completion(messages=c, max_tokens=args.max_new_tokens, temperature=0.0)["usage"][
                "completion_tokens"
            ]
            for c in chats
        ]

    llama_tokens, t_c = timed(run_llama)

    n_b = sum(c.n_tokens or 0 for c in batched)
    n_l = sum(c.n_tokens or 0 for c in loop)
    n_c = sum(llama_tokens)
    same = sum(a.text == b.text for a, b in zip(batched, loop, strict=True))
    base = n_l / t_l
    print(f"{len(chats)} prompts, up to {args.max_new_tokens} new tokens, greedy; transformers dtype {dtype}")
    print(
        f"{'capsafe transformers, batched (' + str(args.batch_size) + ')':44} {n_b:6} tok {t_b:7.1f} s "
        f"{n_b / t_b:7.1f} tok/s  {n_b / t_b / base:5.2f}x"
    )
    print(f"{'unbatched generate loop':44} {n_l:6} tok {t_l:7.1f} s {base:7.1f} tok/s  1.00x")
    print(
        f"{'llama.cpp (Q4_1 GGUF), one by one':44} {n_c:6} tok {t_c:7.1f} s {n_c / t_c:7.1f} tok/s  "
        f"{n_c / t_c / base:5.2f}x"
    )
    print(f"batched and unbatched responses identical: {same}/{len(chats)}")


if __name__ == "__main__":
    main()

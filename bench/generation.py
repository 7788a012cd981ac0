"""Benchmark: capsafe's batched transformers backend against batched ``generate`` (capsafe's method
before its own decoding loop), an unbatched ``generate`` loop and llama.cpp, and against the
machine's compute limit, measured in the same run.

Run: python bench/generation.py [--prompts 128] [--max-new-tokens 64] [--batch-size 0] [--dtype auto]
     [--repeats 3] [--skip-loop] [--skip-llama] [--skip-generate] [--bf16-prompts 16]

The workload is drawn like the demo's evaluation: safety (HarmBench, StrongREJECT), over-refusal
(XSTest-safe) and capability (arithmetic) prompts in equal shares, chat template applied, greedy. The
model is the shipped SmolLM2-135M-Instruct (dequantized for transformers, in the dtype capsafe picks;
llama.cpp runs the Q4_1 GGUF itself). ``--batch-size 0`` lets capsafe choose (from free memory).

The compute limit: the throughput of a matrix product at the model's own shapes (batch×hidden by
hidden×intermediate, bf16 and fp32; the faster of a plain product and a packed linear layer), divided
by the model's floating-point work per generated token (2 × parameters, the matrix products of a
forward pass), is the most tokens/s the machine could make. Each method's share of that limit is
printed next to its ratio to the unbatched loop.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from capsafe_core import benchmarks
from capsafe_core.backends import Decoding, chat
from capsafe_core.backends.hf import TransformersBackend
from capsafe_core.backends.models import resolve_model

WORKLOAD = ("harmbench", "strongreject", "xstest_safe", "arithmetic")


def prompts(n: int) -> list[str]:
    per = -(-n // len(WORKLOAD))
    out = [p.text for b in WORKLOAD for p in benchmarks.select(benchmarks.load(b), limit=per)]
    return out[:n]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def matmul_gflops(rows: int, inner: int, cols: int, dtype, *, seconds: float = 2.0) -> float:
    """Measured GFLOP/s of ``(rows × inner) @ (inner × cols)`` in ``dtype`` on this machine: the faster of
    a plain product and, in bfloat16 where oneDNN has it, a linear layer on a weight packed once (what
    capsafe's decoding uses, ``backends/packing.py``), so the limit is not lowered by an unpacked product."""
    import torch

    a = torch.randn(rows, inner).to(dtype)
    b = torch.randn(inner, cols).to(dtype)
    products = [lambda: a @ b]
    if dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        w = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous(), rows)
        products.append(lambda: torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], ""))
    rates = []
    for product in products:
        for _ in range(3):
            product()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            product()
            n += 1
        rates.append(2 * rows * inner * cols * n / (time.perf_counter() - t0) / 1e9)
    return max(rates)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=0, help="0: capsafe chooses")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--repeats", type=int, default=3, help="runs of capsafe's method; the median time is reported")
    ap.add_argument("--skip-loop", action="store_true", help="leave out the unbatched loop (slow on 512 prompts)")
    ap.add_argument("--skip-llama", action="store_true")
    ap.add_argument("--skip-generate", action="store_true", help="leave out batched transformers generate")
    ap.add_argument(
        "--bf16-prompts",
        type=int,
        default=16,
        help="prompts for the bf16 identity check (0: none; slow without native bf16)",
    )
    ap.add_argument(
        "--static-prompts",
        type=int,
        default=0,
        help="also time generate with a static KV cache and torch.compile on this many prompts (0: not)",
    )
    args = ap.parse_args()
    chats = [chat(t) for t in prompts(args.prompts)]
    dec = Decoding(max_new_tokens=args.max_new_tokens)

    backend = TransformersBackend("smollm2-135m-instruct", dtype=args.dtype, batch_size=args.batch_size or None)
    cfg, dtype = backend.model.config, backend.model.dtype
    params = sum(p.numel() for p in backend.model.parameters())
    gflop_per_token = 2 * params / 1e9
    batch = backend.batch_size
    limit = {
        name: matmul_gflops(batch, cfg.hidden_size, cfg.intermediate_size, dt) / gflop_per_token
        for name, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32))
    }
    own = limit["bf16" if dtype == torch.bfloat16 else "fp32"]
    backend.generate(chats[:2], Decoding(max_new_tokens=4))  # warm-up
    rows: list[tuple[str, int, float]] = []
    runs = [timed(lambda: backend.generate(chats, dec)) for _ in range(max(1, args.repeats))]
    batched, t_b = runs[0][0], statistics.median(t for _, t in runs)
    assert all([c.text for c in out] == [c.text for c in batched] for out, _ in runs), "runs differ"
    rows.append((f"capsafe transformers, batched ({batch})", sum(c.n_tokens or 0 for c in batched), t_b))
    same: dict[str, int] = {}
    backend.fast_decode = False  # transformers' own generate
    if not args.skip_generate:
        gen, t_g = timed(lambda: backend.generate(chats, dec))
        rows.append((f"transformers generate, batched ({batch})", sum(c.n_tokens or 0 for c in gen), t_g))
        same["batched generate"] = sum(a.text == b.text for a, b in zip(batched, gen, strict=True))
    if not args.skip_loop:
        backend.batch_size = 1
        loop, t_l = timed(lambda: [backend.generate([c], dec)[0] for c in chats])
        rows.append(("unbatched generate loop", sum(c.n_tokens or 0 for c in loop), t_l))
        same["the unbatched loop"] = sum(a.text == b.text for a, b in zip(batched, loop, strict=True))
    if args.static_prompts:
        rows += static_compiled(backend, chats[: args.static_prompts], dec)
    tok, backend_render = backend.tokenizer, backend.render
    backend.close()
    bf16 = bf16_identity(chats[: args.bf16_prompts], dec, batch) if args.bf16_prompts else None
    if not args.skip_llama:
        from llama_cpp import Llama

        llm = Llama(model_path=str(resolve_model("smollm2-135m-instruct").path), n_ctx=2048, verbose=False)
        llm.create_chat_completion(messages=chats[0], max_tokens=4, temperature=0.0)  # warm-up
        n_c, t_c = timed(
            lambda: sum(
                llm.create_chat_completion(messages=c, max_tokens=args.max_new_tokens, temperature=0.0)["usage"][
                    "completion_tokens"
                ]
                for c in chats
            )
        )
        rows.append(("llama.cpp (Q4_1 GGUF), one by one", n_c, t_c))

    print(f"{len(chats)} prompts ({', '.join(WORKLOAD)}), up to {args.max_new_tokens} new tokens, greedy")
    print(f"model: SmolLM2-135M, {params / 1e6:.1f} M parameters, {gflop_per_token:.3f} GFLOP per token, {dtype}")
    for name in ("bf16", "fp32"):
        g = limit[name] * gflop_per_token
        print(f"matmul {batch}x{cfg.hidden_size} @ {cfg.hidden_size}x{cfg.intermediate_size} {name}: {g:7.1f} GFLOP/s "
              f"-> compute limit {limit[name]:7.0f} tokens/s")  # fmt: skip
    base = next((n / t for name, n, t in rows if name.startswith("unbatched")), None)
    prompt_tokens = sum(len(tok(backend_render(c))["input_ids"]) for c in chats)
    for name, n, t in rows:
        ratio = f"{n / t / base:6.2f}x loop" if base else ""
        print(f"{name:44} {n:6} tok {t:7.1f} s {n / t:8.1f} tok/s  {100 * n / t / own:5.1f}% of limit  {ratio}")
    answer = sum(c.n_tokens or 0 for c in batched)
    work = (prompt_tokens + answer) * gflop_per_token / t_b
    print(
        f"capsafe also reads the {prompt_tokens} prompt tokens ({prompt_tokens / len(chats):.0f} per prompt): counting "
        f"them, it computes {work:.1f} GFLOP/s, {100 * work / (own * gflop_per_token):.0f}% of the matmul rate"
    )
    print(f"capsafe's {len(runs)} runs: " + ", ".join(f"{t:.2f} s" for _, t in runs) + " (the median above)")
    for other, n in same.items():
        print(f"capsafe batched responses identical to {other}: {n}/{len(chats)} (in {dtype})")
    if bf16 is not None:
        print(f"bfloat16: capsafe batched identical to an unbatched generate loop for {bf16[0]}/{bf16[1]} prompts")


def static_compiled(backend: TransformersBackend, chats: list, dec: Decoding) -> list[tuple[str, int, float]]:
    """transformers' own fast path, on the same prompts, batched: ``generate`` with a static KV cache,
    then also with the forward pass compiled (``torch.compile``; the first, compiling call is left out);
    capsafe's loop on the same prompts for comparison."""
    import torch

    out = []
    backend.batch_size, backend.fast_decode = len(chats), True
    same, t = timed(lambda: backend.generate(chats, dec))
    out.append((f"capsafe loop, same {len(chats)} prompts", sum(c.n_tokens or 0 for c in same), t))
    backend.fast_decode = False
    backend.model.generation_config.cache_implementation = "static"
    static, t = timed(lambda: backend.generate(chats, dec))
    out.append((f"generate, static cache ({len(chats)} prompts)", sum(c.n_tokens or 0 for c in static), t))
    backend.model.forward = torch.compile(backend.model.forward, dynamic=False)
    backend.generate(chats, dec)  # compiles
    compiled, t = timed(lambda: backend.generate(chats, dec))
    out.append((f"generate, static cache + compile ({len(chats)})", sum(c.n_tokens or 0 for c in compiled), t))
    backend.model.generation_config.cache_implementation = None
    return out


def bf16_identity(chats: list, dec: Decoding, batch: int) -> tuple[int, int]:
    """In bfloat16, how many of capsafe's batched responses equal an unbatched generate loop's (batching
    changes the order of bf16 sums, so a few may differ)."""
    fast = TransformersBackend("smollm2-135m-instruct", dtype="bfloat16", batch_size=batch)
    batched = fast.generate(chats, dec)
    fast.fast_decode, fast.batch_size = False, 1
    loop = [fast.generate([c], dec)[0] for c in chats]
    fast.close()
    return sum(a.text == b.text for a, b in zip(batched, loop, strict=True)), len(chats)


if __name__ == "__main__":
    main()

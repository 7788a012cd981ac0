"""Benchmark: ``capsafe sweep --executor servers`` with two llama.cpp servers against one, same run.

Run: python bench/sweep.py [--checkpoints 6] [--prompts 8] [--tokens 32]

Each server is ``llama_cpp.server`` with one thread (for prompts and for generation), serving the
shipped SmolLM2 GGUF under one name per
checkpoint (its multi-model config), as a vLLM server serves LoRA checkpoints by name. The same sweep
(checkpoints × harmbench prompts, greedy) runs into a fresh database against one server, then against two;
the script prints generations per second of each and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capsafe_core.backends.models import resolve_model  # noqa: E402
from capsafe_core.store import Store  # noqa: E402
from capsafe_core.sweep import execute, plan  # noqa: E402
from tests.servers import llama_cpp_fleet_member  # noqa: E402


def sweep_file(folder: Path, urls: list[str], aliases: list[str], prompts: int, tokens: int) -> Path:
    listed = "".join(f'[[checkpoint]]\nstep = {i}\nmodel = "{a}"\n' for i, a in enumerate(aliases))
    servers = ", ".join(f'"{u}"' for u in urls)
    body = (
        f'experiment = "bench"\n[benchmarks]\nharmbench = {prompts}\n[run]\nevaluators = ["keyword_refusal"]\n'
        f"batch_size = {prompts}\n[decoding]\nmax_new_tokens = {tokens}\n[servers]\nurls = [{servers}]\n"
        f"concurrency = 2\n{listed}"
    )
    path = folder / f"sweep-{len(urls)}.toml"
    path.write_text(body, encoding="utf-8")
    return path


def timed(folder: Path, urls: list[str], aliases: list[str], prompts: int, tokens: int) -> float:
    sweep = plan.load(sweep_file(folder, urls, aliases, prompts, tokens))
    with Store.open(folder / f"bench-{len(urls)}.db") as store:
        t0 = time.perf_counter()
        result = execute.run(store, sweep, "servers", progress=False)
        seconds = time.perf_counter() - t0
    rate = result.generations_added / seconds
    print(f"{len(urls)} server(s): {result.generations_added} generations in {seconds:.1f} s = {rate:.2f}/s")
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoints", type=int, default=6)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    gguf = str(resolve_model("smollm2-135m-instruct").path)
    aliases = [f"ckpt-{i}" for i in range(args.checkpoints)]
    with (
        tempfile.TemporaryDirectory() as tmp,
        llama_cpp_fleet_member(gguf, aliases, n_ctx=1024) as (a, _),
        llama_cpp_fleet_member(gguf, aliases, n_ctx=1024) as (b, _),
    ):
        one = timed(Path(tmp), [a], aliases, args.prompts, args.tokens)
        two = timed(Path(tmp), [a, b], aliases, args.prompts, args.tokens)
    print(f"two servers against one: {two / one:.2f}x the generations per second")


if __name__ == "__main__":
    main()

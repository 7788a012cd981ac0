"""Benchmark: `capsafe import table` against a bare sqlite3.executemany of the same rows.

Run: python bench/import.py [--generations 250000] [--judges 4]

Writes a synthetic CSV (generations × judges judgments), imports it with capsafe into a fresh
database (reading, mapping, validation and upserts included), then inserts the same prompt,
generation and judgment rows with plain ``executemany`` INSERTs into another fresh database of
the same schema, and prints rows/s for both and their ratio. Synthetic data, never shipped.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from capsafe_core.importers.table import import_table, parse_mapping
from capsafe_core.store import Store

LABELS = ["safe", "unsafe", "1", "0", "refusal"]


def make_table(path: Path, n_gen: int, n_judges: int, n_prompts: int, seed: int = 0) -> pl.DataFrame:
    rng = random.Random(seed)
    n_ck = max(1, n_gen // n_prompts)
    rows = {
        "experiment": ["bench"] * n_gen,
        "mitigation": [f"m{(i // n_prompts) % 5}" for i in range(n_gen)],
        "step": [str((i // n_prompts) // 5 * 10) for i in range(n_gen)],
        "prompt_id": [f"p{i % n_prompts:06d}" for i in range(n_gen)],
        "prompt": [f"synthetic prompt number {i % n_prompts}" for i in range(n_gen)],
        "response": [f"synthetic response {i} " + "word " * rng.randint(5, 40) for i in range(n_gen)],
    }
    for j in range(n_judges):
        rows[f"judge_{j}"] = [rng.choice(["safe", "unsafe"]) for _ in range(n_gen)]
    frame = pl.DataFrame(rows)
    frame.write_csv(path)
    print(
        f"table: {n_gen:,} generations over {n_ck} checkpoints, {n_judges} judges -> "
        f"{n_gen * n_judges:,} judgments ({path.stat().st_size / 1e6:.0f} MB CSV)"
    )
    return frame


def bare_executemany(db: Path, frame: pl.DataFrame, n_judges: int) -> float:
    store = Store.open(db)
    conn = store.conn
    with store.transaction():
        e = store.upsert_experiment("bench")
        ck = {}
        for m, s in frame.select("mitigation", "step").unique().iter_rows():
            ck[(m, s)] = store.upsert_checkpoint(e, m, int(s))
        b = store.upsert_benchmark("bench", kind="safety")
        evs = [store.upsert_evaluator(f"judge_{j}", kind="harm", version="x") for j in range(n_judges)]
    prompts = frame.select("prompt_id", "prompt").unique(maintain_order=True)
    pid = {p: i + 1 for i, p in enumerate(prompts["prompt_id"].to_list())}
    prompt_rows = [(pid[p], b, p, t) for p, t in prompts.iter_rows()]
    cols = frame.select("mitigation", "step", "prompt_id", "response")
    gen_rows = [(i + 1, ck[(m, s)], pid[p], 0, "{}", r, "t") for i, (m, s, p, r) in enumerate(cols.iter_rows())]
    judg_rows = []
    for j in range(n_judges):
        col = frame[f"judge_{j}"].to_list()
        judg_rows += [(i + 1, evs[j], col[i], None, None, "t") for i in range(frame.height)]
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO prompts (id, benchmark_id, ext_id, text) VALUES (?, ?, ?, ?)", prompt_rows)
    conn.executemany(
        "INSERT INTO generations (id, checkpoint_id, prompt_id, sample, decoding, response, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        gen_rows,
    )
    conn.executemany(
        "INSERT INTO judgments (generation_id, evaluator_id, label, score, explanation, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        judg_rows,
    )
    conn.commit()
    dt = time.perf_counter() - t0
    store.close()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--generations", type=int, default=250_000)
    ap.add_argument("--judges", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=5_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        frame = make_table(tmpd / "synthetic.csv", args.generations, args.judges, args.prompts)
        n_j = args.generations * args.judges
        mapping = parse_mapping([f"judge:judge_{j}=judge_{j}" for j in range(args.judges)], ["benchmark=bench"])
        store = Store.open(tmpd / "capsafe.db")
        t0 = time.perf_counter()
        result = import_table(store, tmpd / "synthetic.csv", mapping)
        t_capsafe = time.perf_counter() - t0
        store.close()
        assert result.added["judgments"] == n_j, result.added
        t_bare = bare_executemany(tmpd / "bare.db", frame, args.judges)
    print(
        f"capsafe import table (CSV read + map + validate + upsert): {t_capsafe:7.2f} s  "
        f"{n_j / t_capsafe:10,.0f} judgments/s"
    )
    print(
        f"bare sqlite3.executemany INSERT of the same rows:          {t_bare:7.2f} s  {n_j / t_bare:10,.0f} judgments/s"
    )
    print(f"ratio capsafe / bare: {t_bare / t_capsafe:.2f}")


if __name__ == "__main__":
    main()

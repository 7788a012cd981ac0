"""Benchmark: dashboard page render times and peak memory on large synthetic databases.

Run: python bench/dashboard.py [--generations 500000 5000000] [--reuse] [--compare-readers]

Builds a SYNTHETIC database (marked so in the experiment's meta; never shipped): 4 mitigations ×
25 checkpoints × 5,000 prompts = 500,000 generations, each with 4 judgments (capability scorer or
refusal judges, a harm judge and the coherence flag) = 2,000,000 judgments. Then renders every page
with Streamlit's AppTest twice in one process: cold (empty caches) and warm (cached readers), and
prints the seconds for each against the goal (≤ 5 s cold, ≤ 2 s warm). Each size renders in its own
process, whose peak resident memory is printed beside the timings (goal ≤ 4 GB at 5 M generations). The
Label page is timed with an annotator entered (its queue is built), not as an empty form.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capsafe_core.store import Store, now  # noqa: E402

PAGES = ["overview", "curves", "compare", "judges", "samples", "label"]


def build(path: Path, n_gen: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    path.unlink(missing_ok=True)
    store = Store.open(path)
    mitigations, steps = ["none", "lora", "safety_mix", "lower_lr"], list(range(0, 250, 10))
    n_prompts = n_gen // (len(mitigations) * len(steps))
    stamp = now()
    with store.transaction():
        exp = store.upsert_experiment(
            "synthetic",
            task="synth_cap",
            capability_metric="final_number",
            capability_target=0.6,
            meta={"synthetic": True, "note": "bench only"},
        )
        cap = store.upsert_benchmark("synth_cap", kind="capability", source="synthetic")
        safe = store.upsert_benchmark("synth_safety", kind="safety", source="synthetic")
        cap_ids = store.upsert_prompts(
            cap, [(f"c{i}", f"capability prompt {i}", None, "1", "{}") for i in range(n_prompts // 2)]
        )
        safe_ids = store.upsert_prompts(
            safe,
            [(f"s{i}", f"safety prompt {i}", f"cat{i % 8}", None, "{}") for i in range(n_prompts - n_prompts // 2)],
        )
        evs = {
            n: store.upsert_evaluator(n, kind=k, version="synthetic")
            for n, k in [
                ("final_number", "capability"),
                ("keyword_refusal", "refusal"),
                ("harm_judge", "harm"),
                ("coherence", "coherence"),
                ("keyword_refusal_broad", "refusal"),
            ]
        }
        cks = [(m, s, store.upsert_checkpoint(exp, m, s)) for m in mitigations for s in steps]
    for m, s, ck in cks:
        progress = s / steps[-1]
        gens = [
            (ck, pid, 0, "{}", f"synthetic response {pid}", 20, "stop", stamp)
            for pid in [*cap_ids.values(), *safe_ids.values()]
        ]
        with store.transaction():
            store.conn.executemany(
                "INSERT INTO generations (checkpoint_id, prompt_id, sample, decoding, response, "
                "n_tokens, finish_reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                gens,
            )
            ids = store.generation_ids(ck, "{}")
            rows = []
            for pid in cap_ids.values():
                ok = rng.random() < 0.2 + 0.6 * progress
                g = ids[(pid, 0)]
                rows += [
                    (g, evs["final_number"], "correct" if ok else "incorrect", float(ok), None, stamp),
                    (g, evs["coherence"], "coherent", 1.0, None, stamp),
                    (g, evs["harm_judge"], "safe", 0.0, None, stamp),
                    (g, evs["keyword_refusal"], "compliance", 0.0, None, stamp),
                ]
            for pid in safe_ids.values():
                g = ids[(pid, 0)]
                unsafe = rng.random() < 0.1 + 0.4 * progress * (0.5 if m == "safety_mix" else 1)
                broken = rng.random() < 0.3 * progress
                rows += [
                    (g, evs["keyword_refusal"], "compliance" if unsafe or broken else "refusal", None, None, stamp),
                    (g, evs["harm_judge"], "unsafe" if unsafe else "safe", None, None, stamp),
                    (g, evs["coherence"], "incoherent" if broken else "coherent", None, None, stamp),
                    (g, evs["keyword_refusal_broad"], "compliance" if unsafe else "refusal", None, None, stamp),
                ]
            store.conn.executemany("INSERT INTO judgments VALUES (?, ?, ?, ?, ?, ?)", rows)
    counts = store.counts()
    store.close()
    print(f"synthetic database {path}: {counts['generations']:,} generations, {counts['judgments']:,} judgments")


def read_verdicts(db: Path) -> None:
    """The verdict reader (connectorx into Arrow) against the baseline (sqlite3 rows), same run, same query."""
    from capsafe_core.store import Store, bulk
    from capsafe_core.store import reads as queries

    with Store.open(db, create=False) as store:
        exp = store.experiments()["name"][0]
        t0 = time.perf_counter()
        arrow = queries.verdicts(store, exp)
        t_fast = time.perf_counter() - t0
        fast = bulk.arrow_frame
        bulk.arrow_frame = lambda st, sql, schema: bulk.frame(st, sql, [], schema)  # type: ignore[assignment]
        try:
            t0 = time.perf_counter()
            slow = queries.verdicts(store, exp)
            t_slow = time.perf_counter() - t0
        finally:
            bulk.arrow_frame = fast  # type: ignore[assignment]
    assert arrow.height == slow.height
    print(
        f"read {arrow.height:,} verdicts: connectorx {t_fast:.2f} s, sqlite3 rows (baseline) {t_slow:.2f} s "
        f"-> {t_slow / t_fast:.1f}x faster"
    )


def render(db: Path) -> None:
    os.environ["CAPSAFE_DB"] = str(db)
    from streamlit.testing.v1 import AppTest

    rows = []
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    t0 = time.perf_counter()
    at.run()
    first = time.perf_counter() - t0
    for name in PAGES:
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            at.switch_page(f"pages/{name}.py")
            if name == "label":
                at.session_state["lb_annotator"] = "bench"  # time the queue, not an empty form
            at.run()
            times.append(time.perf_counter() - t0)
            if at.exception:
                raise SystemExit(f"{name}: {at.exception[0].value}")
        rows.append((name, *times))
    print(f"first load (sidebar + overview, verdicts read into the cache): {first:.2f} s")
    print(f"{'page':10} {'cold s':>8} {'warm s':>8}   goal: cold ≤ 5 s, warm ≤ 2 s")
    for name, cold, warm in rows:
        print(f"{name:10} {cold:8.2f} {warm:8.2f}   {'ok' if cold <= 5 and warm <= 2 else 'over'}")


def measure(db: Path) -> None:
    """Render ``db`` in a child process and print its peak resident memory."""
    import resource
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, __file__, "--render", str(db)], check=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"peak resident memory of the rendering process: {max(peak, before) / 1024**2:.2f} GB\n", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--generations", type=int, nargs="+", default=[500_000, 5_000_000])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="folder of the synthetic databases")
    ap.add_argument("--reuse", action="store_true", help="Render existing synthetic databases.")
    ap.add_argument("--compare-readers", action="store_true", help="Also time connectorx against sqlite3 rows.")
    ap.add_argument("--render", type=Path, help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.render:
        render(args.render)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for n in args.generations:
        db = args.out / f"synthetic-{n}.db"
        if not (args.reuse and db.exists()):
            t0 = time.perf_counter()
            build(db, n)
            print(f"built in {time.perf_counter() - t0:.1f} s")
        with Store.open(db):  # migrates an older synthetic database (e.g. adds indexes) before timing
            pass
        print(f"== {n:,} generations ==", flush=True)
        if args.compare_readers:
            read_verdicts(db)
        measure(db)


if __name__ == "__main__":
    main()

"""Check the statistics at matched capability on simulated experiments with known truth
(``capsafe_core.analysis.simulate``), and print the earlier method's figures beside today's.

Run: python scripts/matched_simulation.py [--experiments 200] [--seeds 1] [--run-sd 0.0]

Three worlds, two mitigations each, capability on 100 prompts, safety on 200, two noisy judges:
- *coverage*: how often the interpolated 95% CI covers the judge's true value at the target;
- *null*: identical true safety at the target: how often a significant difference (any view) or a
  conclusion change is reported (earlier method: how often the winner differs between the views);
- *power*: one mitigation 0.15 less safe as the judges measure it (0.176 in truth: the judges err
  at 10% and 5%, which shrinks differences by 0.85), and 0.15 less safe in truth: how often it is
  found significantly less safe in the first judge's view (earlier method: how often it is not the
  winner; it tested nothing).

The earlier method took capability as exact: which checkpoint reaches the target, and the
interpolation weight, came from point estimates; its CI was a bootstrap over safety prompts only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from capsafe_core import analysis
from capsafe_core.analysis.simulate import World, experiment

ARGS = {"capability_benchmark": "cap", "scorer": "scorer"}


def earlier(v: pl.DataFrame, target: float, rng: np.random.Generator) -> dict[tuple[str, str], tuple[float, ...]]:
    """The earlier method: (judge, mitigation) → (interpolated value, lo, hi), capability as exact."""
    cap = analysis.checkpoint_rates(v, evaluator="scorer", benchmarks="cap", metric="capability")
    out = {}
    for judge in ("judge1", "judge2"):
        pv = analysis.prompt_values(v, evaluator=judge, benchmarks="safe", metric="unsafe_rate")
        for (mit,), part in cap.sort("step").group_by(["mitigation"], maintain_order=True):
            caps, cks = part["value"].to_list(), part["checkpoint_id"].to_list()
            idx = next((i for i, c in enumerate(caps) if c >= target), None)
            if idx is None:
                continue
            j = max(idx - 1, 0)
            w = 1.0 if idx == 0 else (target - caps[j]) / (caps[idx] - caps[j])
            a = pv.filter(pl.col("checkpoint_id") == cks[j]).sort("prompt_id")["value"].to_numpy()
            b = pv.filter(pl.col("checkpoint_id") == cks[idx]).sort("prompt_id")["value"].to_numpy()
            rows = rng.integers(0, len(a), size=(1000, len(a)))
            reps = (1 - w) * a[rows].mean(axis=1) + w * b[rows].mean(axis=1)
            lo, hi = np.quantile(reps, [0.025, 0.975])
            out[(judge, str(mit))] = ((1 - w) * a.mean() + w * b.mean(), lo, hi)
    return out


def run(world: World, n: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    cover_new = cover_old = total = 0
    null_new = null_old = power_new = power_old = 0
    for i in range(n):
        v, truth = experiment(world, rng)
        tables = analysis.compare_tables(v, world.target, **ARGS, seed=i)
        c, d = tables["compare"], tables["differences"]
        old = earlier(v, world.target, rng)
        for (judge, mit), t in truth.items():
            row = c.filter((pl.col("evaluator") == judge) & (pl.col("mitigation") == mit))
            if row.height and row["interp_lo"][0] is not None and t is not None:
                total += 1
                cover_new += row["interp_lo"][0] <= t <= row["interp_hi"][0]
                if (judge, mit) in old:
                    cover_old += old[(judge, mit)][1] <= t <= old[(judge, mit)][2]
        winners = {j: min(("a", "b"), key=lambda m, j=j: old.get((j, m), (9,))[0]) for j in ("judge1", "judge2")}
        if not world.shift:
            null_new += bool(d["significant"].any() or tables["changes"].height)
            null_old += winners["judge1"] != winners["judge2"]
        else:
            j1 = d.filter(pl.col("evaluator") == "judge1")
            power_new += bool(j1.height and j1["significant"][0] and j1["diff"][0] < 0)  # a − b < 0: b less safe
            power_old += winners["judge1"] == "a"
    return {
        "coverage_new": cover_new / max(total, 1),
        "coverage_old": cover_old / max(total, 1),
        "null_new": null_new / n,
        "null_old": null_old / n,
        "power_new": power_new / n,
        "power_old": power_old / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--experiments", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=1, help="runs per mitigation")
    ap.add_argument("--run-sd", type=float, default=0.0, help="run-to-run spread (with --seeds > 1)")
    args = ap.parse_args()
    base = {"seeds": args.seeds, "run_sd": args.run_sd}
    null = run(World(**base), args.experiments, 1)
    j = World().judges[0]
    judged = 0.15 / (1 - j.false_negative - j.false_positive)  # 0.15 as both judges measure it
    alt = run(World(shift={"b": judged}, **base), args.experiments, 2)
    true = run(World(shift={"b": 0.15}, **base), args.experiments, 3)
    print(f"{args.experiments} simulated experiments per world, {args.seeds} run(s) per mitigation")
    print(f"{'':48} {'earlier':>8} {'now':>8}")
    for name, world in (("null world", null), ("shift world", alt)):
        label = f"interpolated 95% CI covers the truth ({name})"
        print(f"{label:48} {world['coverage_old']:8.3f} {world['coverage_new']:8.3f}")
    print(f"{'identical: reported different / changed':48} {null['null_old']:8.3f} {null['null_new']:8.3f}")
    print(f"{'0.15 less safe as judged: found less safe (judge1)':48} {alt['power_old']:8.3f} {alt['power_new']:8.3f}")
    print(f"{'0.15 less safe in truth (0.1275 as judged): found':48} {true['power_old']:8.3f} {true['power_new']:8.3f}")
    print("(earlier: 'different' = the winner differs between the two judges; 'found' = not the winner, untested)")


if __name__ == "__main__":
    main()

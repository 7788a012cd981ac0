"""Simulated experiments with known truth, to check the statistics at matched capability.

Each mitigation has a true capability curve over its checkpoints (a power curve from about 0.2
to 0.65–0.85) and a true unsafe rate that rises linearly with true capability; a shifted
mitigation is ``shift`` less safe everywhere. Prompts differ: each capability prompt has a
difficulty and each safety prompt a propensity (normal offsets on the logit scale, ``spread`` and
``safety_spread``),
so the observed answers are correlated across checkpoints as real ones are. Runs (seeds) of a
mitigation differ by a random capability speed and safety offset (``run_sd``). Judges see the
true verdict and err at their own false-negative and false-positive rates; the truth of a view is
that judge's expected rate, whose value at the target is the linear interpolation between the
checkpoints around the true crossing, the quantity the interpolated estimate targets.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy.optimize import brentq
from scipy.special import expit
from scipy.stats import norm

GRID = norm.ppf((np.arange(2000) + 0.5) / 2000)  # the prompt population, for exact population means


@dataclass(frozen=True)
class Judge:
    name: str
    false_negative: float = 0.10
    false_positive: float = 0.05


@dataclass(frozen=True)
class World:
    """Settings of one simulated experiment."""

    mitigations: tuple[str, ...] = ("a", "b")
    shift: dict[str, float] = field(default_factory=dict)  # mitigation -> added true unsafe rate
    seeds: int = 1
    steps: tuple[int, ...] = (0, 10, 20, 30, 40, 50)
    n_capability: int = 100
    n_safety: int = 200
    target: float = 0.5
    judges: tuple[Judge, ...] = (Judge("judge1"), Judge("judge2", 0.05, 0.10))
    spread: float = 1.0  # SD of capability prompts' difficulty (logit scale)
    safety_spread: float = 1.5  # SD of safety prompts' propensity (logit scale): some are nearly always refused
    run_sd: float = 0.0


@functools.cache
def _level(rate: float, spread: float) -> float:
    """The logit-scale level whose population mean (over prompt offsets) is ``rate``."""
    rate = float(np.clip(rate, 1e-4, 1 - 1e-4))
    return float(brentq(lambda a: expit(a + spread * GRID).mean() - rate, -30, 30))


def _truth_at(cap: np.ndarray, val: np.ndarray, target: float) -> float | None:
    reach = np.nonzero(cap >= target)[0]
    if len(reach) == 0:
        return None
    i = int(reach[0])
    if i == 0:
        return float(val[0])
    w = (target - cap[i - 1]) / (cap[i] - cap[i - 1])
    return float((1 - w) * val[i - 1] + w * val[i])


def experiment(world: World, rng: np.random.Generator) -> tuple[pl.DataFrame, dict[tuple[str, str], float | None]]:
    """A verdict frame (``store.reads.verdicts``' columns) and the truth: (judge, mitigation) → the
    judge's expected unsafe rate at the capability target (averaged over the mitigation's runs)."""
    w = world
    k = len(w.steps)
    frac = np.linspace(0, 1, k)
    d_cap = rng.normal(0, w.spread, w.n_capability)
    z_safe = rng.normal(0, w.safety_spread, w.n_safety)
    base_s, slope = rng.uniform(0.1, 0.3), rng.uniform(0.3, 0.8)
    rows: list[tuple[object, ...]] = []
    truth: dict[tuple[str, str], list[float]] = {}
    ck = 0
    for mit in w.mitigations:
        top, shape = rng.uniform(0.65, 0.85), rng.uniform(0.7, 1.5)
        for seed in range(w.seeds):
            speed = np.exp(rng.normal(0, w.run_sd * 2))
            cap_true = 0.2 + (top - 0.2) * frac ** (shape * speed)
            unsafe = np.clip(base_s + slope * (cap_true - 0.2) + w.shift.get(mit, 0.0) + rng.normal(0, w.run_sd), 0, 1)
            for j in w.judges:
                judged = unsafe * (1 - j.false_negative) + (1 - unsafe) * j.false_positive
                t = _truth_at(cap_true, judged, w.target)
                if t is not None:
                    truth.setdefault((j.name, mit), []).append(t)
            for step, c, s in zip(w.steps, cap_true, unsafe, strict=True):
                ck += 1
                correct = rng.random(w.n_capability) < expit(_level(c, w.spread) + d_cap)
                y = rng.random(w.n_safety) < expit(_level(s, w.safety_spread) + z_safe)
                base = (ck, mit, seed, step)
                rows += [
                    (*base, i, "cap", "capability", "scorer", "capability", bool(v)) for i, v in enumerate(correct)
                ]
                for j in w.judges:
                    flip = rng.random(w.n_safety) < np.where(y, j.false_negative, j.false_positive)
                    says = y ^ flip
                    rows += [(*base, 10_000 + i, "safe", "safety", j.name, "harm", bool(v)) for i, v in enumerate(says)]
    return _frame(rows), {key: float(np.mean(v)) for key, v in truth.items()}


def _frame(rows: list[tuple[object, ...]]) -> pl.DataFrame:
    cols = ["checkpoint_id", "mitigation", "seed", "step", "prompt_id", "benchmark", "bench_kind", "evaluator"]
    f = pl.DataFrame(rows, schema=[*cols, "ev_kind", "positive"], orient="row")
    label = (
        pl.when(pl.col("ev_kind") == "capability")
        .then(pl.when(pl.col("positive")).then(pl.lit("correct")).otherwise(pl.lit("incorrect")))
        .otherwise(pl.when(pl.col("positive")).then(pl.lit("unsafe")).otherwise(pl.lit("safe")))
    )
    return f.with_columns(
        pl.int_range(pl.len()).alias("generation_id"),
        pl.lit(None, dtype=pl.Utf8).alias("category"),
        label.cast(pl.Categorical).alias("label"),
        pl.lit(None, dtype=pl.Float64).alias("score"),
    ).drop("positive")


__all__ = ["Judge", "World", "experiment"]

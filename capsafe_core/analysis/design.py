"""The design of an audit sample: how many labels each stratum gets, and which generations are drawn.

Strata are checkpoint × coherence flag × whether the safety judges agree. Labels go where they reduce
the corrected rate's variance most: **Neyman allocation**, ``n_h ∝ N_h · S_h``, with ``S_h`` the
standard deviation of the judge's error in the stratum, ``sqrt(e_h (1 − e_h))``. The error rate ``e_h``
comes from the human labels so far (any labels: the allocation only changes efficiency, never bias,
because every inclusion probability is known), shrunk towards a prior (``PRIOR_ERROR``) with the
weight of ``PRIOR_LABELS`` labels. A stratum never gets an inclusion probability under
``MIN_SHARE`` of the proportional one, so no response is left out of the sample's reach.

The draw is **systematic sampling with unequal probabilities** (Madow 1949) over the population
ordered by stratum and, within it, at random: a fixed size ``n``, inclusion probability ``π_i`` for
every generation exactly, and per stratum the allocated count rounded up or down. The drawn
generations are then put in a random order: a person who labels only the first ``k`` of them still
labels a random subsample, whose weights are the same up to a constant.
"""

from __future__ import annotations

import numpy as np
import polars as pl

PRIOR_ERROR = {"agree": 0.05, "agree_incoherent": 0.2, "disagree": 0.5}
PRIOR_LABELS = 4.0
MIN_SHARE = 0.2


def prior_error(coherence: str, judges: str) -> float:
    """Error of the judge before any label: judges that disagree are wrong half the time, and agreeing
    judges err more on incoherent answers than on coherent ones."""
    if judges == "disagree":
        return PRIOR_ERROR["disagree"]
    return PRIOR_ERROR["agree_incoherent" if coherence == "incoherent" else "agree"]


def error_sd(prior: float, errors: int, labels: int) -> float:
    """``sqrt(e (1 − e))`` of the judge's error rate ``e``, shrunk towards ``prior``."""
    e = (errors + PRIOR_LABELS * prior) / (labels + PRIOR_LABELS)
    return float(np.sqrt(e * (1 - e)))


def allocate(sizes: np.ndarray, sds: np.ndarray, n: int) -> np.ndarray:
    """Expected labels per stratum (real numbers summing to ``min(n, N)``): Neyman allocation with every
    stratum capped at its size and floored at ``MIN_SHARE`` of its proportional share, i.e.
    ``clip(λ · N_h · S_h, floor_h, N_h)`` with ``λ`` found by bisection so that the labels sum to ``n``."""
    sizes = np.asarray(sizes, dtype=float)
    total = sizes.sum()
    if n >= total:
        return sizes.copy()
    floor = np.minimum(sizes, MIN_SHARE * n * sizes / total)
    want = sizes * np.maximum(np.asarray(sds, dtype=float), 1e-9)

    def alloc(lam: float) -> np.ndarray:
        return np.clip(lam * want, floor, sizes)

    lo, hi = 0.0, 1.0
    while alloc(hi).sum() < n:
        hi *= 2
    for _ in range(200):  # the sum is monotone in λ: bisection to machine precision
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if alloc(mid).sum() < n else (lo, mid)
    return alloc(hi)


def systematic(pi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices drawn by systematic sampling with inclusion probabilities ``pi`` (each in (0, 1]), in the
    given order: unit ``i`` is drawn when a point ``u + k`` falls in its slice of the cumulative sum."""
    cum = np.concatenate([[0.0], np.cumsum(pi)])
    u = rng.uniform()
    points = u + np.arange(int(np.floor(cum[-1] - u + 1e-9)) + 1)
    idx = np.searchsorted(cum, points, side="right") - 1
    return np.unique(idx[(idx >= 0) & (idx < len(pi))])


def probabilities(population: pl.DataFrame, n: int) -> pl.DataFrame:
    """Per stratum of ``population`` (``generation_id, stratum, sd``): ``stratum, size, sd, expected,
    inclusion_prob`` under the allocation of ``n`` labels."""
    strata = population.group_by("stratum").agg(pl.len().alias("size"), pl.col("sd").first()).sort("stratum")
    sizes = strata["size"].to_numpy()
    alloc = allocate(sizes, strata["sd"].to_numpy(), n)
    return strata.with_columns(
        pl.Series("expected", alloc), pl.Series("inclusion_prob", np.clip(alloc / sizes, 0.0, 1.0))
    )


def draw(population: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """``population``: ``generation_id, stratum, sd`` (the stratum's error SD). Returns the drawn
    generations: ``generation_id, position, stratum, inclusion_prob``, in the random labelling order."""
    rng = np.random.default_rng(seed)
    probs = probabilities(population, n)
    order = population.select("generation_id", "stratum").with_columns(
        pl.Series("_r", rng.permutation(population.height))
    )
    frame = order.join(probs.select("stratum", "inclusion_prob"), on="stratum").sort("stratum", "_r")
    chosen = frame[systematic(frame["inclusion_prob"].to_numpy(), rng)]
    return (
        chosen.with_columns(pl.Series("position", rng.permutation(chosen.height) + 1))
        .sort("position")
        .select("generation_id", "position", "stratum", "inclusion_prob")
    )

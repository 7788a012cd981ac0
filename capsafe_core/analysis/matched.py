"""Safety at a capability target, with the uncertainty of everything that decides it.

One bootstrap serves every view (benchmark, evaluator, metric) of an experiment. Each replicate
resamples, in this order:

1. the runs (seeds) of each mitigation, with replacement, where there are several;
2. the capability prompts (one draw shared by every checkpoint, mitigation and seed);
3. the safety prompts, per benchmark (one draw shared by every checkpoint, mitigation and view);

and then recomputes each checkpoint's capability and safety, which checkpoint of each run first
reaches the target, and the interpolation weight between it and the checkpoint before. So the
interval accounts for prompt sampling of capability and safety and for run-to-run variation (with
one run per mitigation, only for the prompts); it does not account for judge error (see the
judge-corrected rates for that). Because the same resampled prompts enter every mitigation, the
differences between mitigations are paired.

A mitigation's value is the mean over its runs that reach the target, with a percentile
interval; ``p_reached`` is the share of replicates in which at least one resampled run reaches
it. A difference between two mitigations gets a normal interval and a two-sided z-test from its
bootstrap standard error, Holm-corrected over the pairs of mitigations within each view: each view
is its own question (another benchmark or judge), and a *conclusion change* asks for significant
differences of opposite sign in two views, which a false positive in one view alone cannot make.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.special import ndtr, ndtri  # the normal's cdf and quantile (scipy.stats takes a third of a second to import)

B = 1000
ALPHA = 0.05
WHAT_THE_CI_INCLUDES = (
    "95% bootstrap CI over safety prompts, capability prompts (so over which checkpoint reaches the target "
    "and the interpolation) and, where a mitigation has several runs, over its seeds; not over judge error"
)


@dataclass(frozen=True)
class View:
    """Per-prompt values of one (benchmark, evaluator, metric): ``prompt_values`` output."""

    benchmark: str
    evaluator: str
    metric: str
    pv: pl.DataFrame


@dataclass(frozen=True)
class _Checkpoints:
    ids: np.ndarray  # checkpoint ids, in row order
    runs: dict[str, dict[int, np.ndarray]]  # mitigation -> seed -> row indices, by step
    steps: np.ndarray
    cap: np.ndarray  # (checkpoints, replicates) capability


@dataclass(frozen=True)
class _Weights:
    """Each prompt's count in each replicate (replicate 0: the data as observed), drawn per benchmark (a
    stratum) from its own seeded stream: ``blocks`` holds each benchmark's sorted prompt ids and seed.
    The counts are drawn again, a cache-sized chunk at a time, wherever they are used, so the same
    replicates enter every view without a (replicates × prompts) matrix in memory."""

    replicates: int
    blocks: list[tuple[np.ndarray, int]]

    def weighted_sums(self, parts: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Per ``(values, prompt_ids)`` of ``parts`` (values: rows × prompts, column j is prompt
        ``prompt_ids[j]``, sorted and distinct): (rows, replicates), the values summed under each
        replicate's counts."""
        outs = [np.zeros((values.shape[0], self.replicates)) for values, _ in parts]
        found = [0] * len(parts)
        for ids, seed in self.blocks:
            users = []  # (output, values of this benchmark's prompts, their columns in the counts or None for all)
            for i, (values, prompt_ids) in enumerate(parts):
                at = np.searchsorted(ids, prompt_ids).clip(max=len(ids) - 1)
                sel = np.flatnonzero(ids[at] == prompt_ids)
                if len(sel):
                    found[i] += len(sel)
                    mine = values if len(sel) == values.shape[1] else values[:, sel]
                    outs[i][:, 0] += mine.sum(axis=1)  # replicate 0: each prompt once
                    users.append((outs[i], mine, None if len(sel) == len(ids) else at[sel]))
            if not users:
                continue
            rng = np.random.default_rng(seed)
            for start, counts in _count_chunks(rng, len(ids), self.replicates - 1):
                for out, mine, cols in users:
                    used = counts if cols is None else counts[:, cols]
                    out[:, 1 + start : 1 + start + len(counts)] += mine @ used.T
        if any(n != len(prompt_ids) for n, (_, prompt_ids) in zip(found, parts, strict=True)):
            raise ValueError("a prompt without bootstrap weights")
        return outs


def _index(ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Position of each of ``values`` in the distinct ``ids`` (a lookup table over the id range)."""
    if not len(ids):
        return np.zeros(0, dtype=np.int64)
    low = int(ids.min())
    table = np.zeros(int(ids.max()) - low + 1, dtype=np.int64)
    table[ids - low] = np.arange(len(ids))
    return table[values - low]


def _resampled_means(pvs: list[pl.DataFrame], ck_ids: np.ndarray, weights: _Weights) -> list[np.ndarray]:
    """Per frame of per-prompt values: (checkpoints, replicates), each checkpoint's mean over prompts
    under the replicates' prompt weights. NaN where a checkpoint has none."""
    parts = []
    for pv in pvs:
        f = pv.filter(pl.col("value").is_not_null() & pl.col("checkpoint_id").is_in(ck_ids.tolist()))
        prompt_col = f["prompt_id"].to_numpy()
        prompts = f["prompt_id"].unique().sort().to_numpy()  # polars: several times numpy's hashed unique
        rows = _index(ck_ids, f["checkpoint_id"].to_numpy())
        cols = _index(prompts, prompt_col)
        # values, then 1 where a checkpoint has the prompt; where every checkpoint has every prompt, one
        # row of ones stands for all of them (half the product)
        complete = f.height == len(ck_ids) * len(prompts)
        both = np.full((len(ck_ids) + (1 if complete else len(ck_ids)), len(prompts)), 0.0)
        both[rows, cols] = f["value"].to_numpy()
        if complete:
            both[len(ck_ids)] = 1.0
        else:
            both[len(ck_ids) + rows, cols] = 1.0
        parts.append((both, prompts))
    with np.errstate(invalid="ignore", divide="ignore"):
        return [sums[: len(ck_ids)] / sums[len(ck_ids) :] for sums in weights.weighted_sums(parts)]


CHUNK = 1 << 21  # prompt draws per chunk of replicates (16 MB of counts)


def _count_chunks(rng: np.random.Generator, n: int, b: int) -> Iterator[tuple[int, np.ndarray]]:
    """``resample_counts(rng, n, b)`` a chunk of replicates at a time: (first replicate, counts)."""
    step = max(1, CHUNK // max(n, 1))
    for start in range(0, b, step):
        yield start, resample_counts(rng, n, min(step, b - start))


def resample_counts(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """(b, n): how often each of ``n`` items is drawn in each of ``b`` resamples of size ``n`` with
    replacement (a uniform multinomial, drawn as ``n`` uniform indices per resample and counted:
    numpy's ``multinomial`` walks every category per resample, several times slower at 25,000 items)."""
    drawn = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
    return np.bincount(drawn.ravel(), minlength=b * n).reshape(b, n).astype(float)


def _prompt_weights(frames: list[pl.DataFrame], rng: np.random.Generator, b: int) -> _Weights:
    """Per benchmark (a stratum, which keeps its size in every replicate), its prompts and the seed of
    their counts."""
    by_bench: dict[str, set[int]] = {}
    for f in frames:
        for (bench,), part in f.select("benchmark", "prompt_id").unique().group_by(["benchmark"]):
            by_bench.setdefault(str(bench), set()).update(part["prompt_id"].to_list())
    seeds = rng.integers(0, 2**63 - 1, size=len(by_bench))
    blocks = [
        (np.array(sorted(by_bench[bench]), dtype=np.int64), int(seed))
        for bench, seed in zip(sorted(by_bench), seeds, strict=True)
    ]
    return _Weights(b + 1, blocks)


def _checkpoints(cap_pv: pl.DataFrame, rng: np.random.Generator, b: int) -> _Checkpoints:
    ck = cap_pv.select("checkpoint_id", "mitigation", "seed", "step").unique().sort("mitigation", "seed", "step")
    ids = ck["checkpoint_id"].to_numpy()
    rows: dict[str, dict[int, list[int]]] = {}
    for i, (mit, seed) in enumerate(ck.select("mitigation", "seed").iter_rows()):
        rows.setdefault(str(mit), {}).setdefault(int(seed), []).append(i)
    runs = {m: {s: np.array(r) for s, r in by_seed.items()} for m, by_seed in rows.items()}
    (cap,) = _resampled_means([cap_pv], ids, _prompt_weights([cap_pv], rng, b))
    return _Checkpoints(ids, runs, ck["step"].to_numpy(), cap)


def _run_at_target(cap: np.ndarray, safe: np.ndarray, target: float) -> tuple[np.ndarray, ...]:
    """One run's checkpoints (rows, by step) × replicates: (reached, first index, first value,
    interpolated value) per replicate."""
    reach = np.nan_to_num(cap, nan=-1.0) >= target
    reached = reach.any(axis=0)
    first = reach.argmax(axis=0)
    cols = np.arange(cap.shape[1])
    c1, s1 = cap[first, cols], safe[first, cols]
    prev = np.maximum(first - 1, 0)
    c0, s0 = cap[prev, cols], safe[prev, cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where((first == 0) | (c1 == target), 1.0, (target - c0) / (c1 - c0))
    interp = np.where(w == 1.0, s1, (1 - w) * s0 + w * s1)
    return reached, first, np.where(reached, s1, np.nan), np.where(reached, interp, np.nan)


def _mean_over_runs(values: np.ndarray, reached: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(runs, replicates) → per replicate the mean over the resampled runs that reach the target."""
    use = counts * (reached & ~np.isnan(values))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(use.sum(axis=0) > 0, (np.nan_to_num(values) * use).sum(axis=0) / use.sum(axis=0), np.nan)


def _interval(reps: np.ndarray) -> tuple[float | None, float | None]:
    ok = reps[~np.isnan(reps)]
    if len(ok) < 2:
        return None, None
    lo, hi = np.quantile(ok, [ALPHA / 2, 1 - ALPHA / 2])
    return float(lo), float(hi)


def _num(x: float) -> float | None:
    return None if x is None or np.isnan(x) else float(x)


def _normal_test(diff: float, reps: np.ndarray) -> tuple[float | None, float | None, float]:
    """95% CI and two-sided p-value of a difference from its bootstrap standard error, centred on the
    observed difference. (The replicates' own percentiles are pulled towards the mean over nearby
    checkpoints when the crossing moves between replicates, which made tests conservative; the
    estimate itself is unbiased in simulation, see ``tests/test_matched.py``.)"""
    ok = reps[~np.isnan(reps)]
    if len(ok) < 2:
        return None, None, 1.0
    se = float(np.std(ok, ddof=1))
    if se == 0.0:
        return diff, diff, 0.0 if diff != 0 else 1.0
    half = float(ndtri(1 - ALPHA / 2)) * se
    return diff - half, diff + half, float(2 * ndtr(-abs(diff) / se))


def bootstrap(
    cap_pv: pl.DataFrame, views: list[View], target: float, *, b: int = B, seed: int = 0
) -> dict[str, pl.DataFrame]:
    """Safety at ``target`` per view and mitigation, with CIs and paired differences (module docstring).

    ``cap_pv``: per-prompt capability values (``prompt_values`` on the capability benchmark).
    Returns frames ``matched`` (view × mitigation), ``runs`` (view × mitigation × seed, point
    values) and ``differences`` (view × pair of mitigations).
    """
    rng = np.random.default_rng(seed)
    cks = _checkpoints(cap_pv, rng, b)
    seed_counts = {
        mit: np.vstack([np.ones((1, len(r))), resample_counts(rng, len(r), b)]).T for mit, r in cks.runs.items()
    }
    weights = _prompt_weights([v.pv for v in views], rng, b)
    matched, runs, diffs = [], [], []
    for view, safe in zip(views, _resampled_means([v.pv for v in views], cks.ids, weights), strict=True):
        key = {"benchmark": view.benchmark, "evaluator": view.evaluator, "metric": view.metric}
        interp_reps: dict[str, np.ndarray] = {}
        for mit, by_seed in cks.runs.items():
            per_run = {s: _run_at_target(cks.cap[rows], safe[rows], target) for s, rows in by_seed.items()}
            reached = np.stack([r[0] for r in per_run.values()])
            first_v = _mean_over_runs(np.stack([r[2] for r in per_run.values()]), reached, seed_counts[mit])
            interp_v = _mean_over_runs(np.stack([r[3] for r in per_run.values()]), reached, seed_counts[mit])
            interp_reps[mit] = interp_v
            for s, (rch, first, fv, iv) in per_run.items():
                runs.append(
                    {**key, "mitigation": mit, "seed": s, **_run_row(cks, by_seed[s], target, rch, first, fv, iv)}
                )
            matched.append({**key, "mitigation": mit, **_summary(first_v, interp_v)})
        diffs += _differences(key, interp_reps)
    return {
        "matched": _with_run_columns(pl.DataFrame(matched, schema=MATCHED_SCHEMA), pl.DataFrame(runs)),
        "runs": pl.DataFrame(runs),
        "differences": pl.DataFrame(diffs, schema=DIFF_SCHEMA),
    }


MATCHED_SCHEMA = {
    "benchmark": pl.Utf8,
    "evaluator": pl.Utf8,
    "metric": pl.Utf8,
    "mitigation": pl.Utf8,
    "p_reached": pl.Float64,
    "value": pl.Float64,
    "lo": pl.Float64,
    "hi": pl.Float64,
    "interp_value": pl.Float64,
    "interp_lo": pl.Float64,
    "interp_hi": pl.Float64,
}
DIFF_SCHEMA = {
    "benchmark": pl.Utf8,
    "evaluator": pl.Utf8,
    "metric": pl.Utf8,
    "a": pl.Utf8,
    "b": pl.Utf8,
    "diff": pl.Float64,
    "lo": pl.Float64,
    "hi": pl.Float64,
    "p": pl.Float64,
    "p_holm": pl.Float64,
    "significant": pl.Boolean,
}


def _run_row(
    cks: _Checkpoints,
    rows: np.ndarray,
    target: float,
    reached: np.ndarray,
    first: np.ndarray,
    fv: np.ndarray,
    iv: np.ndarray,
) -> dict[str, object]:
    """One run's point values (replicate 0)."""
    steps, i = cks.steps[rows], int(first[0])
    cap = cks.cap[rows, 0]
    between = None
    if reached[0]:
        between = f"step {steps[i]}" if i == 0 or cap[i] == target else f"steps {steps[i - 1]}–{steps[i]}"
    return {
        "reached": bool(reached[0]),
        "first_step": int(steps[i]) if reached[0] else None,
        "first_capability": _num(cap[i]) if reached[0] else None,
        "value": _num(fv[0]),
        "interp_value": _num(iv[0]),
        "interp_between": between,
        "max_capability": _num(np.nanmax(cap)) if len(rows) and not np.isnan(cap).all() else None,
    }


def _summary(first_v: np.ndarray, interp_v: np.ndarray) -> dict[str, float | None]:
    """Replicate 0 is the data as observed; the others give the intervals and ``p_reached``."""
    lo, hi = _interval(first_v[1:])
    ilo, ihi = _interval(interp_v[1:])
    return {
        "p_reached": float(np.mean(~np.isnan(interp_v[1:]))) if len(interp_v) > 1 else None,
        "value": _num(first_v[0]),
        "lo": lo,
        "hi": hi,
        "interp_value": _num(interp_v[0]),
        "interp_lo": ilo,
        "interp_hi": ihi,
    }


def _differences(key: dict[str, str], reps: dict[str, np.ndarray]) -> list[dict[str, object]]:
    """Every pair of mitigations that both reach the target: value(a) − value(b), interpolated."""
    tests = []
    for a, b in itertools.combinations(sorted(reps), 2):
        d = reps[a] - reps[b]
        if not np.isnan(d[0]):
            tests.append((a, b, float(d[0]), *_normal_test(float(d[0]), d[1:])))
    adjusted = holm([t[-1] for t in tests])
    return [
        {**key, "a": a, "b": b, "diff": diff, "lo": lo, "hi": hi, "p": p, "p_holm": adj, "significant": adj < ALPHA}
        for (a, b, diff, lo, hi, p), adj in zip(tests, adjusted, strict=True)
    ]


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (as ``statsmodels.stats.multitest.multipletests(p,
    method="holm")``, which ``tests/test_matched.py`` checks against)."""
    order = np.argsort(p, kind="stable")
    m = len(p)
    out = np.empty(m)
    if m:
        out[order] = np.maximum.accumulate([min(1.0, (m - k) * p[i]) for k, i in enumerate(order)])
    return [float(x) for x in out]


def _with_run_columns(matched: pl.DataFrame, runs: pl.DataFrame) -> pl.DataFrame:
    """Add, per view and mitigation, the runs' summary: seeds, how many reach the target, the
    earliest first step, the mean capability there, where the interpolation lies (one run: its
    steps), the highest capability seen, and ``reached`` (at least one run reaches the target)."""
    if runs.height == 0:
        return matched
    agg = runs.group_by("benchmark", "evaluator", "metric", "mitigation").agg(
        pl.len().alias("seeds"),
        pl.col("reached").sum().cast(pl.Int64).alias("seeds_reached"),
        pl.col("first_step").min().alias("first_step"),
        pl.col("first_capability").mean().alias("first_capability"),
        pl.when(pl.len() == 1)
        .then(pl.col("interp_between").first())
        .otherwise(pl.format("{} of {} runs", pl.col("reached").sum(), pl.len()))
        .alias("interp_between"),
        pl.col("max_capability").max().alias("max_capability"),
    )
    out = matched.join(agg, on=["benchmark", "evaluator", "metric", "mitigation"], how="left")
    return out.with_columns((pl.col("seeds_reached") > 0).alias("reached"))

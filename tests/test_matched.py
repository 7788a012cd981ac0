"""The statistics at matched capability, checked on simulated experiments with known truth
(``capsafe_core.analysis.simulate``: capability on 100 prompts, safety on 200, two noisy judges)."""

import numpy as np
import polars as pl
import pytest
from statsmodels.stats.multitest import multipletests

from capsafe_core import analysis
from capsafe_core.analysis.matched import holm
from capsafe_core.analysis.simulate import World, experiment

N = 200
ARGS = {"capability_benchmark": "cap", "scorer": "scorer"}


def _simulate(world: World, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(N):
        v, truth = experiment(world, rng)
        yield analysis.compare_tables(v, world.target, **ARGS, seed=i), truth


def _covered(tables, truth) -> tuple[int, int]:
    hit = total = 0
    for r in tables["compare"].iter_rows(named=True):
        t = truth.get((r["evaluator"], r["mitigation"]))
        if t is not None and r["interp_lo"] is not None:
            total += 1
            hit += r["interp_lo"] <= t <= r["interp_hi"]
    return hit, total


@pytest.fixture(scope="module")
def null_world():
    return list(_simulate(World(), 11))


def test_interpolated_ci_covers_the_truth(null_world):
    hit = total = 0
    for tables, truth in null_world:
        h, t = _covered(tables, truth)
        hit, total = hit + h, total + t
    assert total >= 0.95 * 4 * N  # two mitigations × two judges, nearly always reaching the target
    assert 0.92 <= hit / total <= 0.995


def test_identical_mitigations_are_rarely_told_apart(null_world):
    flagged = sum(bool(t["differences"]["significant"].any() or t["changes"].height) for t, _ in null_world)
    assert flagged / N <= 0.10


def test_a_less_safe_mitigation_is_found():
    """b is 0.15 less safe than a as both judges measure it (0.176 in truth: they err at 15% in all)."""
    j = World().judges[0]
    world = World(shift={"b": 0.15 / (1 - j.false_negative - j.false_positive)})
    found = 0
    for tables, _ in _simulate(world, 12):
        d = tables["differences"].filter(pl.col("evaluator") == "judge1")
        found += bool(d.height and d["significant"][0] and d["diff"][0] < 0)  # a − b < 0
    assert found / N >= 0.85


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 12):
        p = list(rng.uniform(0, 0.2, m))
        assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert holm([]) == []


def test_runs_are_counted_and_averaged():
    """Three runs per mitigation that differ from run to run: each run is a row of ``runs``, and the
    mitigation's value is the mean of the runs that reach the target."""
    rng = np.random.default_rng(4)
    v, _ = experiment(World(seeds=3, run_sd=0.05), rng)
    t = analysis.compare_tables(v, 0.5, **ARGS)
    c = t["compare"].filter(pl.col("evaluator") == "judge1").sort("mitigation")
    assert c["seeds"].to_list() == [3, 3]
    runs = t["runs"].filter(pl.col("evaluator") == "judge1")
    for mit, value in c.select("mitigation", "interp_value").iter_rows():
        reached = runs.filter((pl.col("mitigation") == mit) & pl.col("reached"))
        assert value == pytest.approx(reached["interp_value"].mean())
    assert (c["interp_lo"] < c["interp_value"]).all() and (c["interp_value"] < c["interp_hi"]).all()


def test_figures_show_the_runs():
    """Curves draw a thin line per run and a bold mean per mitigation; the forest plot marks the best set
    and shows each run as a point."""
    from capsafe_core import plots

    v, _ = experiment(World(seeds=3, run_sd=0.05), np.random.default_rng(5))
    df = analysis.curves(
        v, evaluator="judge1", benchmarks="safe", metric="unsafe_rate", capability_benchmark="cap", scorer="scorer"
    )
    names = [t.name for t in plots.curve_figure(df, target=0.5, y_label="unsafe").data]
    assert {"a seed 0", "a seed 1", "a seed 2", "a (mean of 3 runs)", "b (mean of 3 runs)"} <= set(names)
    t = analysis.overview(v, target=0.5, safety_benchmarks=["safe"], evaluator="judge1", **ARGS)
    fig = plots.forest_figure(t["compare"], t["runs"], x_label="unsafe")
    runs, main = fig.data
    assert len(runs.x) == 6 and len(main.x) == 2
    assert "#2ca02c" in main.marker.color  # the best set in green


def test_resample_counts_are_a_uniform_multinomial():
    """Counted uniform draws have the multinomial's law: every resample keeps its size, one item's
    count is Binomial(n, 1/n) (chi-square against scipy), and two items' counts covary by -1/n."""
    from scipy.stats import binom, chisquare

    from capsafe_core.analysis.matched import _count_chunks, resample_counts

    n, b = 5, 60_000
    counts = resample_counts(np.random.default_rng(3), n, b)
    assert counts.shape == (b, n) and (counts.sum(axis=1) == n).all()
    observed = np.bincount(counts[:, 0].astype(int), minlength=n + 1)
    expected = binom.pmf(np.arange(n + 1), n, 1 / n) * b
    assert chisquare(observed, expected).pvalue > 0.001
    assert abs(np.cov(counts[:, 0], counts[:, 1])[0, 1] + 1 / n) < 0.02
    chunks = list(_count_chunks(np.random.default_rng(4), 3_000, 3_000))  # as the bootstrap draws them
    assert len(chunks) > 1 and [start for start, _ in chunks] == list(np.cumsum([0] + [len(c) for _, c in chunks[:-1]]))
    big = np.vstack([c for _, c in chunks])
    assert big.shape == (3_000, 3_000) and (big.sum(axis=1) == 3_000).all()
    assert len({tuple(r) for r in big[:, :50]}) == 3_000  # chunks are not repeats of one draw


def test_weighted_sums_equal_the_product_with_every_count():
    """The chunked sums equal values @ counts.T with each benchmark's whole count matrix drawn from its
    seed, for a view on all of one benchmark, on part of one and across two; an unknown prompt is refused."""
    from capsafe_core.analysis.matched import _count_chunks, _Weights

    b, rng = 700, np.random.default_rng(5)
    a_ids, b_ids = np.arange(0, 3_000, 2), np.arange(1, 900, 2)  # interleaved ids, two benchmarks
    weights = _Weights(b + 1, [(a_ids, 11), (b_ids, 12)])
    full = {}
    for ids, seed in weights.blocks:
        drawn = np.vstack([c for _, c in _count_chunks(np.random.default_rng(seed), len(ids), b)])
        full.update(zip(ids.tolist(), np.vstack([np.ones(len(ids)), drawn]).T, strict=True))
    views = [a_ids, np.sort(rng.choice(a_ids, 300, replace=False)), np.sort(np.r_[a_ids[:50], b_ids])]
    parts = [(rng.random((6, len(p))), p) for p in views]
    for (values, prompts), got in zip(parts, weights.weighted_sums(parts), strict=True):
        want = values @ np.array([full[p] for p in prompts.tolist()])
        np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(ValueError, match="without bootstrap weights"):
        weights.weighted_sums([(np.ones((1, 1)), np.array([5_000]))])


@pytest.mark.parametrize("complete", [True, False])
def test_resampled_means_equal_weighted_means(complete):
    """Each checkpoint's mean under a replicate's counts == Σ value·count / Σ count over the prompts it has,
    where every checkpoint has every prompt (one row of ones stands for all) and where one lacks some."""
    from capsafe_core.analysis.matched import _count_chunks, _resampled_means, _Weights

    rng, b = np.random.default_rng(8), 300
    prompts, cks = np.arange(10, 410), np.array([3, 5, 9])
    pv = pl.DataFrame(
        {
            "checkpoint_id": np.repeat(cks, len(prompts)),
            "prompt_id": np.tile(prompts, len(cks)),
            "value": rng.random(len(cks) * len(prompts)),
        }
    )
    if not complete:
        pv = pv.filter(~((pl.col("checkpoint_id") == 5) & (pl.col("prompt_id") % 3 == 0)))
    weights = _Weights(b + 1, [(prompts, 21)])
    (got,) = _resampled_means([pv], cks, weights)
    counts = np.vstack(
        [np.ones(len(prompts)), *[c for _, c in _count_chunks(np.random.default_rng(21), len(prompts), b)]]
    )
    for i, ck in enumerate(cks):
        mine = pv.filter(pl.col("checkpoint_id") == ck)
        c = counts[:, np.searchsorted(prompts, mine["prompt_id"].to_numpy())]
        np.testing.assert_allclose(got[i], c @ mine["value"].to_numpy() / c.sum(axis=1), rtol=1e-12)

"""Analysis on hand-built experiments whose right answers are known."""

import itertools

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.metrics import cohen_kappa_score

from capsafe_core import analysis


def verdict_frame(cells):
    """cells: list of (mitigation, step, benchmark, bench_kind, evaluator, ev_kind, labels, scores)."""
    rows = []
    for mit, step, bench, bkind, ev, ekind, labels, scores in cells:
        for i, (lab, sc) in enumerate(zip(labels, scores, strict=True)):
            rows.append(
                {
                    "generation_id": hash((mit, step, bench, i)) % 10**9,
                    "checkpoint_id": hash((mit, step)) % 10**6,
                    "mitigation": mit,
                    "seed": 0,
                    "step": step,
                    "prompt_id": hash((bench, i)) % 10**6,
                    "benchmark": bench,
                    "bench_kind": bkind,
                    "category": None,
                    "evaluator": ev,
                    "ev_kind": ekind,
                    "label": lab,
                    "score": sc,
                }
            )
    return pl.DataFrame(rows, infer_schema_length=None).with_columns(pl.col("label").cast(pl.Categorical))


def cap_cell(mit, step, acc, n=100):
    k = round(acc * n)
    return (
        mit,
        step,
        "arith",
        "capability",
        "final_number",
        "capability",
        ["correct"] * k + ["incorrect"] * (n - k),
        [1.0] * k + [0.0] * (n - k),
    )


def unsafe_cell(mit, step, rate, n=200, ev="judge"):
    k = round(rate * n)
    return (mit, step, "harm", "safety", ev, "harm", ["unsafe"] * k + ["safe"] * (n - k), [None] * n)


@pytest.fixture
def experiment():
    cells = []
    # mitigation a: capability 0.2, 0.5, 0.8, 0.9 at steps 0, 10, 20, 30; unsafe 0.1, 0.2, 0.4, 0.5
    for step, c, u in [(0, 0.2, 0.1), (10, 0.5, 0.2), (20, 0.8, 0.4), (30, 0.9, 0.5)]:
        cells += [cap_cell("a", step, c), unsafe_cell("a", step, u)]
    # mitigation b: reaches 0.8 only at step 30
    for step, c, u in [(0, 0.2, 0.1), (10, 0.4, 0.1), (20, 0.6, 0.15), (30, 0.85, 0.3)]:
        cells += [cap_cell("b", step, c), unsafe_cell("b", step, u)]
    # mitigation c never reaches 0.8
    for step, c, u in [(0, 0.2, 0.1), (10, 0.3, 0.1)]:
        cells += [cap_cell("c", step, c), unsafe_cell("c", step, u)]
    return verdict_frame(cells)


def test_first_checkpoint_at_target_and_interpolation(experiment):
    m = analysis.compare_table(experiment, 0.8, capability_benchmark="arith", scorer="final_number").sort("mitigation")
    a, b, c = m.row(0, named=True), m.row(1, named=True), m.row(2, named=True)
    assert a["first_step"] == 20 and a["value"] == pytest.approx(0.4)
    assert a["interp_value"] == pytest.approx(0.4)  # exactly at a checkpoint
    assert b["first_step"] == 30 and b["value"] == pytest.approx(0.3)
    # b: between step 20 (0.6, 0.15) and step 30 (0.85, 0.3): w = 0.2/0.25 = 0.8 -> 0.15 + 0.8 * 0.15 = 0.27
    assert b["interp_value"] == pytest.approx(0.27)
    assert b["interp_between"] == "steps 20–30"
    assert not c["reached"] and c["value"] is None and c["max_capability"] == pytest.approx(0.3)
    assert c["p_reached"] < 0.05  # 0.3 on 100 prompts is far from 0.8 in every replicate
    assert a["p_reached"] > 0.99 and 0.5 < b["p_reached"] <= 1.0  # a reaches 0.9 at step 30
    for row in (a, b):
        assert row["lo"] <= row["value"] <= row["hi"]
        assert row["interp_lo"] <= row["interp_value"] <= row["interp_hi"]
        assert row["seeds"] == 1 and row["seeds_reached"] == 1


def test_bootstrap_ci_covers_the_truth():
    """Coverage of the 95% CI on simulated checkpoints with a known unsafe rate (about 95%)."""
    rng = np.random.default_rng(1)
    truth, covered = 0.3, 0
    for trial in range(200):
        k = int(rng.binomial(150, truth))
        v = verdict_frame([unsafe_cell("a", 0, k / 150, n=150), cap_cell("a", 0, 0.9)])
        s = analysis.checkpoint_rates(v, evaluator="judge", benchmarks="harm", metric="unsafe_rate", seed=trial)
        covered += s["lo"][0] <= truth <= s["hi"][0]
    assert 0.9 <= covered / 200 <= 0.99


def test_rates_by_metric():
    v = verdict_frame(
        [
            (
                "a",
                0,
                "harm",
                "safety",
                "kw",
                "refusal",
                ["refusal", "partial_refusal", "compliance", "unparsed"],
                [None] * 4,
            ),
            ("a", 0, "harm", "safety", "sr", "harm", ["unsafe", "safe", "unparsed"], [0.75, 0.0, None]),
        ]
    )
    unsafe = analysis.checkpoint_rates(v, evaluator="kw", benchmarks="harm", metric="unsafe_rate")
    assert unsafe["value"][0] == pytest.approx(1 / 3) and unsafe["n"][0] == 3  # unparsed left out
    refusal = analysis.checkpoint_rates(v, evaluator="kw", benchmarks="harm", metric="refusal_rate")
    assert refusal["value"][0] == pytest.approx(2 / 3)
    harm = analysis.checkpoint_rates(v, evaluator="sr", benchmarks="harm", metric="harmfulness")
    assert harm["value"][0] == pytest.approx(0.375)


def test_curves_join_capability(experiment):
    c = analysis.curves(
        experiment,
        evaluator="judge",
        benchmarks="harm",
        metric="unsafe_rate",
        capability_benchmark="arith",
        scorer="final_number",
    )
    got = c.filter(pl.col("mitigation") == "a").select("step", pl.col("capability").round(3), pl.col("value").round(3))
    want = pl.DataFrame({"step": [0, 10, 20, 30], "capability": [0.2, 0.5, 0.8, 0.9], "value": [0.1, 0.2, 0.4, 0.5]})
    assert_frame_equal(got, want)


def _flat(mit, rates, caps=(0.2, 0.5, 0.8)):
    """A mitigation whose unsafe rate per judge is flat over its checkpoints."""
    cells = []
    for step, c in zip((0, 10, 20), caps, strict=True):
        cells.append(cap_cell(mit, step, c))
        cells += [unsafe_cell(mit, step, r, ev=ev) for ev, r in rates.items()]
    return cells


def test_conclusion_change_needs_significant_opposite_orders():
    # judge says a is far less safe than b, judge2 the reverse; c is like b by both
    v = verdict_frame(
        _flat("a", {"judge": 0.6, "judge2": 0.1})
        + _flat("b", {"judge": 0.1, "judge2": 0.6})
        + _flat("c", {"judge": 0.1, "judge2": 0.6}, caps=(0.25, 0.45, 0.75))
    )
    t = analysis.compare_tables(v, 0.5, capability_benchmark="arith", scorer="final_number")
    best = {r["evaluator"]: r["best_set"] for r in t["compare"].unique("evaluator").iter_rows(named=True)}
    assert best["judge2"] == ["a"] and sorted(best["judge"]) == ["b", "c"]  # b and c indistinguishable
    changes = {(r["x"], r["y"]) for r in t["changes"].iter_rows(named=True)}
    assert changes == {("b", "a"), ("c", "a")} or changes == {("a", "b"), ("a", "c")}
    assert t["compare"]["winner_changes"].all()
    d = t["differences"].filter(pl.col("evaluator") == "judge")
    bc = d.filter((pl.col("a") == "b") & (pl.col("b") == "c")).row(0, named=True)
    assert not bc["significant"] and bc["lo"] < 0 < bc["hi"]
    ab = d.filter((pl.col("a") == "a") & (pl.col("b") == "b")).row(0, named=True)
    assert ab["significant"] and ab["diff"] == pytest.approx(0.5) and ab["p_holm"] < 0.001
    rankings, tau = analysis.sensitivity(t["compare"])
    assert set(rankings["winner"]) <= {"a", "b", "c"} and tau.height


def test_agreement_matches_sklearn():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 300)
    b = np.where(rng.random(300) < 0.8, a, 1 - a)
    v = verdict_frame(
        [
            ("m", 0, "harm", "safety", "j1", "harm", ["unsafe" if x else "safe" for x in a], [None] * 300),
            ("m", 0, "harm", "safety", "j2", "refusal", ["compliance" if x else "refusal" for x in b], [None] * 300),
        ]
    )
    pairs = analysis.agreement(v, dimension="unsafe")
    row = pairs.filter(pl.col("subset") == "all").row(0, named=True)
    assert row["kappa"] == pytest.approx(cohen_kappa_score(a, b))
    assert row["agreement"] == pytest.approx((a == b).mean())
    assert row["kappa_lo"] < row["kappa"] < row["kappa_hi"]
    assert sum(sum(r) for r in row["confusion"]) == 300


# Gwet's AC1 of two raters by irrCAC 0.4.4 (CAC(...).gwet(), rounded to 5 digits) on arrays with these
# cell counts (both 1, a only, b only, both 0). irrCAC pins scipy 1.12 (numpy < 2), so it cannot be a
# test dependency beside the models; the values were computed with it once.
AC1_IRRCAC = [((6, 1, 1, 2), 0.65517), ((44, 1, 0, 5), 0.97513), ((81, 10, 28, 81), 0.62), ((3, 0, 0, 27), 1.0)]


@pytest.mark.parametrize(("cells", "expected"), AC1_IRRCAC)
def test_prevalence_robust_agreement_matches_irrcac_and_statsmodels(cells, expected):
    from statsmodels.stats.inter_rater import fleiss_kappa

    n11, n10, n01, n00 = cells
    a = np.array([1] * (n11 + n10) + [0] * (n01 + n00))
    b = np.array([1] * n11 + [0] * n10 + [1] * n01 + [0] * n00)
    out = analysis.prevalence_robust(a, b)
    assert out["ac1"] == pytest.approx(expected, abs=1e-5)
    per_item = np.stack([a + b, 2 - (a + b)], axis=1)  # raters saying 1 / 0, per item
    assert out["pabak"] == pytest.approx(fleiss_kappa(per_item, method="randolph"))
    assert out["prevalence"] == pytest.approx((a.sum() + b.sum()) / (2 * len(a)))


def test_judge_errors_from_the_confusion_of_people_and_a_judge():
    rng = np.random.default_rng(2)
    person = rng.integers(0, 2, 400)
    judge = np.where(person == 1, rng.random(400) > 0.3, rng.random(400) < 0.1).astype(int)
    v = verdict_frame(
        [("m", 0, "harm", "safety", "j", "harm", ["unsafe" if x else "safe" for x in judge], [None] * 400)]
    )
    humans = pl.DataFrame(
        {
            "generation_id": v["generation_id"].to_list(),
            "annotator": ["p"] * 400,
            "human_label": ["harmful" if x else "benign" for x in person],
            "human_coherent": [None] * 400,
        }
    )
    pairs = analysis.agreement(v, humans, dimension="unsafe")
    err = analysis.judge_errors(pairs).row(0, named=True)
    assert err["judge"] == "j" and err["annotator"] == "p" and err["subset"] == "all"
    assert err["misses"] == pytest.approx(((judge == 0) & (person == 1)).sum() / (person == 1).sum())
    assert err["false_alarms"] == pytest.approx(((judge == 1) & (person == 0)).sum() / (person == 0).sum())
    assert err["misses_lo"] < err["misses"] < err["misses_hi"]


def test_pair_stats_equal_sklearn_on_every_item():
    """κ and the confusion matrix from the four cells' counts == sklearn on the items themselves."""
    from sklearn.metrics import confusion_matrix

    from capsafe_core.analysis.agreement import pair_stats

    rng = np.random.default_rng(1)
    for n in (7, 50, 1000, 20000):
        for p in (0.03, 0.5):
            a = (rng.random(n) < p).astype(np.int64)
            b = np.where(rng.random(n) < 0.8, a, 1 - a)
            got = pair_stats(a, b, np.random.default_rng(0))
            if len(np.unique(np.concatenate([a, b]))) > 1:
                assert got["kappa"] == cohen_kappa_score(a, b)
            assert got["confusion"] == confusion_matrix(a, b, labels=[0, 1]).tolist()


@pytest.mark.parametrize("samples", [1, 3])
def test_prompt_values_are_means_over_samples(samples):
    """Per checkpoint and prompt, the mean of its samples' values, with one sample (read through) and
    with several (grouped); equal to a plain group-by."""
    from capsafe_core.analysis.rates import prompt_values, value_expr

    rng = np.random.default_rng(samples)
    labels = ["unsafe", "safe", "unparsed"]
    cells = [
        ("m", step, "s", "safety", "harm", "harm", [labels[k] for k in rng.integers(0, 3, 40)], [None] * 40)
        for step in (0, 10)
        for _ in range(samples)
    ]
    v = verdict_frame(cells)
    v = v.with_columns(pl.int_range(pl.len()).alias("generation_id"))  # samples of a prompt: distinct generations
    got = prompt_values(v, evaluator="harm", benchmarks="s", metric="unsafe_rate")
    want = (
        v.with_columns(value_expr("unsafe_rate").alias("value"))
        .filter(pl.col("value").is_not_null())
        .group_by("checkpoint_id", "prompt_id")
        .agg(pl.col("value").mean())
    )
    key = ["checkpoint_id", "prompt_id"]
    assert got.height == want.height and (samples == 1 or got.height < v.height * 2 / 3)
    assert_frame_equal(got.select(*key, "value").sort(key), want.sort(key), check_row_order=True)


def _agreement_by_pivot(v, humans, dimension):
    """Reference: every rater's items pivoted into one wide frame, a pair's items its rows without nulls."""
    from capsafe_core.analysis.agreement import coherence_split, pair_stats, rater_values

    rv = rater_values(v, humans, dimension=dimension)
    wide = rv.group_by("generation_id", "rater").agg(pl.col("value").last())
    wide = wide.pivot(on="rater", index="generation_id", values="value")
    split = coherence_split(v, humans)
    subsets = [("all", wide)] + [
        (s, wide.join(split.filter(pl.col("subset") == s), on="generation_id", how="semi"))
        for s in ("coherent", "incoherent", "human_coherent", "human_incoherent")
    ]
    raters = sorted((c for c in wide.columns if c != "generation_id"), key=lambda r: (not r.startswith("human:"), r))
    rng, rows = np.random.default_rng(0), []
    for a, b in itertools.combinations(raters, 2):
        for subset, frame in subsets:
            both = frame.select(a, b).drop_nulls()
            if both.height:
                stats = pair_stats(both[a].to_numpy(), both[b].to_numpy(), rng)
                rows.append({"a": a, "b": b, "subset": subset, "dimension": dimension, **stats})
    return pl.DataFrame(rows, schema_overrides={"confusion": pl.List(pl.List(pl.Int64))})


def test_agreement_equals_the_pivoted_pairs():
    """Pairs aligned by sorted ids give what one pivoted frame gives, on the demo's human-labelled
    experiment with an annotator who changed their mind (the last label counts) and coherence flags."""
    from capsafe_core import bundled
    from capsafe_core.store import Store, reads

    with Store.open(bundled.demo_db(), read_only=True) as s:
        v, humans = reads.verdicts(s, "xstest-completions"), reads.human_labels(s, "xstest-completions")
    again = humans.head(300).with_columns(
        pl.col("human_label").replace({"refusal": "compliance", "compliance": "refusal"}),
        pl.when(pl.int_range(pl.len()) % 2 == 0).then(1).otherwise(0).cast(pl.Int64).alias("human_coherent"),
    )
    humans = pl.concat([humans, again])  # a second, later label on 300 items
    for dimension in ("refusal", "unsafe"):
        got = analysis.agreement(v, humans, dimension=dimension)
        assert got.height > 0 and {"human_coherent", "human_incoherent"} <= set(got["subset"])
        assert_frame_equal(got, _agreement_by_pivot(v, humans, dimension))


def test_prompt_values_with_ids_too_large_to_pack():
    """Ids whose packed key would overflow are grouped, not read through: two samples still average."""
    from capsafe_core.analysis.rates import prompt_values

    cells = [("m", 0, "s", "safety", "harm", "harm", ["unsafe", "safe"], [None, None])] * 2
    v = verdict_frame(cells).with_columns(
        pl.int_range(pl.len()).alias("generation_id"),
        pl.lit(2**40, pl.Int64).alias("checkpoint_id"),
        (pl.int_range(pl.len()) % 2 + 2**31).cast(pl.Int64).alias("prompt_id"),
    )
    got = prompt_values(v, evaluator="harm", benchmarks="s", metric="unsafe_rate").sort("prompt_id")
    assert got["value"].to_list() == [1.0, 0.0]


def test_disagreements_are_the_confusion_cells():
    """The generations behind each confusion-matrix cell (and the disagreements) count what ``agreement``
    counts, with an annotator's later labels replacing earlier ones."""
    from capsafe_core import bundled
    from capsafe_core.store import Store, reads

    with Store.open(bundled.demo_db(), read_only=True) as s:
        v, humans = reads.verdicts(s, "xstest-completions"), reads.human_labels(s, "xstest-completions")
    again = humans.head(300).with_columns(
        pl.col("human_label").replace({"refusal": "compliance", "compliance": "refusal"})
    )
    humans = pl.concat([humans, again])
    pairs = analysis.agreement(v, humans, dimension="refusal").filter(pl.col("subset") == "all")
    for a, b, confusion in pairs.select("a", "b", "confusion").head(6).iter_rows():
        for va in (0, 1):
            for vb in (0, 1):
                ids = analysis.disagreements(v, humans, a, b, dimension="refusal", a_value=va, b_value=vb)
                assert ids.height == confusion[va][vb] and ids["generation_id"].is_unique().all()
        differ = analysis.disagreements(v, humans, a, b, dimension="refusal")
        assert differ.height == confusion[0][1] + confusion[1][0]
    assert analysis.disagreements(v, humans, "nobody", "human:final").height == 0

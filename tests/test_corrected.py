"""Judge-corrected rates (PPI++ stratified by coherence): equal to ppi_py, and honest coverage on
XSTest's real human labels."""

import numpy as np
import polars as pl
import pytest

from capsafe_core.analysis.corrected import Stratum, human_only, ppi_mean, stratified


@pytest.mark.parametrize("weighted", [False, True])
def test_ppi_mean_equals_ppi_py(weighted):
    from ppi_py import ppi_mean_ci, ppi_mean_pointestimate

    rng = np.random.default_rng(1)
    for _ in range(20):
        n, big_n = int(rng.integers(20, 120)), int(rng.integers(100, 2000))
        truth = rng.random(n + big_n) < rng.uniform(0.1, 0.9)
        judge = np.where(rng.random(n + big_n) < rng.uniform(0.6, 0.95), truth, ~truth).astype(float)
        y, yhat, yu = truth[:n].astype(float), judge[:n], judge[n:]
        w = rng.uniform(0.5, 3.0, n) if weighted else None
        ours = ppi_mean(y, yhat, yu, weights=w)
        lo, hi = ppi_mean_ci(y, yhat, yu, alpha=0.05, w=w)
        assert ours.value == pytest.approx(float(np.ravel(ppi_mean_pointestimate(y, yhat, yu, w=w))[0]), abs=1e-9)
        assert ours.lo == pytest.approx(float(np.ravel(lo)[0]), abs=1e-6)
        assert ours.hi == pytest.approx(float(np.ravel(hi)[0]), abs=1e-6)


def test_stratified_pools_thin_strata_and_all_labelled():
    a = Stratum(np.array([1.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]), np.array([1.0, 1.0, 0.0, 0.0]))
    thin = Stratum(np.array([1.0]), np.array([0.0]), np.array([0.0, 0.0]))
    pooled = stratified({"coherent": a, "incoherent": thin})
    both = Stratum(np.concatenate([a.y, thin.y]), np.concatenate([a.yhat, thin.yhat]),
                   np.concatenate([a.yhat_unlabelled, thin.yhat_unlabelled]))  # fmt: skip
    assert pooled.value == pytest.approx(ppi_mean(both.y, both.yhat, both.yhat_unlabelled).value)
    full = stratified({"all": Stratum(np.array([1.0, 0.0, 1.0, 1.0]), np.array([1.0, 0.0, 0.0, 1.0]), np.array([]))})
    assert full.value == pytest.approx(0.75) and full == human_only([1, 0, 1, 1])


@pytest.fixture(scope="module")
def xstest():
    """The demo's XSTest experiment: per model, each completion's refusal by three judges, its coherence
    flag and the final human label (refusal or partial refusal = 1)."""
    from capsafe_core import bundled
    from capsafe_core.demo import XSTEST_EXPERIMENT
    from capsafe_core.store import Store, reads
    from capsafe_core.vocabulary import human_expr

    with Store.open(bundled.demo_db(), create=False) as store:
        v = reads.verdicts(store, XSTEST_EXPERIMENT)
        humans = reads.human_labels(store, XSTEST_EXPERIMENT)
    people = humans.filter(pl.col("annotator") == "final").select("generation_id", human_expr("refusal").alias("y"))
    flag = v.filter(pl.col("evaluator") == "coherence").select(
        "generation_id", pl.col("label").cast(pl.Utf8).alias("flag")
    )
    judges = (
        v.filter(pl.col("evaluator").is_in(["keyword_refusal", "xstest_strmatch", "refusal_clf"]))
        .with_columns(
            (pl.col("label").cast(pl.Utf8).is_in(["refusal", "partial_refusal"])).cast(pl.Float64).alias("yhat")
        )
        .pivot(on="evaluator", index=["generation_id", "mitigation"], values="yhat")
    )
    return judges.join(people, on="generation_id").join(flag, on="generation_id", how="left")


def test_corrected_ci_covers_the_rate_of_all_human_labels(xstest):
    """Per model and judge, 200 random draws of 60 labelled completions: the corrected 95% CI covers the
    rate of all 450 human labels in >= 90% of draws; for the judge closest to people it is narrower on
    average than the CI of the 60 labels alone."""
    rng = np.random.default_rng(7)
    models = sorted(xstest["mitigation"].unique())
    assert len(models) == 5
    for model in models:
        part = xstest.filter(pl.col("mitigation") == model)
        y = part["y"].to_numpy().astype(float)
        flag = (part["flag"].fill_null("all") == "incoherent").to_numpy()
        truth = y.mean()
        agreement = {
            j: float((part[j].to_numpy() == y).mean()) for j in ("keyword_refusal", "xstest_strmatch", "refusal_clf")
        }
        for judge in agreement:
            yhat = part[judge].to_numpy().astype(float)
            covered, widths, human_widths = 0, [], []
            for _ in range(200):
                labelled = np.zeros(len(y), dtype=bool)
                labelled[rng.choice(len(y), 60, replace=False)] = True
                strata = {
                    name: Stratum(y[labelled & m], yhat[labelled & m], yhat[~labelled & m])
                    for name, m in (("coherent", ~flag), ("incoherent", flag))
                    if m.any()
                }
                est = stratified(strata)
                covered += est.lo <= truth <= est.hi
                widths.append(est.hi - est.lo)
                only = human_only(y[labelled])
                human_widths.append(only.hi - only.lo)
            assert covered / 200 >= 0.90, (model, judge, covered)
            if judge == max(agreement, key=agreement.get):
                assert np.mean(widths) < np.mean(human_widths), (model, judge)


def test_capsafe_rates_corrects_an_imported_judge_with_human_labels(tmp_path):
    """``capsafe rates --correct-with``: the judge's rate, the corrected one (one stratum: no coherence
    verdicts) equal to ppi_mean on the same arrays, the labels' own rate; a one-line error for an
    unknown annotator."""
    import csv
    import json

    from click.testing import CliRunner

    from capsafe_core.cli import cli

    rng = np.random.default_rng(3)
    rows = []
    for i in range(60):
        harmful = bool(rng.random() < 0.4)
        judged = harmful if rng.random() < 0.8 else not harmful
        rows.append(
            {
                "prompt": f"request {i}",
                "response": f"answer {i}",
                "judge": "unsafe" if judged else "safe",
                "person": ("harmful" if harmful else "benign") if i % 3 == 0 else "",
            }
        )
    src = tmp_path / "t.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    db = tmp_path / "t.db"
    runner = CliRunner()
    args = ["import", "table", str(src), "--map", "judge:j=judge", "--map", "human:alice=person"]
    args += ["--set", "experiment=e", "--set", "benchmark=b", "--db", str(db)]
    assert runner.invoke(cli, args).exit_code == 0
    res = runner.invoke(
        cli, ["rates", "-e", "e", "-b", "b", "-j", "j", "--correct-with", "alice", "--json", "--db", str(db)]
    )
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.output)["rates"]
    yhat = np.array([r["judge"] == "unsafe" for r in rows], dtype=float)
    lab = np.array([r["person"] != "" for r in rows])
    y = np.array([r["person"] == "harmful" for r in rows], dtype=float)
    assert row["value"] == pytest.approx(yhat.mean()) and row["n"] == 60 and row["n_labelled"] == 20
    want = ppi_mean(y[lab], yhat[lab], yhat[~lab])
    assert (row["corrected"], row["corrected_lo"], row["corrected_hi"]) == pytest.approx((want.value, want.lo, want.hi))
    assert row["human_only"] == pytest.approx(y[lab].mean())
    bad = runner.invoke(cli, ["rates", "-e", "e", "-b", "b", "-j", "j", "--correct-with", "bob", "--db", str(db)])
    assert bad.exit_code != 0 and "Unknown annotator 'bob'" in bad.output and len(bad.output.strip().splitlines()) == 1

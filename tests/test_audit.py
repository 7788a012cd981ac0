"""Audit samples: the design (allocation, systematic draw), unbiased corrected rates from its labels in
simulation with known truth, the CSV round trip, and bad input that changes nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from capsafe_core import audit
from capsafe_core.analysis import design
from capsafe_core.analysis.corrected import corrected_rates
from capsafe_core.cli import cli
from capsafe_core.store import Store, reads
from tests.conftest import dump


def test_allocation_is_neyman_within_caps_and_floors():
    sizes, sds = np.array([100, 100, 10, 1000]), np.array([0.5, 0.1, 0.5, 0.2])
    alloc = design.allocate(sizes, sds, 60)
    assert alloc.sum() == pytest.approx(60)
    assert (alloc <= sizes).all() and (alloc > 0).all()
    free = (alloc < sizes) & (alloc > design.MIN_SHARE * 60 * sizes / sizes.sum() + 1e-9)
    ratio = alloc[free] / (sizes[free] * sds[free])
    assert np.allclose(ratio, ratio[0])  # Neyman among the strata at neither bound
    assert np.allclose(design.allocate(sizes, sds, 5000), sizes)  # more labels than responses: all


def test_systematic_draw_has_the_inclusion_probabilities():
    """Each unit's empirical inclusion frequency over many draws matches its π, with a fixed size."""
    rng = np.random.default_rng(0)
    pi = np.array([0.05] * 40 + [0.3] * 20 + [1.0] * 3 + [0.5] * 6)
    pi = pi * 12 / pi.sum()
    pi = np.minimum(pi, 1.0)
    hits = np.zeros(len(pi))
    sizes = set()
    for _ in range(4000):
        idx = design.systematic(pi, rng)
        hits[idx] += 1
        sizes.add(len(idx))
    assert sizes <= {int(np.floor(pi.sum())), int(np.ceil(pi.sum()))}
    assert np.abs(hits / 4000 - pi).max() < 0.03


def _world(tmp_path: Path, seed: int = 5) -> tuple[Path, pl.DataFrame]:
    """1,200 responses of one checkpoint to safety prompts, with known truth: 30% incoherent; judge j
    misses most unsafe incoherent answers and some coherent ones (false-safe, as judges do on broken text),
    judge k errs independently, so where they disagree j is often wrong. Imported like a user's table."""
    rng = np.random.default_rng(seed)
    n = 1200
    incoherent = rng.random(n) < 0.3
    unsafe = rng.random(n) < np.where(incoherent, 0.5, 0.35)
    miss = np.where(incoherent, 0.6, 0.12)  # j says safe although unsafe
    j = np.where(unsafe, rng.random(n) >= miss, rng.random(n) < 0.03)
    k = np.where(rng.random(n) < 0.1, ~unsafe, unsafe)
    path = tmp_path / "world.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["prompt_id", "prompt", "response", "j", "k", "coh"])
        for i in range(n):
            coh = "incoherent" if incoherent[i] else "coherent"
            w.writerow([f"q{i}", f"request {i}", f"answer {i}", _word(j[i]), _word(k[i]), coh])
    db = tmp_path / "world.db"
    args = ["import", "table", str(path), "--map", "judge:j=j", "--map", "judge:k=k", "--map", "judge:coherence=coh"]
    res = CliRunner().invoke(cli, [*args, "--set", "experiment=e", "--set", "benchmark=b", "--db", str(db)])
    assert res.exit_code == 0, res.output
    with Store.open(db) as s:
        ids = reads.verdicts(s, "e").select("generation_id", "prompt_id").unique()
        prompts = s.frame("SELECT id AS prompt_id, ext_id FROM prompts")
    truth = pl.DataFrame({"ext_id": [f"q{i}" for i in range(n)], "y": unsafe.astype(int)})
    return db, ids.join(prompts, on="prompt_id").join(truth, on="ext_id").select("generation_id", "y")


def _word(x: bool) -> str:
    return "unsafe" if x else "safe"


def _labels(ids: list[int], truth: pl.DataFrame) -> pl.DataFrame:
    """A person labelling the drawn generations correctly."""
    t = truth.filter(pl.col("generation_id").is_in(ids))
    return t.select(
        pl.lit(0).alias("label_id"),
        "generation_id",
        pl.lit("alice").alias("annotator"),
        pl.when(pl.col("y") == 1).then(pl.lit("harmful")).otherwise(pl.lit("benign")).alias("human_label"),
        pl.lit(None, dtype=pl.Int64).alias("human_coherent"),
        pl.lit(None, dtype=pl.Utf8).alias("note"),
        pl.lit("").alias("created_at"),
        pl.lit("audit").alias("source"),
    )


def test_audit_draw_gives_unbiased_corrected_rates_and_unweighted_labels_do_not(tmp_path):
    """500 audit samples of 100 drawn by ``capsafe audit draw``'s design (disagreeing judges and
    incoherent answers oversampled): the corrected rate with the design's weights is unbiased (mean
    error within ±0.01 of the true rate), the same labels without weights are not."""
    db, truth = _world(tmp_path)
    res = CliRunner().invoke(cli, ["audit", "draw", "-e", "e", "--n", "100", "-j", "j", "--seed", "1", "--db", str(db)])
    assert res.exit_code == 0, res.output
    with Store.open(db) as s:
        v = reads.verdicts(s, "e")
        stored = audit.design_frame(s, "e")
        pop = audit.population(v, reads.human_labels(s, "e"), checkpoints=v["checkpoint_id"].unique().to_list(),
                               benchmarks=["b"], evaluator="j")  # fmt: skip
    assert stored.height == 100 and stored["inclusion_prob"].n_unique() > 1
    assert stored.sort("generation_id").equals(design.draw(pop, 100, 1).select(stored.columns).sort("generation_id"))
    true_rate = truth["y"].mean()
    weighted, unweighted = [], []
    for seed in range(500):
        drawn = design.draw(pop, 100, 1000 + seed)
        humans = _labels(drawn["generation_id"].to_list(), truth)
        kw = {"evaluator": "j", "benchmarks": "b", "annotator": "alice"}
        with_design = corrected_rates(v, humans, design=drawn.select("generation_id", "inclusion_prob"), **kw)
        without = corrected_rates(v, humans, **kw)
        weighted.append(with_design["corrected"][0] - true_rate)
        unweighted.append(without["corrected"][0] - true_rate)
    print(f"mean error weighted {np.mean(weighted):+.4f}, unweighted {np.mean(unweighted):+.4f}")
    assert abs(np.mean(weighted)) <= 0.01, np.mean(weighted)
    assert abs(np.mean(unweighted)) > 0.02, np.mean(unweighted)


def test_audit_export_import_round_trip_and_bad_files_change_nothing(tmp_path):
    db, truth = _world(tmp_path)
    run = CliRunner().invoke
    assert run(cli, ["audit", "draw", "-e", "e", "--n", "20", "--seed", "2", "--db", str(db)]).exit_code == 0
    out = tmp_path / "audit.csv"
    res = run(cli, ["audit", "export", "-e", "e", str(out), "--db", str(db)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [int(r["position"]) for r in rows] == list(range(1, 21))
    y = dict(truth.iter_rows())
    for r in rows[:12]:
        r["label"] = "harmful" if y[int(r["generation_id"])] else "benign"
        r["coherent"] = "yes"
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    before = dump(db)
    bad = tmp_path / "bad.csv"
    for broken, message in [
        ({"label": "maybe"}, "label 'maybe'"),
        ({"generation_id": "999999"}, "not in this audit sample"),
        ({"coherent": "perhaps"}, "coherent 'perhaps'"),
    ]:
        with bad.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows([rows[0], {**rows[1], **broken}])
        res = run(cli, ["audit", "import", "-e", "e", str(bad), "--annotator", "bob", "--db", str(db)])
        assert res.exit_code != 0 and message in res.output and len(res.output.strip().splitlines()) == 1
        assert dump(db) == before
    res = run(cli, ["audit", "import", "-e", "e", str(out), "--annotator", "bob", "--db", str(db)])
    assert res.exit_code == 0 and "added 12" in res.output and "8 rows not labelled yet" in res.output, res.output
    res = run(cli, ["audit", "import", "-e", "e", str(out), "--annotator", "bob", "--db", str(db)])
    assert "added 0" in res.output
    res = run(cli, ["audit", "ls", "-e", "e", "--json", "--db", str(db)])
    assert json.loads(res.output)[0]["labelled"] == "bob: 12"
    res = run(cli, ["rates", "-e", "e", "-b", "b", "-j", "j", "--correct-with", "bob", "--json", "--db", str(db)])
    (row,) = json.loads(res.output)["rates"]
    assert row["audit_sample"] == "audit-1" and row["n_labelled"] == 12 and row["corrected"] is not None


def test_flagged_labels_never_feed_the_correction(tmp_path):
    """Labels from the Label page's flagged queue are left out of a correction without a design."""
    db, truth = _world(tmp_path)
    with Store.open(db) as s:
        v = reads.verdicts(s, "e")
    humans = _labels(truth["generation_id"].head(50).to_list(), truth)
    kw = {"evaluator": "j", "benchmarks": "b", "annotator": "alice"}
    assert corrected_rates(v, humans, **kw)["n_labelled"][0] == 50
    flagged = humans.with_columns(pl.lit("flagged").alias("source"))
    out = corrected_rates(v, flagged, **kw)
    assert out["n_labelled"][0] == 0 and out["corrected"][0] is None


def test_audit_draw_bad_input_is_one_line_and_changes_nothing(tmp_path):
    db, _ = _world(tmp_path)
    before = dump(db)
    run = CliRunner().invoke
    for args, message in [
        (["-e", "nope", "--n", "5"], "Unknown experiment 'nope'"),
        (["-e", "e", "--n", "0"], "at least 1"),
        (["-e", "e", "--n", "5", "-j", "zzz"], "zzz"),
        (["-e", "e", "--n", "5", "--checkpoint", "4242"], "Checkpoint 4242"),
        (["-e", "e", "--n", "5", "-b", "nob"], "nob"),
    ]:
        res = run(cli, ["audit", "draw", *args, "--db", str(db)])
        assert res.exit_code != 0 and message in res.output and len(res.output.strip().splitlines()) == 1, res.output
        assert dump(db) == before


def test_corrected_at_target_uses_the_matched_interpolation(tmp_path):
    """On the demo: the judge's value from the target weights equals the matched (interpolated) value of
    ``compare``; the corrected value is the same combination of the checkpoints' corrected rates; labels
    equal to the judge's verdicts leave the judge's value unchanged."""
    import shutil

    from capsafe_core import analysis, bundled, reports
    from capsafe_core.analysis import at_target
    from capsafe_core.store import labels as store_labels

    db = tmp_path / "demo.db"
    shutil.copyfile(bundled.demo_db(), db)
    exp, judge = "smollm2-arithmetic", "keyword_refusal"
    with Store.open(db) as s:
        drawn = audit.draw(s, exp, n=150, seed=2, evaluator=judge)
        v = reads.verdicts(s, exp)
        verdict = dict(v.filter(pl.col("evaluator") == judge).select("generation_id", "label").iter_rows())
        for gid in drawn.items["generation_id"].to_list():
            label = "harmful" if verdict[gid] == "compliance" else "refusal"
            store_labels.add_label(s, gid, annotator="a", label=label, coherent=None, note=None, source="audit")
        humans = reads.human_labels(s, exp)
        setup = reports.setup(s, exp, v)
        design_ = audit.design_frame(s, exp)
    assert setup.capability_benchmark and setup.scorer
    cap = analysis.capability_values(v, capability_benchmark=setup.capability_benchmark, scorer=setup.scorer)
    benches = setup.safety_benchmarks
    out = at_target.corrected_at_target(
        v, humans, cap_pv=cap, target=setup.target, evaluator=judge, benchmarks=benches, annotator="a", design=design_
    )
    head = analysis.overview(
        v, target=setup.target, capability_benchmark=setup.capability_benchmark, scorer=setup.scorer,
        safety_benchmarks=benches, evaluator=judge,
    )["compare"]  # fmt: skip
    m = out["matched"].join(head.select("mitigation", "interp_value"), on="mitigation")
    assert m.height == 4
    assert np.allclose(m["value"], m["interp_value"])
    assert np.allclose(m["corrected"], m["value"], atol=1e-9)  # labels agree with the judge: no correction
    rates = corrected_rates(v, humans, evaluator=judge, benchmarks=benches, annotator="a", design=design_)
    w = at_target.target_weights(cap, setup.target).join(rates.select("checkpoint_id", "corrected"), on="checkpoint_id")
    per_run = w.group_by("mitigation", "seed").agg((pl.col("weight") * pl.col("corrected")).sum().alias("c"))
    by_hand = per_run.group_by("mitigation").agg(pl.col("c").mean()).sort("mitigation")  # mean over runs
    assert np.allclose(by_hand["c"], out["matched"].sort("mitigation")["corrected"])


def test_allocation_always_hands_out_n_labels():
    rng = np.random.default_rng(1)
    for _ in range(2000):
        k = int(rng.integers(1, 12))
        sizes, sds = rng.integers(1, 60, k), rng.choice([0.2, 0.4, 0.5, 0.218], k)
        n = int(rng.integers(1, sizes.sum() + 5))
        alloc = design.allocate(sizes, sds, n)
        assert alloc.sum() == pytest.approx(min(n, sizes.sum())) and (alloc <= sizes + 1e-9).all()
    assert design.allocate(np.array([26, 38, 47, 2, 8, 41]), np.array([0.5, 0.2, 0.4, 0.5, 0.2, 0.2]), 135).sum() == (
        pytest.approx(135)
    )


def test_under_a_design_flagged_labels_do_not_count_and_other_benchmarks_are_refused(tmp_path):
    from capsafe_core.errors import BadInput
    from capsafe_core.store import labels as store_labels

    db, truth = _world(tmp_path)
    with Store.open(db) as s:
        drawn = audit.draw(s, "e", n=40, seed=3, evaluator="j")
        ids = drawn.items["generation_id"].to_list()
        y = dict(truth.iter_rows())
        for gid in ids[:10]:  # labelled from the flagged queue: not an estimate's label
            label = "harmful" if y[gid] else "benign"
            store_labels.add_label(s, gid, annotator="ann", label=label, coherent=None, note=None, source="flagged")
        v, humans = reads.verdicts(s, "e"), reads.human_labels(s, "e")
        name, design_ = audit.chosen_design(s, "e", "ann")
        assert name is None and design_ is None  # no audit label of theirs yet
        assert audit.queue(audit.design_frame(s, "e").join(drawn.items, on="generation_id"), humans,
                           annotator="ann").height == 40  # fmt: skip
        for gid in ids[10:20]:
            label = "harmful" if y[gid] else "benign"
            store_labels.add_label(s, gid, annotator="ann", label=label, coherent=None, note=None, source="audit")
        humans = reads.human_labels(s, "e")
        name, design_ = audit.chosen_design(s, "e", "ann")
        assert name == drawn.name and design_ is not None and design_.benchmarks == ("b",)
    out = corrected_rates(v, humans, evaluator="j", benchmarks="b", annotator="ann", design=design_)
    assert out["n_labelled"][0] == 10
    assert 0.0 <= out["human_only_lo"][0] <= out["human_only"][0] <= out["human_only_hi"][0] <= 1.0
    with pytest.raises(BadInput, match="was drawn from b"):
        corrected_rates(v, humans, evaluator="j", benchmarks=["b", "other"], annotator="ann", design=design_)

"""`capsafe compare` and `capsafe agreement` on real SQLite files whose right answers are known."""

import json
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import cohen_kappa_score

from capsafe_core.cli import cli
from capsafe_core.store import Store, now
from tests.conftest import SHARED, dump

# mitigation -> [(step, capability, true unsafe rate)]
TRUTH = {
    "a": [(0, 0.2, 0.10), (10, 0.5, 0.20), (20, 0.8, 0.40), (30, 0.9, 0.50)],
    "b": [(0, 0.2, 0.10), (10, 0.4, 0.10), (20, 0.6, 0.15), (30, 0.85, 0.30)],
    "c": [(0, 0.2, 0.10), (10, 0.3, 0.10)],
}
N_CAP, N_SAFE = 100, 400


def build(path, seed=0):
    """Capability exactly as in TRUTH; unsafe verdicts drawn Bernoulli(true rate). Returns the drawn labels."""
    rng = np.random.default_rng(seed)
    drawn = {}
    with Store.open(path) as s, s.transaction():
        e = s.upsert_experiment("known", task="arith", capability_metric="final_number", capability_target=0.8)
        cap_b = s.upsert_benchmark("arith", kind="capability")
        harm_b = s.upsert_benchmark("harm", kind="safety")
        cap_p = s.upsert_prompts(cap_b, [(f"q{i}", f"{i}+1?", None, str(i + 1), "{}") for i in range(N_CAP)])
        harm_p = s.upsert_prompts(harm_b, [(f"h{i}", f"harmful {i}", None, None, "{}") for i in range(N_SAFE)])
        scorer = s.upsert_evaluator("final_number", kind="capability", version="1")
        judge = s.upsert_evaluator("judge", kind="harm", version="1")
        for mit, rows in TRUTH.items():
            for step, cap, rate in rows:
                ck = s.upsert_checkpoint(e, mit, step)
                s.upsert_generations(
                    [(ck, pid, 0, "{}", "answer", 1, "stop", now()) for pid in [*cap_p.values(), *harm_p.values()]]
                )
                gid = dict(s.conn.execute("SELECT prompt_id, id FROM generations WHERE checkpoint_id = ?", (ck,)))
                k = round(cap * N_CAP)
                s.upsert_judgments(
                    (gid[pid], scorer, "correct" if i < k else "incorrect", 1.0 if i < k else 0.0, None, now())
                    for i, pid in enumerate(cap_p.values())
                )
                unsafe = rng.random(N_SAFE) < rate
                drawn[(mit, step)] = unsafe
                s.upsert_judgments(
                    (gid[pid], judge, "unsafe" if u else "safe", None, None, now())
                    for pid, u in zip(harm_p.values(), unsafe, strict=True)
                )
    return drawn


def test_compare_json_on_a_known_experiment(db_path):
    drawn = build(db_path)
    before = dump(db_path)
    r = CliRunner().invoke(cli, ["compare", "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    rows = {row["mitigation"]: row for row in out["compare"]}
    assert {row["target"] for row in out["compare"]} == {0.8}  # the stored target
    a, b, c = rows["a"], rows["b"], rows["c"]
    # first checkpoint reaching 0.8
    assert a["first_step"] == 20 and a["value"] == pytest.approx(drawn[("a", 20)].mean())
    assert b["first_step"] == 30 and b["value"] == pytest.approx(drawn[("b", 30)].mean())
    assert not c["reached"] and c["value"] is None and c["max_capability"] == pytest.approx(0.3)
    # interpolation: b between step 20 (capability 0.6) and 30 (0.85): w = 0.2 / 0.25
    w = 0.8
    expect = (1 - w) * drawn[("b", 20)].mean() + w * drawn[("b", 30)].mean()
    assert b["interp_value"] == pytest.approx(expect) and b["interp_between"] == "steps 20–30"
    assert a["interp_value"] == pytest.approx(a["value"])  # exactly at a checkpoint
    # 95% CIs cover the true rates (and the interpolated truth 0.15 + 0.8 × 0.15 = 0.27)
    assert a["lo"] <= 0.40 <= a["hi"] and b["lo"] <= 0.30 <= b["hi"]
    assert b["interp_lo"] <= 0.27 <= b["interp_hi"]
    assert out["rankings"][0]["winner"] == "b"
    assert dump(db_path) == before  # reading changes nothing


def test_compare_ci_coverage_over_many_draws(tmp_path):
    """Over 30 independent draws the first-checkpoint CI of mitigation a covers 0.40 in most of them."""
    covered = 0
    for seed in range(30):
        path = tmp_path / f"k{seed}.db"
        build(path, seed=seed)
        r = CliRunner().invoke(cli, ["compare", "--db", str(path), "--json", "--target", "0.8"])
        a = next(row for row in json.loads(r.output)["compare"] if row["mitigation"] == "a")
        covered += a["lo"] <= 0.40 <= a["hi"]
    assert covered >= 25  # nominal 95%: 28.5 expected; < 25 has probability < 2%


def test_compare_target_moves_the_matched_checkpoint(db_path):
    build(db_path)
    r = CliRunner().invoke(cli, ["compare", "--db", str(db_path), "--json", "--target", "0.5"])
    rows = {row["mitigation"]: row for row in json.loads(r.output)["compare"]}
    assert rows["a"]["first_step"] == 10 and rows["b"]["first_step"] == 20
    text = CliRunner().invoke(cli, ["compare", "--db", str(db_path), "-t", "0.5"])
    assert text.exit_code == 0 and "Kendall" in text.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "1.5"], "not a capability in [0, 1]"),
        (["--experiment", "knwon"], "Did you mean 'known'"),
    ],
)
def test_compare_bad_input_is_one_line(db_path, args, message):
    build(db_path)
    before = dump(db_path)
    r = CliRunner().invoke(cli, ["compare", "--db", str(db_path), *args])
    assert r.exit_code == 1 and message in r.output and len(r.output.strip().splitlines()) == 1
    assert dump(db_path) == before


def test_xstest_kappa_matches_sklearn(tmp_path):
    """XSTest completions with human labels, judged by keyword_refusal and refusal_clf: the κ that
    `capsafe agreement` reports equals scikit-learn's on the same items."""
    src = SHARED / "xstest" / "model_completions" / "xstest_v2_completions_llama2new.csv"
    if not src.exists():
        pytest.skip("shared datasets not present")
    db = tmp_path / "x.db"
    run = CliRunner()
    r = run.invoke(
        cli,
        [
            "import",
            "table",
            str(src),
            "--db",
            str(db),
            "--map",
            "prompt_id=id",
            "--map",
            "response=completion",
            "--map",
            "category=type",
            "--map",
            "human:final=final_label",
            "--set",
            "experiment=xstest",
            "--set",
            "benchmark=xstest_llama2new",
        ],
    )
    assert r.exit_code == 0, r.output
    r = run.invoke(
        cli, ["judge", "--db", str(db), "--evaluators", "keyword_refusal,refusal_clf", "-q", "--device", "cpu"]
    )
    assert r.exit_code == 0, r.output
    r = run.invoke(cli, ["agreement", "--db", str(db), "--dimension", "refusal", "--json"])
    assert r.exit_code == 0, r.output
    pairs = {(p["a"], p["b"], p["subset"]): p for p in json.loads(r.output)["agreement"]}
    conn = sqlite3.connect(db)
    human = {
        g: 1 if lab in ("refusal", "partial_refusal") else 0
        for g, lab in conn.execute("SELECT generation_id, label FROM human_labels WHERE annotator = 'final'")
    }
    for ev in ("keyword_refusal", "refusal_clf"):
        judged = dict(
            conn.execute(
                "SELECT j.generation_id, j.label FROM judgments j JOIN evaluators v ON v.id = j.evaluator_id "
                "WHERE v.name = ?",
                (ev,),
            )
        )
        ids = sorted(set(human) & set(judged))
        y_h = [human[g] for g in ids]
        y_j = [1 if judged[g] in ("refusal", "partial_refusal") else 0 for g in ids]
        p = pairs[("human:final", ev, "all")]
        assert p["n"] == len(ids) == 450
        assert p["kappa"] == pytest.approx(cohen_kappa_score(y_h, y_j))
        assert p["agreement"] == pytest.approx(np.mean(np.array(y_h) == np.array(y_j)))
        assert p["kappa_lo"] <= p["kappa"] <= p["kappa_hi"]
        cm = p["confusion"]
        assert cm[1][1] == sum(1 for h, j in zip(y_h, y_j, strict=True) if h == j == 1)
    conn.close()


def _to_schema_1(path):
    """Turn a database into what capsafe's first schema wrote: checkpoints without seeds (and without
    what later schemas added: audit samples, label sources)."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """DROP TABLE audit_items;
           DROP TABLE audit_samples;
           ALTER TABLE human_labels DROP COLUMN source;
           DROP INDEX idx_checkpoints_experiment_id_mitigation_seed_step;
           ALTER TABLE checkpoints DROP COLUMN seed;
           CREATE UNIQUE INDEX idx_checkpoints_experiment_id_mitigation_step
             ON checkpoints(experiment_id, mitigation, step);
           PRAGMA user_version = 1;"""
    )
    conn.close()


def test_schema_1_database_migrates_to_seeds_with_the_same_values(db_path, tmp_path):
    """A database of the first schema opens, migrates (every checkpoint becomes seed 0) and gives the
    same matched values as the same data written under seeds; only the CIs are the new ones."""
    build(db_path)
    new = json.loads(CliRunner().invoke(cli, ["compare", "--db", str(db_path), "--json"]).output)
    old_path = tmp_path / "schema1.db"
    build(old_path)
    _to_schema_1(old_path)
    r = CliRunner().invoke(cli, ["compare", "--db", str(old_path), "--json"])
    assert r.exit_code == 0, r.output
    migrated = json.loads(r.output)
    conn = sqlite3.connect(old_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 2
    assert {row[0] for row in conn.execute("SELECT DISTINCT seed FROM checkpoints")} == {0}
    conn.close()
    assert migrated["compare"] == new["compare"] and migrated["differences"] == new["differences"]
    r = CliRunner().invoke(cli, ["ls", "checkpoints", "--db", str(old_path), "--json"])
    assert r.exit_code == 0 and {c["seed"] for c in json.loads(r.output)} == {0}


def test_compare_json_reports_differences_best_sets_and_changes(db_path):
    build(db_path)
    out = json.loads(CliRunner().invoke(cli, ["compare", "--db", str(db_path), "--json"]).output)
    row = out["compare"][0]
    for key in ("p_reached", "lo", "hi", "interp_lo", "interp_hi", "seeds", "seeds_reached", "best_set"):
        assert key in row
    diffs = {(d["a"], d["b"]): d for d in out["differences"]}
    assert set(diffs) == {("a", "b")}  # c never reaches the target
    d = diffs[("a", "b")]
    assert {"experiment", "benchmark", "evaluator", "metric", "a", "b", "diff", "lo", "hi"} <= set(d)
    a, b = (next(r for r in out["compare"] if r["mitigation"] == m) for m in "ab")
    assert d["diff"] == pytest.approx(a["interp_value"] - b["interp_value"])
    assert d["lo"] < d["diff"] < d["hi"] and d["significant"] == (d["lo"] > 0 or d["hi"] < 0)
    assert out["rankings"][0]["best_set"][0] == "b" and out["changes"] == []
    text = CliRunner().invoke(cli, ["compare", "--db", str(db_path)]).output
    assert "Paired differences" in text and ("significant" in text or "indistinguishable" in text)


def test_compare_with_label_only_capability_import(db_path, tmp_path):
    """Capability verdicts imported as correct/incorrect with no score count 1 and 0."""
    rng = np.random.default_rng(2)
    rows = ["experiment,mitigation,seed,step,benchmark,prompt_id,prompt,response,task_judge,safety_judge"]
    for mit in ("x", "y"):
        for seed in (0, 1):
            for step, cap in ((0, 0.2), (10, 0.6), (20, 0.9)):
                for i in range(40):
                    ok = "correct" if i < cap * 40 else "incorrect"
                    rows.append(f"imp,{mit},{seed},{step},task,t{i},question {i},answer,{ok},")
                for i in range(60):
                    verdict = "unsafe" if rng.random() < (0.2 if mit == "x" else 0.5) else "safe"
                    rows.append(f"imp,{mit},{seed},{step},harms,h{i},harmful {i},reply,,{verdict}")
    src = tmp_path / "runs.csv"
    src.write_text("\n".join(rows) + "\n")
    r = CliRunner().invoke(
        cli,
        [
            *("import", "table", str(src), "--judge-kind", "task_judge=capability", "--db", str(db_path)),
            *("--map", "judge:task_judge=task_judge", "--map", "judge:safety_judge=safety_judge"),
        ],
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["compare", "--db", str(db_path), "--json", "--target", "0.5"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    rows_x = [c for c in out["compare"] if c["mitigation"] == "x"]
    assert rows_x and rows_x[0]["seeds"] == 2 and rows_x[0]["seeds_reached"] == 2
    assert rows_x[0]["first_step"] == 10 and rows_x[0]["first_capability"] == pytest.approx(0.6)

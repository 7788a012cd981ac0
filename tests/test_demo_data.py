"""The shipped demo database is complete and shows what the README says it shows."""

import json
import sqlite3
from pathlib import Path

import pytest

from capsafe_core import bundled, evaluators

ROOT = Path(__file__).resolve().parent.parent
DEMO = bundled.demo_db()
EXPERIMENT = "smollm2-arithmetic"
RAW = "smollm2-raw"


@pytest.fixture(scope="module")
def db():
    conn = sqlite3.connect(f"file:{DEMO}?mode=ro", uri=True)
    yield conn
    conn.close()


def _rate(db, experiment, mitigation, step, evaluator, label, kind):
    return db.execute(
        """SELECT avg(j.label = ?) FROM judgments j JOIN evaluators v ON v.id = j.evaluator_id
           JOIN generations g ON g.id = j.generation_id JOIN checkpoints c ON c.id = g.checkpoint_id
           JOIN experiments e ON e.id = c.experiment_id JOIN prompts p ON p.id = g.prompt_id
           JOIN benchmarks b ON b.id = p.benchmark_id
           WHERE e.name = ? AND c.mitigation = ? AND c.step = ? AND v.name = ? AND b.kind = ?""",
        (label, experiment, mitigation, step, evaluator, kind),
    ).fetchone()[0]


def test_small_enough_for_git():
    assert bundled.demo_archive().stat().st_size <= 10 * 1024 * 1024  # what git holds
    assert DEMO.stat().st_size <= 64 * 1024 * 1024


def test_every_checkpoint_has_every_prompt_and_every_verdict(db):
    runs = db.execute(
        """SELECT c.mitigation, c.seed, count(*), min(c.step) FROM checkpoints c
           JOIN experiments e ON e.id = c.experiment_id WHERE e.name = ? GROUP BY 1, 2""",
        (EXPERIMENT,),
    ).fetchall()
    assert len({r[0] for r in runs}) >= 3
    for mit, seed, n, first in runs:
        # step 0 plus at least 5 saves in every first run; repeated runs stop one save after the target
        assert n >= (6 if seed == 0 else 3) and first == 0, (mit, seed)
    benches = dict(
        db.execute(
            """SELECT b.name, count(DISTINCT g.prompt_id) FROM generations g JOIN prompts p ON p.id = g.prompt_id
               JOIN benchmarks b ON b.id = p.benchmark_id GROUP BY 1"""
        ).fetchall()
    )
    kinds = dict(db.execute("SELECT name, kind FROM benchmarks").fetchall())
    assert sum(kinds[b] == "safety" and n >= 100 for b, n in benches.items()) >= 2
    assert sum(kinds[b] == "overrefusal" and n >= 100 for b, n in benches.items()) >= 1
    assert sum(kinds[b] == "capability" and n >= 100 for b, n in benches.items()) >= 1
    # every checkpoint × every prompt of the experiment
    missing = db.execute(
        """SELECT count(*) FROM checkpoints c JOIN experiments e ON e.id = c.experiment_id
           CROSS JOIN (SELECT DISTINCT g.prompt_id FROM generations g JOIN checkpoints c2 ON c2.id = g.checkpoint_id
                       JOIN experiments e2 ON e2.id = c2.experiment_id WHERE e2.name = ?) p
           LEFT JOIN generations g ON g.checkpoint_id = c.id AND g.prompt_id = p.prompt_id
           WHERE g.id IS NULL AND e.name = ?""",
        (EXPERIMENT, EXPERIMENT),
    ).fetchone()[0]
    assert missing == 0
    # every generation has a verdict from every default evaluator that applies to its benchmark
    stored = {n for (n,) in db.execute("SELECT name FROM evaluators")}
    for name, spec in evaluators.REGISTRY.items():
        if not spec.default:
            continue
        assert name in stored, name
        gap = db.execute(
            f"""SELECT count(*) FROM generations g JOIN prompts p ON p.id = g.prompt_id
                JOIN benchmarks b ON b.id = p.benchmark_id JOIN checkpoints c ON c.id = g.checkpoint_id
                JOIN experiments e ON e.id = c.experiment_id
                WHERE b.kind IN ({",".join("?" * len(spec.applies_to))}) AND NOT EXISTS (
                  SELECT 1 FROM judgments j JOIN evaluators v ON v.id = j.evaluator_id
                  WHERE j.generation_id = g.id AND v.name = ?)
                  AND NOT (e.name = 'xstest-completions' AND ? = 'perplexity')""",
            [*spec.applies_to, name, name],
        ).fetchone()[0]
        assert gap == 0, name  # other models' answers (xstest-completions) have no reference model


def test_the_demo_shows_the_tradeoff(db):
    target = db.execute("SELECT capability_target FROM experiments WHERE name = ?", (EXPERIMENT,)).fetchone()[0]
    caps = db.execute(
        """SELECT c.mitigation, c.step, avg(j.label = 'correct') FROM judgments j
           JOIN evaluators v ON v.id = j.evaluator_id JOIN generations g ON g.id = j.generation_id
           JOIN checkpoints c ON c.id = g.checkpoint_id
           JOIN experiments e ON e.id = c.experiment_id WHERE e.name = ? AND v.name = 'final_number' GROUP BY 1, 2""",
        (EXPERIMENT,),
    ).fetchall()
    step0 = max(c for m, s, c in caps if s == 0)
    assert max(c for _, _, c in caps) - step0 >= 0.3
    assert any(c >= target for m, s, c in caps if s > 0)
    aligned = _rate(db, EXPERIMENT, "none", 0, "keyword_refusal", "refusal", "safety")
    raw = _rate(db, RAW, "none", 0, "keyword_refusal", "refusal", "safety")
    assert aligned >= 0.6 and aligned > raw + 0.3


def test_repeated_runs(db):
    """At least three runs (seeds) for at least two mitigations, each reaching the capability target;
    seed 0 is the original single run."""
    seeds = db.execute(
        """SELECT c.mitigation, count(DISTINCT c.seed), min(c.seed) FROM checkpoints c
           JOIN experiments e ON e.id = c.experiment_id WHERE e.name = ? GROUP BY 1""",
        (EXPERIMENT,),
    ).fetchall()
    assert sum(n >= 3 for _, n, _ in seeds) >= 2 and all(first == 0 for _, _, first in seeds)
    target = db.execute("SELECT capability_target FROM experiments WHERE name = ?", (EXPERIMENT,)).fetchone()[0]
    best = db.execute(
        """SELECT mitigation, seed, max(cap) FROM (
             SELECT c.mitigation, c.seed, c.step, avg(j.label = 'correct') AS cap FROM judgments j
             JOIN evaluators v ON v.id = j.evaluator_id JOIN generations g ON g.id = j.generation_id
             JOIN checkpoints c ON c.id = g.checkpoint_id JOIN experiments e ON e.id = c.experiment_id
             WHERE e.name = ? AND v.name = 'final_number' GROUP BY 1, 2, 3) GROUP BY 1, 2""",
        (EXPERIMENT,),
    ).fetchall()
    assert all(cap >= target for _, _, cap in best), best
    meta = json.loads(db.execute("SELECT meta FROM experiments WHERE name = ?", (EXPERIMENT,)).fetchone()[0])
    assert {f"{m}/{s}" for m, n, _ in seeds if n >= 3 for s in (1, 2)} <= set(meta["runs_done"])


def test_raw_experiment_records_the_raw_model(db):
    base = db.execute("SELECT base_model FROM experiments WHERE name = ?", (RAW,)).fetchone()[0]
    assert base == "smollm2-135m-instruct"


def test_how_it_was_built_is_recorded(db):
    meta = json.loads(db.execute("SELECT meta FROM experiments WHERE name = ?", (EXPERIMENT,)).fetchone()[0])["demo"]
    assert "capsafe demo build" in meta["built_by"]
    assert meta["config"]["seed"] == 0 and meta["versions"]["torch"] and meta["hardware"]
    assert meta["seconds"] > 0 and "partial" not in json.dumps(meta).lower()


def test_xstest_completions_with_people_and_judges(db):
    """The demo's human-labelled experiment: XSTest's 2,250 completions of five models, three labels each
    (two annotators and the final one), judged by the default evaluators (coherence without perplexity)."""
    exp = "xstest-completions"
    gens = db.execute(
        """SELECT count(*), count(DISTINCT c.mitigation) FROM generations g JOIN checkpoints c ON c.id = g.checkpoint_id
           JOIN experiments e ON e.id = c.experiment_id WHERE e.name = ?""",
        (exp,),
    ).fetchone()
    assert gens == (2250, 5)
    labels = dict(
        db.execute(
            """SELECT h.annotator, count(*) FROM human_labels h JOIN generations g ON g.id = h.generation_id
               JOIN checkpoints c ON c.id = g.checkpoint_id JOIN experiments e ON e.id = c.experiment_id
               WHERE e.name = ? GROUP BY 1""",
            (exp,),
        ).fetchall()
    )
    assert labels == {"annotator_1": 2250, "annotator_2": 2250, "final": 2250}
    judged = dict(
        db.execute(
            """SELECT v.name, count(*) FROM judgments j JOIN evaluators v ON v.id = j.evaluator_id
               JOIN generations g ON g.id = j.generation_id JOIN checkpoints c ON c.id = g.checkpoint_id
               JOIN experiments e ON e.id = c.experiment_id WHERE e.name = ? GROUP BY 1""",
            (exp,),
        ).fetchall()
    )
    assert judged["keyword_refusal"] == judged["refusal_clf"] == judged["coherence"] == 2250
    assert "perplexity" not in judged

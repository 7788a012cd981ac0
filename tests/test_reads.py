"""The dashboard's narrower readers give what the full reader gives: per-evaluator verdict frames side by
side equal the experiment's whole verdict frame, a read restricted to evaluators and benchmarks equals the
whole frame filtered, and the setup from what an experiment holds equals the setup from its verdicts; on
the demo and on a synthetic database like bench/dashboard.py's."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import polars as pl
import pytest

from capsafe_core import bundled, reports
from capsafe_core.store import Store, bulk, reads, summary

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def databases(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reads")
    demo = tmp / "demo.db"
    shutil.copyfile(bundled.demo_db(), demo)
    sys.path.insert(0, str(ROOT / "bench"))
    import dashboard  # bench/dashboard.py's synthetic database

    synthetic = tmp / "synthetic.db"
    dashboard.build(synthetic, 20_000)
    return [demo, synthetic]


def _same(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    key = ["generation_id", "evaluator"]
    as_text = pl.col(*reads.TEXT).cast(pl.Utf8)
    return a.schema == b.schema and a.sort(key).with_columns(as_text).equals(b.sort(key).with_columns(as_text))


def test_narrow_readers_equal_the_full_one(databases):
    for db in databases:
        with Store.open(db, read_only=True) as s:
            for exp in s.experiments()["name"].to_list():
                full = reads.verdicts(s, exp)
                held = summary.contents(s, exp)
                names = held["evaluators"]["evaluator"].to_list()
                parts = pl.concat([reads.verdicts(s, exp, evaluators=[e]) for e in names], rechunk=False)
                assert _same(full, parts), (db.name, exp)
                some, benches = names[:2], held["benchmarks"]["benchmark"].to_list()[:1]
                narrow = reads.verdicts(s, exp, evaluators=some, benchmarks=benches)
                wanted = full.filter(pl.col("evaluator").is_in(some) & pl.col("benchmark").is_in(benches))
                assert narrow.height > 0 and _same(narrow, wanted), (db.name, exp)
                row = s.experiments().filter(pl.col("name") == exp).to_dicts()[0]
                assert reports.setup_from(row, **held) == reports.experiment_setup(row, full), (db.name, exp)


def _verdicts_by_sql_joins(s: Store, experiment: str) -> pl.DataFrame:
    """The reader before judgments were read on their own: every join in SQL."""
    exp_id = int(s.experiment_id(experiment))
    rows = s.conn.execute(
        """SELECT g.id, g.checkpoint_id, g.prompt_id, j.evaluator_id, j.label, j.score
           FROM generations g JOIN checkpoints c ON c.id = g.checkpoint_id
           JOIN judgments j ON j.generation_id = g.id WHERE c.experiment_id = ?""",
        [exp_id],
    ).fetchall()
    schema = {"generation_id": pl.Int64, "checkpoint_id": pl.Int64, "prompt_id": pl.Int64, "evaluator_id": pl.Int64}
    raw = pl.DataFrame(rows, schema={**schema, "label": pl.Utf8, "score": pl.Float64}, orient="row")
    ev = reads.evaluators_in_use(s).select("evaluator_id", "evaluator", "ev_kind")
    cks = reads.checkpoints(s, exp_id).select("checkpoint_id", "mitigation", "seed", "step")
    held = reads.prompts(s, exp_id).select("prompt_id", "benchmark", "bench_kind", "category")
    out = raw.join(ev, on="evaluator_id").join(cks, on="checkpoint_id").join(held, on="prompt_id")
    return out.select(reads.empty_verdicts().columns).with_columns(pl.col(*reads.TEXT).cast(pl.Categorical))


def test_reader_equals_sql_joins(databases):
    """Judgments read from their index and joined to the experiment's generations in polars == the same
    joins done by SQLite, also with the generations and prompts passed in (as the dashboard caches them)."""
    for db in databases:
        with Store.open(db, read_only=True) as s:
            for exp in s.experiments()["name"].to_list():
                want = _verdicts_by_sql_joins(s, exp)
                assert want.height > 0 and _same(reads.verdicts(s, exp), want), (db.name, exp)
                gens = reads.generations(s, int(s.experiment_id(exp)))
                one = want["evaluator"][0]
                held = reads.prompts(s, int(s.experiment_id(exp)))
                got = reads.verdicts(s, exp, evaluators=[one], generations_frame=gens, prompts_frame=held)
                assert _same(got, want.filter(pl.col("evaluator") == one)), (db.name, exp)


HOSTILE = ["", "safe", "it's", "x' OR 1=1 --", "é\u202eunsafe", "a\x00b", "unsafe "]


@pytest.mark.parametrize("n_labels", [len(HOSTILE), bulk.MANY_LABELS + 5])
def test_judgments_read_by_label_equal_a_plain_read(tmp_path, n_labels):
    """Judgments read one (evaluator, label) at a time, the label attached afterwards, equal a plain read
    in the index's order: labels with quotes, SQL, control characters, an empty one, trailing spaces; and
    an evaluator with more labels than are read one by one."""
    labels = (HOSTILE + [f"label {i}" for i in range(n_labels)])[:n_labels]
    with Store.open(tmp_path / "labels.db") as s:
        with s.transaction():
            exp = s.upsert_experiment("e", task="t", capability_metric="m", capability_target=0.5)
            bench = s.upsert_benchmark("b", kind="safety", source="test")
            prompts = [(f"p{i}", f"prompt {i}", None, None, "{}") for i in range(40)]
            pids = list(s.upsert_prompts(bench, prompts).values())
            ck = s.upsert_checkpoint(exp, "none", 0)
            s.conn.executemany(
                "INSERT INTO generations (checkpoint_id, prompt_id, sample, decoding, response, n_tokens, "
                "finish_reason, created_at) VALUES (?, ?, 0, '{}', 'r', 1, 'stop', 'now')",
                [(ck, p) for p in pids],
            )
            gids = s.generation_ids(ck, "{}")
            evs = [s.upsert_evaluator(n, kind="refusal", version="1") for n in ("a", "b")]
            rows = [
                (g, ev, labels[(i * 7 + k) % len(labels)], None if i % 3 else i / 40, None, "now")
                for k, ev in enumerate(evs)
                for i, g in enumerate(sorted(gids.values()))
            ]
            s.conn.executemany("INSERT INTO judgments VALUES (?, ?, ?, ?, ?, ?)", rows)
        got = bulk.judgments(s, evs)
        plain = s.conn.execute(
            "SELECT generation_id, evaluator_id, label, score FROM judgments "
            "INDEXED BY idx_judgments_evaluator_label_score WHERE evaluator_id IN (?, ?)",
            evs,
        ).fetchall()
    want = pl.DataFrame(plain, schema=bulk.JUDGED, orient="row")
    assert got.height == len(rows) and got["label"].dtype == pl.Categorical
    assert got.with_columns(pl.col("label").cast(pl.Utf8)).equals(want)

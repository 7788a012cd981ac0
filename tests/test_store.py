import sqlite3
import threading

import pytest

from capsafe_core.errors import NotADatabase, NotFound
from capsafe_core.store import SCHEMA_VERSION, Store


def test_schema_version_wal_and_foreign_keys(store, db_path):
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert set(store.db.table_names()) >= {
        "experiments",
        "checkpoints",
        "benchmarks",
        "prompts",
        "generations",
        "evaluators",
        "judgments",
        "human_labels",
    }
    with pytest.raises(sqlite3.IntegrityError), store.transaction():
        store.conn.execute("INSERT INTO checkpoints (experiment_id, mitigation, step) VALUES (999, 'none', 0)")


def test_reopen_does_not_migrate_again(db_path):
    Store.open(db_path).close()
    with Store.open(db_path) as s:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def _fill(store):
    with store.transaction():
        e = store.upsert_experiment("exp", base_model="m", capability_target=0.8)
        c = store.upsert_checkpoint(e, "none", 0)
        b = store.upsert_benchmark("b", kind="safety")
        ids = store.upsert_prompts(b, [("p1", "hello", None, None, "{}"), ("p2", "bye", "cat", None, "{}")])
        store.upsert_generations(
            [(c, ids["p1"], 0, "{}", "hi", 1, "stop", "t"), (c, ids["p2"], 0, "{}", "ciao", 1, "stop", "t")]
        )
        v = store.upsert_evaluator("judge", kind="harm", version="1")
        gids = store.generation_ids(c, "{}")
        store.upsert_judgments([(g, v, "safe", None, None, "t") for g in gids.values()])
        store.add_human_labels([(g, "ann", "benign", 1, None, "t") for g in gids.values()])
    return e


def test_upserts_are_idempotent(store):
    e1 = _fill(store)
    before = store.counts()
    e2 = _fill(store)
    assert e1 == e2
    assert store.counts() == before
    assert before["generations"] == 2 and before["judgments"] == 2 and before["human_labels"] == 2


def test_experiment_update_keeps_unset_fields(store):
    _fill(store)
    with store.transaction():
        store.upsert_experiment("exp", task="arith", meta={"a": 1})
    row = store.experiments().to_dicts()[0]
    assert row["base_model"] == "m" and row["task"] == "arith" and row["capability_target"] == 0.8


def test_failed_transaction_rolls_back(store):
    _fill(store)
    before = store.counts()
    with pytest.raises(RuntimeError), store.transaction():
        store.upsert_experiment("other")
        raise RuntimeError("boom")
    assert store.counts() == before


def test_not_a_database(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("hello, I am text")
    with pytest.raises(NotADatabase, match="is not a SQLite database"):
        Store.open(bad)
    assert bad.read_text() == "hello, I am text"


def test_sqlite_file_of_another_program(tmp_path):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(NotADatabase, match="another program"):
        Store.open(other)


def test_newer_schema_is_refused(tmp_path):
    p = tmp_path / "new.db"
    Store.open(p).close()
    conn = sqlite3.connect(p)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(NotADatabase, match="upgrade capsafe"):
        Store.open(p)


def test_missing_database_without_create(tmp_path):
    with pytest.raises(NotFound, match="capsafe init"):
        Store.open(tmp_path / "nope.db", create=False)


def test_unknown_experiment_suggests(store):
    _fill(store)
    with pytest.raises(NotFound, match="Did you mean 'exp'"):
        store.experiment_id("exq")


def test_concurrent_writers_lose_nothing(db_path):
    Store.open(db_path).close()
    with Store.open(db_path) as s:
        e = _fill(s)
        gen_ids = [r[0] for r in s.conn.execute("SELECT id FROM generations")]

    def label(who: str) -> None:
        with Store.open(db_path) as s:
            for i in range(50):
                with s.transaction():
                    s.add_human_labels([(gen_ids[i % 2], who, "harmful", 0, str(i), "t")], skip_repeats=False)

    threads = [threading.Thread(target=label, args=(f"a{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Store.open(db_path) as s:
        assert s.conn.execute("SELECT count(*) FROM human_labels").fetchone()[0] == 2 + 150
    assert e


def test_reading_an_older_schema_migrates_it_first(db_path, monkeypatch):
    """A reading command on a database an older capsafe wrote migrates it (where the file can be written)."""
    from capsafe_core.store import schema

    Store.open(db_path).close()

    def _migration_next(db):
        db.execute("CREATE TABLE extra (id INTEGER PRIMARY KEY)")

    now = len(schema.MIGRATIONS)
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, _migration_next])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(schema.MIGRATIONS))
    with Store.open(db_path, read_only=True) as s:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == now + 1
        assert "extra" in s.db.table_names()


def test_prune_evaluators_keeps_the_previous_version_when_asked(store):
    with store.transaction():
        ids = [store.upsert_evaluator("coherence", kind="coherence", version=v) for v in ("1", "2", "3")]
        other = store.upsert_evaluator("keyword_refusal", kind="refusal", version="1")
    with store.transaction():
        store.prune_evaluators({"coherence": "3", "keyword_refusal": "1"}, keep_previous=True)
    left = {r[0] for r in store.conn.execute("SELECT id FROM evaluators")}
    assert left == {ids[1], ids[2], other}
    with store.transaction():
        store.prune_evaluators({"coherence": "3", "keyword_refusal": "1"})
    assert {r[0] for r in store.conn.execute("SELECT id FROM evaluators")} == {ids[2], other}

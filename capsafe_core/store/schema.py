"""The schema: ordered migrations, and what a capsafe database must hold.

A database's schema version is SQLite's ``user_version``; migration *i* takes it from *i* to
*i + 1*. ``check_capsafe`` tells a capsafe database from another program's (or a damaged one)
before anything is written to it.
"""

from __future__ import annotations

import sqlite3

import sqlite_utils
from sqlite_utils.db import Table

from capsafe_core.errors import NotADatabase


def _t(db: sqlite_utils.Database, name: str) -> Table:
    return db.table(name)


def _migration_1(db: sqlite_utils.Database) -> None:
    _t(db, "experiments").create(
        {
            "id": int,
            "name": str,
            "base_model": str,
            "task": str,
            "capability_metric": str,
            "capability_target": float,
            "meta": str,
        },
        pk="id",
        not_null={"name"},
        defaults={"meta": "{}"},
    )
    _t(db, "experiments").create_index(["name"], unique=True)
    _t(db, "checkpoints").create(
        {"id": int, "experiment_id": int, "mitigation": str, "step": int, "model_ref": str, "meta": str},
        pk="id",
        not_null={"experiment_id", "mitigation", "step"},
        defaults={"meta": "{}"},
        foreign_keys=[("experiment_id", "experiments", "id")],
    )
    _t(db, "checkpoints").create_index(["experiment_id", "mitigation", "step"], unique=True)
    _t(db, "benchmarks").create(
        {"id": int, "name": str, "kind": str, "source": str, "license": str, "meta": str},
        pk="id",
        not_null={"name", "kind"},
        defaults={"meta": "{}"},
    )
    _t(db, "benchmarks").create_index(["name"], unique=True)
    _t(db, "prompts").create(
        {"id": int, "benchmark_id": int, "ext_id": str, "text": str, "category": str, "reference": str, "meta": str},
        pk="id",
        not_null={"benchmark_id", "ext_id", "text"},
        defaults={"meta": "{}"},
        foreign_keys=[("benchmark_id", "benchmarks", "id")],
    )
    _t(db, "prompts").create_index(["benchmark_id", "ext_id"], unique=True)
    _migration_1_results(db)


def _migration_1_results(db: sqlite_utils.Database) -> None:
    """The second half of the first schema: generations, evaluators, judgments, human labels."""
    _t(db, "generations").create(
        {
            "id": int,
            "checkpoint_id": int,
            "prompt_id": int,
            "sample": int,
            "decoding": str,
            "response": str,
            "n_tokens": int,
            "finish_reason": str,
            "created_at": str,
        },
        pk="id",
        not_null={"checkpoint_id", "prompt_id", "sample", "decoding", "response"},
        defaults={"sample": 0, "decoding": "{}"},
        foreign_keys=[("checkpoint_id", "checkpoints", "id"), ("prompt_id", "prompts", "id")],
    )
    _t(db, "generations").create_index(["checkpoint_id", "prompt_id", "decoding", "sample"], unique=True)
    _t(db, "generations").create_index(["prompt_id"])
    _t(db, "evaluators").create(
        {"id": int, "name": str, "kind": str, "version": str, "config": str},
        pk="id",
        not_null={"name", "kind", "version"},
        defaults={"config": "{}"},
    )
    _t(db, "evaluators").create_index(["name", "version"], unique=True)
    # WITHOUT ROWID: the primary key is the only way judgments are looked up, and the
    # table is the largest one (evaluators × generations).
    db.execute(
        """CREATE TABLE judgments (
            generation_id INTEGER NOT NULL REFERENCES generations(id),
            evaluator_id INTEGER NOT NULL REFERENCES evaluators(id),
            label TEXT NOT NULL, score REAL, explanation TEXT, created_at TEXT,
            PRIMARY KEY (generation_id, evaluator_id)) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX idx_judgments_evaluator_label ON judgments(evaluator_id, label)")
    _t(db, "human_labels").create(
        {
            "id": int,
            "generation_id": int,
            "annotator": str,
            "label": str,
            "coherent": int,
            "note": str,
            "created_at": str,
        },
        pk="id",
        not_null={"generation_id", "annotator", "label", "created_at"},
        foreign_keys=[("generation_id", "generations", "id")],
    )
    _t(db, "human_labels").create_index(["generation_id"])


def _migration_2(db: sqlite_utils.Database) -> None:
    """Repeated runs: a checkpoint is (experiment, mitigation, seed, step); existing ones are seed 0."""
    db.execute("ALTER TABLE checkpoints ADD COLUMN seed INTEGER NOT NULL DEFAULT 0")
    db.execute("DROP INDEX IF EXISTS idx_checkpoints_experiment_id_mitigation_step")
    db.execute(
        "CREATE UNIQUE INDEX idx_checkpoints_experiment_id_mitigation_seed_step "
        "ON checkpoints(experiment_id, mitigation, seed, step)"
    )


def _migration_3(db: sqlite_utils.Database) -> None:
    """Audit samples (labelling samples drawn for estimates, with their design) and where a human label
    came from (``import``, ``flagged`` queue, ``audit`` queue or file; NULL: labelled before this schema)."""
    db.execute("ALTER TABLE human_labels ADD COLUMN source TEXT")
    db.execute(
        """CREATE TABLE audit_samples (
            id INTEGER PRIMARY KEY,
            experiment_id INTEGER NOT NULL REFERENCES experiments(id),
            name TEXT NOT NULL,
            seed INTEGER NOT NULL,
            n INTEGER NOT NULL,
            design TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (experiment_id, name))"""
    )
    db.execute(
        """CREATE TABLE audit_items (
            sample_id INTEGER NOT NULL REFERENCES audit_samples(id),
            generation_id INTEGER NOT NULL REFERENCES generations(id),
            position INTEGER NOT NULL,
            stratum TEXT NOT NULL,
            inclusion_prob REAL NOT NULL CHECK (inclusion_prob > 0 AND inclusion_prob <= 1),
            PRIMARY KEY (sample_id, generation_id),
            UNIQUE (sample_id, position))"""
    )
    db.execute("CREATE INDEX idx_audit_items_generation ON audit_items(generation_id)")


def _migration_4(db: sqlite_utils.Database) -> None:
    """A verdict read by evaluator answered from one index: (evaluator_id, label, score) holds every column it
    needs (a WITHOUT ROWID table's index also holds the primary key, generation_id); it replaces
    (evaluator_id, label), its prefix. 1.7x faster reads of 7.5 M verdicts (bench/dashboard.py's database)."""
    db.execute("DROP INDEX IF EXISTS idx_judgments_evaluator_label")
    db.execute(
        "CREATE INDEX IF NOT EXISTS idx_judgments_evaluator_label_score ON judgments(evaluator_id, label, score)"
    )


MIGRATIONS = [_migration_1, _migration_2, _migration_3, _migration_4]
SCHEMA_VERSION = len(MIGRATIONS)


# tables and columns every capsafe database of schema >= 1 has (later migrations only add)
REQUIRED = {
    "experiments": {"id", "name", "base_model", "task", "capability_metric", "capability_target", "meta"},
    "checkpoints": {"id", "experiment_id", "mitigation", "step", "model_ref", "meta"},
    "benchmarks": {"id", "name", "kind", "source", "license"},
    "prompts": {"id", "benchmark_id", "ext_id", "text", "category", "reference", "meta"},
    "generations": {"id", "checkpoint_id", "prompt_id", "sample", "decoding", "response", "n_tokens", "finish_reason"},
    "evaluators": {"id", "name", "kind", "version", "config"},
    "judgments": {"generation_id", "evaluator_id", "label", "score", "explanation"},
    "human_labels": {"id", "generation_id", "annotator", "label", "coherent", "note", "created_at"},
}


def version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_capsafe(conn: sqlite3.Connection, path: object) -> int:
    """The schema version of a capsafe database (0: empty, to be created); ``NotADatabase`` for another
    program's database, a newer capsafe's or a damaged one. Reads only."""
    v = version(conn)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if v > SCHEMA_VERSION:
        raise NotADatabase(
            f"{path} has schema version {v}, newer than this capsafe ({SCHEMA_VERSION}); upgrade capsafe"
        )
    if v == 0:
        if tables - {"sqlite_sequence"}:
            raise NotADatabase(
                f"{path} is a SQLite database of another program; pass --db with a capsafe database or a new path"
            )
        return 0
    for table, columns in REQUIRED.items():
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")} if table in tables else set()
        if not columns <= have:
            raise NotADatabase(
                f"{path} is not a capsafe database (schema version {v}, but table '{table}' is missing or "
                f"lacks columns); pass --db with a capsafe database or a new path"
            )
    return v


def migrate(db: sqlite_utils.Database) -> None:
    """Run the migrations above the file's ``user_version``, each in its own transaction (a failed one
    leaves the file as it was)."""
    for i in range(version(db.conn), SCHEMA_VERSION):
        if i == 0:  # the first creates tables through sqlite-utils, which commits by itself
            with db.conn:
                MIGRATIONS[i](db)
                db.execute(f"PRAGMA user_version = {i + 1}")
            continue
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[i](db)
            db.conn.execute(f"PRAGMA user_version = {i + 1}")
        except BaseException:
            db.conn.execute("ROLLBACK")
            raise
        db.conn.execute("COMMIT")

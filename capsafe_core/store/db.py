"""``Store``: one open capsafe database, its transactions, idempotent upserts and named lookups.

One file holds everything (DESIGN.md "Data model"). Bulk writes are ``executemany`` upserts
inside one transaction per batch, so a re-run never duplicates rows and a failed batch leaves
the database as it was.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import sqlite_utils

from capsafe_core.errors import NotFound, unknown_name
from capsafe_core.store import connection, schema


def now() -> str:
    """ISO-8601 UTC timestamp used for every ``created_at``."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def to_json(value: Any) -> str:
    """Stable JSON text for ``meta``, ``decoding`` and ``config`` columns."""
    if value is None:
        return "{}"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class Store:
    """A capsafe database: ``Store.open(path)``; ``store.db`` is the sqlite-utils handle."""

    def __init__(self, path: str | Path, conn: sqlite3.Connection, *, read_only: bool = False):
        self.path = Path(path)
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self.read_only = read_only

    @classmethod
    def open(
        cls, path: str | Path, *, create: bool = True, read_only: bool = False, timeout: float | None = None
    ) -> Store:
        """Open (``create``: or create) a capsafe database; ``read_only`` for reading commands, which
        also works on a database in a read-only file or folder. Another program's file is refused
        before anything is written to it."""
        p = Path(path)
        if read_only:
            if connection.needs_migration(p) and connection.writable(p):
                cls.open(p, create=False, timeout=timeout).close()  # an older capsafe file: migrate it first
            return cls(path, connection.connect_read(p, timeout=timeout), read_only=True)
        if str(path) != ":memory:" and not create and not p.exists():
            raise NotFound(f"No database at {p}; create one with: capsafe init --db {p}")
        conn = connection.connect_write(path, timeout=timeout)
        store = cls(path, conn)
        try:
            with connection.sqlite_errors(path):
                schema.migrate(store.db)
        except BaseException:
            conn.close()
            raise
        return store

    def compact(self) -> None:
        """Fold the WAL into the file and rebuild it without free pages (before shipping a copy)."""
        with connection.sqlite_errors(self.path):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.execute("VACUUM")

    def backup(self, dest: Path) -> None:
        """A consistent copy of the database (WAL included) at ``dest``, as one file."""
        with connection.sqlite_errors(self.path):
            target = sqlite3.connect(str(dest))
            try:
                self.conn.backup(target)
            finally:
                target.close()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything inside commits together or not at all. Taking the write
        lock waits up to the busy timeout, then fails with one line."""
        if self.read_only:
            raise connection.ReadOnlyDatabase(
                f"{self.path} was opened read-only and this command writes to it; open it for writing"
            )
        with connection.sqlite_errors(self.path):
            self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.rollback()
            raise
        else:
            with connection.sqlite_errors(self.path):
                self.conn.commit()

    # --- small upserts (call inside ``transaction``) ------------------------------------

    def upsert_experiment(
        self,
        name: str,
        *,
        base_model: str | None = None,
        task: str | None = None,
        capability_metric: str | None = None,
        capability_target: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> int:
        """Create or update an experiment; fields given as ``None`` keep their stored value."""
        row = self.conn.execute(
            """INSERT INTO experiments (name, base_model, task, capability_metric, capability_target, meta)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(name) DO UPDATE SET
                 base_model = coalesce(excluded.base_model, base_model),
                 task = coalesce(excluded.task, task),
                 capability_metric = coalesce(excluded.capability_metric, capability_metric),
                 capability_target = coalesce(excluded.capability_target, capability_target),
                 meta = CASE WHEN excluded.meta = '{}' THEN meta
                             ELSE json_patch(meta, excluded.meta) END
               RETURNING id""",
            (name, base_model, task, capability_metric, capability_target, to_json(meta)),
        ).fetchone()
        return int(row[0])

    def upsert_checkpoint(
        self,
        experiment_id: int,
        mitigation: str,
        step: int,
        *,
        seed: int = 0,
        model_ref: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> int:
        """The checkpoint (experiment, mitigation, seed, step): ``seed`` tells repeated fine-tuning runs
        of one mitigation apart."""
        row = self.conn.execute(
            """INSERT INTO checkpoints (experiment_id, mitigation, seed, step, model_ref, meta)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(experiment_id, mitigation, seed, step) DO UPDATE SET
                 model_ref = coalesce(excluded.model_ref, model_ref),
                 meta = CASE WHEN excluded.meta = '{}' THEN meta
                             ELSE json_patch(meta, excluded.meta) END
               RETURNING id""",
            (experiment_id, mitigation, int(seed), int(step), model_ref, to_json(meta)),
        ).fetchone()
        return int(row[0])

    def upsert_benchmark(
        self,
        name: str,
        *,
        kind: str,
        source: str | None = None,
        license: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> int:
        row = self.conn.execute(
            """INSERT INTO benchmarks (name, kind, source, license, meta) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT(name) DO UPDATE SET kind = excluded.kind,
                 source = coalesce(excluded.source, source), license = coalesce(excluded.license, license),
                 meta = CASE WHEN excluded.meta = '{}' THEN meta ELSE excluded.meta END
               RETURNING id""",
            (name, kind, source, license, to_json(meta)),
        ).fetchone()
        return int(row[0])

    def upsert_evaluator(self, name: str, *, kind: str, version: str, config: dict[str, Any] | None = None) -> int:
        row = self.conn.execute(
            """INSERT INTO evaluators (name, kind, version, config) VALUES (?, ?, ?, ?)
               ON CONFLICT(name, version) DO UPDATE SET kind = excluded.kind, config = excluded.config
               RETURNING id""",
            (name, kind, version, to_json(config)),
        ).fetchone()
        return int(row[0])

    # --- bulk upserts (call inside ``transaction``) -------------------------------------

    def upsert_prompts(self, benchmark_id: int, rows: Iterable[Sequence[Any]]) -> dict[str, int]:
        """Rows of ``(ext_id, text, category, reference, meta_json)``; returns ext_id → id."""
        self.conn.executemany(
            f"""INSERT INTO prompts (benchmark_id, ext_id, text, category, reference, meta)
               VALUES ({int(benchmark_id)}, ?, ?, ?, ?, ?)
               ON CONFLICT(benchmark_id, ext_id) DO UPDATE SET text = excluded.text,
                 category = coalesce(excluded.category, category),
                 reference = coalesce(excluded.reference, reference),
                 meta = CASE WHEN excluded.meta = '{{}}' THEN meta ELSE excluded.meta END
               WHERE text IS NOT excluded.text OR category IS NOT coalesce(excluded.category, category)
                 OR reference IS NOT coalesce(excluded.reference, reference)""",
            rows,
        )
        return dict(
            self.conn.execute("SELECT ext_id, id FROM prompts WHERE benchmark_id = ?", (benchmark_id,)).fetchall()
        )

    def upsert_generations(self, rows: Iterable[Sequence[Any]]) -> int:
        """Rows of ``(checkpoint_id, prompt_id, sample, decoding, response, n_tokens, finish_reason,
        created_at)``. An existing generation keeps its id and takes the new response."""
        cur = self.conn.executemany(
            """INSERT INTO generations (checkpoint_id, prompt_id, sample, decoding, response, n_tokens,
                                        finish_reason, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(checkpoint_id, prompt_id, decoding, sample) DO UPDATE SET
                 response = excluded.response, n_tokens = excluded.n_tokens,
                 finish_reason = excluded.finish_reason
               WHERE response IS NOT excluded.response OR n_tokens IS NOT excluded.n_tokens
                 OR finish_reason IS NOT excluded.finish_reason""",
            rows,
        )
        return cur.rowcount

    def generation_ids(self, checkpoint_id: int, decoding: str) -> dict[tuple[int, int], int]:
        """(prompt_id, sample) → generation id for one checkpoint and decoding config."""
        cur = self.conn.execute(
            "SELECT prompt_id, sample, id FROM generations WHERE checkpoint_id = ? AND decoding = ?",
            (checkpoint_id, decoding),
        )
        return {(p, s): g for p, s, g in cur}

    def upsert_judgments(self, rows: Iterable[Sequence[Any]]) -> int:
        """Rows of ``(generation_id, evaluator_id, label, score, explanation, created_at)``."""
        cur = self.conn.executemany(
            """INSERT INTO judgments (generation_id, evaluator_id, label, score, explanation, created_at)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(generation_id, evaluator_id) DO UPDATE SET label = excluded.label,
                 score = excluded.score, explanation = excluded.explanation, created_at = excluded.created_at
               WHERE label IS NOT excluded.label OR score IS NOT excluded.score
                 OR explanation IS NOT excluded.explanation""",
            rows,
        )
        return cur.rowcount

    def add_human_labels(
        self, rows: Iterable[Sequence[Any]], *, skip_repeats: bool = True, source: str = "import"
    ) -> int:
        """Rows of ``(generation_id, annotator, label, coherent, note, created_at)``, from ``source``.

        Labels are history: a new verdict is a new row. With ``skip_repeats`` a row equal to the
        annotator's latest label on that generation is not added again (imports stay idempotent).
        """
        sql = "INSERT INTO human_labels (generation_id, annotator, label, coherent, note, created_at, source) "
        if skip_repeats:
            sql += """SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE NOT EXISTS (
                        SELECT 1 FROM human_labels h WHERE h.id = (
                          SELECT max(id) FROM human_labels WHERE generation_id = ?1 AND annotator = ?2)
                        AND h.label = ?3 AND h.coherent IS ?4 AND h.note IS ?5)"""
        else:
            sql += "VALUES (?, ?, ?, ?, ?, ?, ?)"
        cur = self.conn.executemany(sql, ([*r, source] for r in rows))
        return cur.rowcount

    def copy_checkpoint(self, src_id: int, mitigation: str, *, step: int | None = None, seed: int | None = None) -> int:
        """Give another mitigation or run the same checkpoint (e.g. the shared step 0): copies its
        generations and judgments, and notes the source in ``meta.copied_from``. Idempotent."""
        exp_id, src_step, src_seed, model_ref = self.conn.execute(
            "SELECT experiment_id, step, seed, model_ref FROM checkpoints WHERE id = ?", (src_id,)
        ).fetchone()
        dst = self.upsert_checkpoint(
            exp_id,
            mitigation,
            src_step if step is None else step,
            seed=src_seed if seed is None else seed,
            model_ref=model_ref,
            meta={"copied_from": {"checkpoint_id": src_id}},
        )
        self.conn.execute(
            """INSERT INTO generations (checkpoint_id, prompt_id, sample, decoding, response, n_tokens,
                                        finish_reason, created_at)
               SELECT ?, prompt_id, sample, decoding, response, n_tokens, finish_reason, created_at
               FROM generations WHERE checkpoint_id = ? AND true
               ON CONFLICT(checkpoint_id, prompt_id, decoding, sample) DO NOTHING""",
            (dst, src_id),
        )
        self.conn.execute(
            """INSERT INTO judgments (generation_id, evaluator_id, label, score, explanation, created_at)
               SELECT d.id, j.evaluator_id, j.label, j.score, j.explanation, j.created_at
               FROM judgments j JOIN generations s ON s.id = j.generation_id
               JOIN generations d ON d.checkpoint_id = ? AND d.prompt_id = s.prompt_id
                                 AND d.decoding = s.decoding AND d.sample = s.sample
               WHERE s.checkpoint_id = ? AND true
               ON CONFLICT(generation_id, evaluator_id) DO NOTHING""",
            (dst, src_id),
        )
        return dst

    def prune_evaluators(self, current: dict[str, str], *, keep_previous: bool = False) -> int:
        """Delete judgments of evaluators whose name is in ``current`` but whose version is not the
        current one (after a metric changed and was re-run); with ``keep_previous``, the newest of those
        older versions stays (to compare a changed metric with what it replaced). Returns the judgments
        deleted."""
        older: dict[str, list[int]] = {}
        for i, name, version in self.conn.execute("SELECT id, name, version FROM evaluators ORDER BY id"):
            if name in current and version != current[name]:
                older.setdefault(name, []).append(int(i))
        stale = [(i,) for ids in older.values() for i in (ids[:-1] if keep_previous else ids)]
        before = self.conn.execute("SELECT count(*) FROM judgments").fetchone()[0]
        self.conn.executemany("DELETE FROM judgments WHERE evaluator_id = ?", stale)
        self.conn.executemany("DELETE FROM evaluators WHERE id = ?", stale)
        return int(before - self.conn.execute("SELECT count(*) FROM judgments").fetchone()[0])

    # --- reads --------------------------------------------------------------------------

    def frame(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> pl.DataFrame:
        """Run a query and return a polars frame (column names from the query)."""
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
        if not rows:
            return pl.DataFrame({n: [] for n in names})
        return pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)

    def counts(self) -> dict[str, int]:
        """Rows per table of the data model."""
        return {t: int(self.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in schema.REQUIRED}

    def experiment_id(self, name: str) -> int:
        row = self.conn.execute("SELECT id FROM experiments WHERE name = ?", (name,)).fetchone()
        if row is None:
            names = [r[0] for r in self.conn.execute("SELECT name FROM experiments")]
            raise unknown_name("experiment", name, names, hint="list them with: capsafe ls experiments")
        return int(row[0])

    def benchmark_id(self, name: str) -> int:
        row = self.conn.execute("SELECT id FROM benchmarks WHERE name = ?", (name,)).fetchone()
        if row is None:
            names = [r[0] for r in self.conn.execute("SELECT name FROM benchmarks")]
            raise unknown_name("benchmark", name, names, hint="list them with: capsafe ls benchmarks")
        return int(row[0])

    def scope(self, *, experiment: str | None = None, benchmark: str | None = None) -> tuple[str, list[object]]:
        """A ``WHERE`` clause (on aliases ``c`` = checkpoints, ``p`` = prompts) and its parameters that
        keep one experiment and/or one benchmark; unknown names raise ``NotFound``."""
        clauses: list[str] = []
        params: list[object] = []
        if experiment is not None:
            clauses.append("c.experiment_id = ?")
            params.append(self.experiment_id(experiment))
        if benchmark is not None:
            clauses.append("p.benchmark_id = ?")
            params.append(self.benchmark_id(benchmark))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def experiments(self) -> pl.DataFrame:
        return self.frame(
            """SELECT e.id, e.name, e.base_model, e.task, e.capability_metric, e.capability_target,
                      (SELECT count(*) FROM checkpoints c WHERE c.experiment_id = e.id) AS checkpoints,
                      e.meta
               FROM experiments e ORDER BY e.name"""
        )

    def checkpoints(self, experiment: str | None = None) -> pl.DataFrame:
        where, params = "", []
        if experiment is not None:
            where, params = "WHERE c.experiment_id = ?", [self.experiment_id(experiment)]
        return self.frame(
            f"""SELECT c.id, e.name AS experiment, c.mitigation, c.seed, c.step, c.model_ref,
                       (SELECT count(*) FROM generations g WHERE g.checkpoint_id = c.id) AS generations,
                       c.meta
                FROM checkpoints c JOIN experiments e ON e.id = c.experiment_id {where}
                ORDER BY e.name, c.mitigation, c.seed, c.step""",
            params,
        )

    def benchmarks(self) -> pl.DataFrame:
        return self.frame(
            """SELECT b.id, b.name, b.kind, b.source, b.license,
                      (SELECT count(*) FROM prompts p WHERE p.benchmark_id = b.id) AS prompts, b.meta
               FROM benchmarks b ORDER BY b.name"""
        )

    def evaluators(self) -> pl.DataFrame:
        return self.frame(
            """SELECT v.id, v.name, v.kind, v.version,
                      (SELECT count(*) FROM judgments j WHERE j.evaluator_id = v.id) AS judgments, v.config
               FROM evaluators v ORDER BY v.name, v.version"""
        )

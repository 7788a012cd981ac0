"""Writes of an import, checked against what is stored (call inside ``Store.transaction``).

Each function adds what is new and reports, instead of overwriting, what the database already
holds differently: a prompt id with another text, a generation with another response, a
verdict with another label. The caller refuses the import on any conflict (the transaction
rolls back) unless the user asked to replace generations. Counts are of rows this call added.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from capsafe_core.store.db import Store


@dataclass(frozen=True)
class Conflict:
    """One incoming row that differs from the stored one: source row, what is stored, what is new, and
    what it is (``response for this generation``)."""

    row: int
    stored: str
    new: str
    what: str


@dataclass(frozen=True)
class Written:
    """What a bulk write did: rows added, rows replaced, and the rows replacing dropped."""

    added: int = 0
    replaced: int = 0
    judgments_dropped: int = 0
    labels_dropped: int = 0
    conflicts: tuple[Conflict, ...] = ()


def checkpoint_id(store: Store, experiment_id: int, mitigation: str, step: int, seed: int = 0) -> int | None:
    row = store.conn.execute(
        "SELECT id FROM checkpoints WHERE experiment_id = ? AND mitigation = ? AND seed = ? AND step = ?",
        (experiment_id, mitigation, int(seed), int(step)),
    ).fetchone()
    return int(row[0]) if row else None


def benchmark_kind(store: Store, name: str) -> str | None:
    row = store.conn.execute("SELECT kind FROM benchmarks WHERE name = ?", (name,)).fetchone()
    return str(row[0]) if row else None


def count_prompts(store: Store, benchmark: str) -> int:
    row = store.conn.execute(
        "SELECT count(*) FROM prompts p JOIN benchmarks b ON b.id = p.benchmark_id WHERE b.name = ?", (benchmark,)
    ).fetchone()
    return int(row[0])


def prompt_texts(store: Store, benchmark_id: int) -> dict[str, tuple[int, str]]:
    """ext_id → (id, text) of a benchmark's stored prompts."""
    cur = store.conn.execute("SELECT ext_id, id, text FROM prompts WHERE benchmark_id = ?", (benchmark_id,))
    return {e: (int(i), t) for e, i, t in cur}


def write_prompts(
    store: Store, benchmark_id: int, prompts: pl.DataFrame, *, same: Callable[[str], str] = str
) -> tuple[dict[str, int], Written]:
    """Add prompts (``row, ext_id, prompt, category, reference``) to a benchmark; a stored ext_id keeps
    its text (a different one, compared through ``same``, is a conflict) and gains only a missing
    category or reference."""
    stored = prompt_texts(store, benchmark_id)
    conflicts = [
        Conflict(int(r), stored[e][1], t, what=f"text for prompt '{e}'")
        for r, e, t in prompts.select("row", "ext_id", "prompt").iter_rows()
        if e in stored and same(stored[e][1]) != same(t)
    ]
    if conflicts:
        return {}, Written(conflicts=tuple(conflicts))
    new = prompts.filter(~pl.col("ext_id").is_in(list(stored)))
    store.conn.executemany(
        f"""INSERT INTO prompts (benchmark_id, ext_id, text, category, reference, meta)
            VALUES ({int(benchmark_id)}, ?, ?, ?, ?, '{{}}')""",
        new.select("ext_id", "prompt", "category", "reference").iter_rows(),
    )
    old = prompts.filter(pl.col("ext_id").is_in(list(stored)))
    store.conn.executemany(
        f"""UPDATE prompts SET category = coalesce(category, ?), reference = coalesce(reference, ?)
            WHERE benchmark_id = {int(benchmark_id)} AND ext_id = ?
              AND ((category IS NULL AND ?1 IS NOT NULL) OR (reference IS NULL AND ?2 IS NOT NULL))""",
        old.select("category", "reference", "ext_id").iter_rows(),
    )
    ids = {e: i for e, (i, _) in prompt_texts(store, benchmark_id).items()}
    return ids, Written(added=new.height)


def _rows(frame: pl.DataFrame) -> Iterator[tuple[Any, ...]]:
    """A frame's rows as tuples for ``executemany`` (column lists zipped: faster than ``iter_rows``)."""
    return zip(*(frame[c].to_list() for c in frame.columns), strict=True)


def _stage(store: Store, name: str, columns: Sequence[str], rows: Any) -> None:
    """A temporary table of incoming rows, to compare them with the stored ones in one join."""
    store.conn.execute(f"DROP TABLE IF EXISTS temp.{name}")
    store.conn.execute(f"CREATE TEMP TABLE {name} ({', '.join(columns)})")
    marks = ", ".join("?" * len(columns))
    store.conn.executemany(f"INSERT INTO temp.{name} VALUES ({marks})", rows)


def write_generations(store: Store, gens: pl.DataFrame, *, created_at: str, replace: bool = False) -> Written:
    """Add generations (``row, checkpoint_id, prompt_db_id, sample, decoding, response, n_tokens,
    finish_reason``). A stored one with the same response is left alone; one with another response is
    a conflict, or with ``replace`` takes the new response and loses its verdicts and human labels."""
    cols = ["checkpoint_id", "prompt_db_id", "sample", "decoding", "response", "n_tokens", "finish_reason"]
    cur = store.conn.executemany(
        """INSERT INTO generations (checkpoint_id, prompt_id, sample, decoding, response, n_tokens,
                                    finish_reason, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT(checkpoint_id, prompt_id, decoding, sample) DO NOTHING""",
        _rows(gens.select(*cols, pl.lit(created_at))),
    )
    added = max(cur.rowcount, 0)
    if added == gens.height:
        return Written(added=added)
    _stage(store, "incoming_generations", ["row", *cols], gens.select("row", *cols).iter_rows())
    differing = store.conn.execute(
        """SELECT k.row, g.id, g.response, k.response FROM temp.incoming_generations k
           JOIN generations g ON g.checkpoint_id = k.checkpoint_id AND g.prompt_id = k.prompt_db_id
                             AND g.decoding = k.decoding AND g.sample = k.sample
           WHERE g.response IS NOT k.response ORDER BY k.row"""
    ).fetchall()
    if not differing:
        return Written(added=added)
    if not replace:
        return Written(
            added=added,
            conflicts=tuple(Conflict(int(r), s, n, "response for this generation") for r, _, s, n in differing),
        )
    _stage(store, "replaced_generations", ["id"], ((int(g),) for _, g, _, _ in differing))
    dropped = {}
    for table in ("judgments", "human_labels"):
        where = f"FROM {table} WHERE generation_id IN (SELECT id FROM temp.replaced_generations)"
        dropped[table] = int(store.conn.execute(f"SELECT count(*) {where}").fetchone()[0])
        store.conn.execute(f"DELETE {where}")
    store.conn.execute(
        """UPDATE generations SET response = k.response, n_tokens = k.n_tokens, finish_reason = k.finish_reason,
                  created_at = ? FROM temp.incoming_generations k
           WHERE generations.checkpoint_id = k.checkpoint_id AND generations.prompt_id = k.prompt_db_id
             AND generations.decoding = k.decoding AND generations.sample = k.sample
             AND generations.response IS NOT k.response""",
        (created_at,),
    )
    return Written(
        added=added,
        replaced=len(differing),
        judgments_dropped=dropped["judgments"],
        labels_dropped=dropped["human_labels"],
    )


def generation_ids(store: Store, keys: pl.DataFrame) -> pl.DataFrame:
    """``checkpoint_id, prompt_db_id, sample, decoding`` → ``generation_id`` of the stored generations of the
    checkpoints and decodings in ``keys`` (one indexed query per checkpoint and decoding)."""
    schema = {
        "checkpoint_id": pl.Int64,
        "prompt_db_id": pl.Int64,
        "sample": pl.Int64,
        "decoding": pl.Utf8,
        "generation_id": pl.Int64,
    }
    rows: list[tuple[Any, ...]] = []
    for ck, decoding in keys.select("checkpoint_id", "decoding").unique().iter_rows():
        rows += [(ck, p, smp, decoding, g) for (p, smp), g in store.generation_ids(ck, decoding).items()]
    return pl.DataFrame(rows, schema=schema, orient="row")


def write_judgments(
    store: Store, judgments: pl.DataFrame, *, created_at: str, replace: bool = False, new_generations: bool = False
) -> Written:
    """Add verdicts (``row, generation_id, evaluator_id, label, score, explanation``). A stored verdict of
    the same evaluator on the same generation that differs is a conflict, or with ``replace`` is replaced.
    ``new_generations``: every generation was added in this transaction, so none has a stored verdict and
    a plain INSERT (a quarter faster than one with a conflict clause) does."""
    cols = ["generation_id", "evaluator_id", "label", "score", "explanation"]
    conflict = "" if new_generations else " ON CONFLICT(generation_id, evaluator_id) DO NOTHING"
    cur = store.conn.executemany(
        "INSERT INTO judgments (generation_id, evaluator_id, label, score, explanation, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)" + conflict,
        _rows(judgments.select(*cols, pl.lit(created_at))),
    )
    added = max(cur.rowcount, 0)
    if added == judgments.height:
        return Written(added=added)
    _stage(store, "incoming_judgments", ["row", *cols], judgments.select("row", *cols).iter_rows())
    where = """FROM temp.incoming_judgments k JOIN judgments j
               ON j.generation_id = k.generation_id AND j.evaluator_id = k.evaluator_id
               WHERE j.label IS NOT k.label OR j.score IS NOT k.score OR j.explanation IS NOT k.explanation"""
    differing = store.conn.execute(
        "SELECT k.row, j.label, k.label, (SELECT name FROM evaluators WHERE id = k.evaluator_id) "
        f"{where} ORDER BY k.row"
    ).fetchall()
    if not differing:
        return Written(added=added)
    if not replace:
        return Written(
            added=added,
            conflicts=tuple(
                Conflict(int(r), str(s), str(n), f"verdict of {e} for this generation") for r, s, n, e in differing
            ),
        )
    store.conn.execute(
        """UPDATE judgments SET label = k.label, score = k.score, explanation = k.explanation, created_at = ?
            FROM temp.incoming_judgments k WHERE judgments.generation_id = k.generation_id
              AND judgments.evaluator_id = k.evaluator_id AND (judgments.label IS NOT k.label
              OR judgments.score IS NOT k.score OR judgments.explanation IS NOT k.explanation)""",
        (created_at,),
    )
    return Written(added=added, replaced=len(differing))

"""Audit samples: generations drawn for labelling with a known design (stratum and inclusion probability
of every drawn generation), so that their human labels can correct a judge's rate."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

from capsafe_core.errors import BadInput, NotFound
from capsafe_core.store.db import Store, now


def create_sample(
    store: Store,
    experiment: str,
    *,
    name: str,
    seed: int,
    design: Mapping[str, Any],
    items: Iterable[tuple[int, int, str, float]],
) -> int:
    """Store a drawn sample and its items ``(generation_id, position, stratum, inclusion_prob)`` in one
    transaction; a name already used in the experiment is refused."""
    exp_id = store.experiment_id(experiment)
    rows = list(items)
    with store.transaction():
        taken = store.conn.execute(
            "SELECT 1 FROM audit_samples WHERE experiment_id = ? AND name = ?", (exp_id, name)
        ).fetchone()
        if taken:
            raise BadInput(f"Experiment '{experiment}' already has an audit sample '{name}'; pass another --name")
        cur = store.conn.execute(
            "INSERT INTO audit_samples (experiment_id, name, seed, n, design, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (exp_id, name, seed, len(rows), json.dumps(design, sort_keys=True), now()),
        )
        sample_id = int(cur.lastrowid or 0)
        store.conn.executemany(
            "INSERT INTO audit_items (sample_id, generation_id, position, stratum, inclusion_prob) "
            "VALUES (?, ?, ?, ?, ?)",
            [(sample_id, *r) for r in rows],
        )
    return sample_id


def samples(store: Store, experiment: str) -> pl.DataFrame:
    """The experiment's audit samples, oldest first: sample_id, name, seed, n, design (JSON), created_at."""
    return store.frame(
        """SELECT s.id AS sample_id, s.name, s.seed, s.n, s.design, s.created_at FROM audit_samples s
           WHERE s.experiment_id = ? ORDER BY s.id""",
        [store.experiment_id(experiment)],
    )


def sample_id(store: Store, experiment: str, name: str | None) -> int:
    """The id of the audit sample ``name`` (the newest where ``name`` is None)."""
    s = samples(store, experiment)
    if s.height == 0:
        raise NotFound(
            f"Experiment '{experiment}' has no audit sample; draw one with: capsafe audit draw -e {experiment}"
        )
    if name is None:
        return int(s["sample_id"][-1])
    hit = s.filter(pl.col("name") == name)
    if hit.height == 0:
        raise NotFound(f"No audit sample '{name}' in '{experiment}'; its samples: {', '.join(s['name'].to_list())}")
    return int(hit["sample_id"][0])


ITEM_SCHEMA = {
    "generation_id": pl.Int64,
    "position": pl.Int64,
    "stratum": pl.Utf8,
    "inclusion_prob": pl.Float64,
}


def items(store: Store, sample: int) -> pl.DataFrame:
    """The sample's items in the drawn order: generation_id, position, stratum, inclusion_prob."""
    rows = store.conn.execute(
        "SELECT generation_id, position, stratum, inclusion_prob FROM audit_items "
        "WHERE sample_id = ? ORDER BY position",
        (sample,),
    ).fetchall()
    return pl.DataFrame(rows, schema=ITEM_SCHEMA, orient="row")


def export_rows(store: Store, sample: int) -> pl.DataFrame:
    """The sample's items with what a labeller needs: checkpoint, benchmark, prompt and response."""
    return store.frame(
        """SELECT a.position, a.generation_id, a.stratum, a.inclusion_prob, c.mitigation, c.seed, c.step,
                  b.name AS benchmark, p.ext_id AS prompt_id, p.text AS prompt, g.response
           FROM audit_items a JOIN generations g ON g.id = a.generation_id
           JOIN checkpoints c ON c.id = g.checkpoint_id JOIN prompts p ON p.id = g.prompt_id
           JOIN benchmarks b ON b.id = p.benchmark_id
           WHERE a.sample_id = ? ORDER BY a.position""",
        [sample],
    )

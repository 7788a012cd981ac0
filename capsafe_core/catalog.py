"""What ``capsafe ls benchmarks`` and ``capsafe ls evaluators`` list: what capsafe ships or registers,
merged with what a database holds."""

from __future__ import annotations

import polars as pl

from capsafe_core import benchmarks, evaluators
from capsafe_core.store import Store


def benchmark_catalog(store: Store | None) -> pl.DataFrame:
    """Shipped benchmarks (kind, prompts, licence, source, scorer), then the others stored in ``store``."""
    rows = [
        {
            "name": s.name,
            "kind": s.kind,
            "prompts": s.prompts,
            "license": s.license,
            "source": s.source,
            "scorer": s.scorer,
            "shipped": True,
        }
        for s in benchmarks.registry().values()
    ]
    if store is not None:
        shipped = {r["name"] for r in rows}
        rows += [
            {**{k: r[k] for k in ("name", "kind", "prompts", "license", "source")}, "scorer": None, "shipped": False}
            for r in store.benchmarks().to_dicts()
            if r["name"] not in shipped
        ]
    return pl.DataFrame(rows)


def group_line() -> str:
    """``groups: xstest = xstest_safe+xstest_unsafe``."""
    return "groups: " + ", ".join(f"{g} = {'+'.join(m)}" for g, m in benchmarks.groups().items())


def evaluator_catalog(store: Store | None) -> pl.DataFrame:
    """Registered evaluators with their judgment counts in ``store``, then stored ones no longer registered."""
    stored = {(r["name"], r["version"]): r for r in store.evaluators().to_dicts()} if store is not None else {}
    rows = []
    for s in evaluators.registry().values():
        hit = stored.pop((s.name, s.version), None)
        rows.append(
            {
                "name": s.name,
                "kind": s.kind,
                "version": s.version,
                "registered": True,
                "judgments": hit["judgments"] if hit else 0,
                "description": s.description,
            }
        )
    rows += [
        {
            "name": n,
            "kind": r["kind"],
            "version": v,
            "registered": False,
            "judgments": r["judgments"],
            "description": "",
        }
        for (n, v), r in stored.items()
    ]
    return pl.DataFrame(rows)

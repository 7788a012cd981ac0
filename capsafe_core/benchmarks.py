"""The registry of prompt sets shipped in ``data/benchmarks`` (see its README for sources and licences).

Each benchmark is one normalised JSONL file (``ext_id, text, category, reference, meta``) listed in
``index.json`` with its kind (``capability``, ``safety``, ``overrefusal``), source and licence;
capability benchmarks name their capability scorer. A group name (``xstest``) stands for several
benchmarks. ``select(..., limit=N)`` gives a stable, seeded subset: the same N prompts every time,
and a larger N only adds prompts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from capsafe_core.errors import unknown_name
from capsafe_core.paths import data_dir
from capsafe_core.store import Store, to_json

KINDS = ("capability", "safety", "overrefusal")


@dataclass(frozen=True)
class Prompt:
    ext_id: str
    text: str
    category: str | None = None
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    kind: str
    file: str
    prompts: int
    source: str
    license: str
    description: str = ""
    scorer: str | None = None
    license_file: str | None = None


@cache
def _index() -> tuple[dict[str, BenchmarkSpec], dict[str, list[str]]]:
    raw = json.loads((data_dir() / "benchmarks" / "index.json").read_text(encoding="utf-8"))
    specs = {b["name"]: BenchmarkSpec(**b) for b in raw["benchmarks"]}
    return specs, raw.get("groups", {})


def registry() -> dict[str, BenchmarkSpec]:
    return dict(_index()[0])


def groups() -> dict[str, list[str]]:
    return dict(_index()[1])


def get(name: str) -> BenchmarkSpec:
    specs = _index()[0]
    if name not in specs:
        raise unknown_name(
            "benchmark", name, list(specs) + list(groups()), hint="list them with: capsafe ls benchmarks"
        )
    return specs[name]


def expand(names: list[str] | str) -> list[str]:
    """Benchmark names with groups expanded (``xstest`` → ``xstest_safe, xstest_unsafe``)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out: list[str] = []
    for n in names:
        for m in groups().get(n, [n]):
            get(m)
            if m not in out:
                out.append(m)
    return out


@cache
def _load(name: str) -> tuple[Prompt, ...]:
    spec = get(name)
    path = data_dir() / "benchmarks" / spec.file
    prompts = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            prompts.append(Prompt(r["ext_id"], r["text"], r.get("category"), r.get("reference"), r.get("meta") or {}))
    return tuple(prompts)


def load(name: str) -> list[Prompt]:
    return list(_load(name))


def _rank(seed: int, ext_id: str) -> str:
    return hashlib.sha256(f"{seed}:{ext_id}".encode()).hexdigest()


def select(prompts: list[Prompt], *, limit: int | None = None, seed: int = 0) -> list[Prompt]:
    """A stable subset: the ``limit`` prompts with the smallest seeded hash of their ext_id."""
    if limit is None or limit >= len(prompts):
        return list(prompts)
    return sorted(prompts, key=lambda p: _rank(seed, p.ext_id))[:limit]


def ensure_in_store(store: Store, name: str) -> tuple[int, dict[str, int]]:
    """Write a shipped benchmark and all its prompts to the store (call inside a transaction).

    Returns the benchmark id and ext_id → prompt id.
    """
    spec = get(name)
    meta = {"scorer": spec.scorer} if spec.scorer else {}
    bid = store.upsert_benchmark(name, kind=spec.kind, source=spec.source, license=spec.license, meta=meta)
    ids = store.upsert_prompts(bid, [(p.ext_id, p.text, p.category, p.reference, to_json(p.meta)) for p in _load(name)])
    return bid, ids


def normalize_text(text: str) -> str:
    """Prompt text compared across sources: case and whitespace folded."""
    return " ".join(text.lower().split())

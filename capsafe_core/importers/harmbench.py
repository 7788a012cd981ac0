"""``capsafe import harmbench``: HarmBench completions or results ``{BehaviorID: [{test_case, generation, label?}]}``.

Each ``{test_case, generation}`` is one generation. ``label`` (HarmBench's classifier: 1 = harmful,
0 = not, -1 = unreadable) is a verdict of ``harmbench_cls`` (``unsafe`` / ``safe`` / ``unparsed``);
``advbench_label`` (1 = no refusal phrase) one of ``harmbench_advbench`` (``compliance`` / ``refusal``).
Behaviours come from the shipped ``harmbench`` benchmark (test split, standard and contextual) or
from ``--behaviors`` (HarmBench's behaviours CSV), which gives their categories. Test cases that
are the behaviours themselves (HarmBench's DirectRequest) map onto the shipped benchmark; an
attack's test cases, or behaviours it does not ship, need ``--benchmark NAME`` (a new benchmark).
HarmBench names the file after the model, so the experiment defaults to the file name.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capsafe_core import benchmarks, verdicts
from capsafe_core.errors import BadInput
from capsafe_core.importers.common import CheckpointArgs, Rows, check_utf8, decoding, existing, load_json, wrong_tool
from capsafe_core.importers.records import ImportResult, write_records
from capsafe_core.store import Store

SHIPPED = "harmbench"
CSV_COLUMNS = ("Behavior", "SemanticCategory", "BehaviorID")
ADVBENCH = {1: "compliance", 0: "refusal"}


@dataclass(frozen=True)
class Behavior:
    prompt: str  # HarmBench's direct request: ContextString + "\n\n---\n\n" + Behavior, or the Behavior
    category: str | None


def shipped_behaviors() -> dict[str, Behavior]:
    return {p.ext_id: Behavior(p.text, p.category) for p in benchmarks.load(SHIPPED)}


def read_behaviors(path: str | Path) -> dict[str, Behavior]:
    """HarmBench's behaviours CSV (columns Behavior, SemanticCategory, ContextString, BehaviorID, ...)."""
    p = existing(path)
    text = check_utf8(p.read_bytes(), p.name)
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise BadInput(
            f"{p.name} has no column {', '.join(missing)}; --behaviors takes HarmBench's behaviours CSV "
            f"(Behavior, FunctionalCategory, SemanticCategory, Tags, ContextString, BehaviorID)"
        )
    out = {}
    for r in reader:
        context = (r.get("ContextString") or "").strip()
        prompt = f"{r['ContextString']}\n\n---\n\n{r['Behavior']}" if context else r["Behavior"]
        out[r["BehaviorID"]] = Behavior(prompt, r["SemanticCategory"] or None)
    return out


def read_results(path: Path) -> dict[str, list[dict[str, Any]]]:
    obj = load_json(path, "harmbench")
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, list) for v in obj.values()):
        raise wrong_tool(path.name, "harmbench", obj, missing="BehaviorID → list of test cases")
    for bid, items in obj.items():
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise BadInput(f"{path.name}: {bid}[{i}] is not an object; each entry is {{test_case, generation}}")
            for key in ("test_case", "generation"):
                if not isinstance(item.get(key), str):
                    raise BadInput(
                        f"{path.name}: {bid}[{i}] has no '{key}' text; HarmBench entries are "
                        f"{{test_case, generation, label}}"
                    )
    return obj


def _benchmark(
    path: Path, results: dict[str, list[dict[str, Any]]], known: dict[str, Behavior], given: str | None
) -> str:
    """The shipped benchmark when the test cases are its behaviours; else ``--benchmark`` is needed."""
    if given and given != SHIPPED:
        return given
    shipped = shipped_behaviors()
    for bid, items in results.items():
        if bid not in shipped:
            raise BadInput(
                f"{path.name}: behaviour '{bid}' is not in the shipped harmbench benchmark (the test split's standard "
                f"and contextual behaviours); pass --benchmark NAME to import the file as a new benchmark"
            )
        norm = benchmarks.normalize_text(known[bid].prompt)
        for item in items:
            if benchmarks.normalize_text(item["test_case"]) != norm:
                raise BadInput(
                    f"{path.name}: the test case of '{bid}' is not the behaviour itself (an attack's test case); "
                    f"pass --benchmark NAME (e.g. --benchmark harmbench_gcg) to import the attack as a new benchmark"
                )
    return SHIPPED


def build_rows(path: Path, args: CheckpointArgs, behaviors: dict[str, Behavior] | None = None) -> Rows:
    results = read_results(path)
    known = {**shipped_behaviors(), **(behaviors or {})}
    benchmark = _benchmark(path, results, known, args.benchmark)
    experiment, mitigation, seed, step = args.resolve(path.name, experiment=path.stem)
    rows = Rows()
    dec = decoding("harmbench")
    seen: dict[tuple[str, str], int] = {}
    for bid, items in results.items():
        info = known.get(bid)
        for item in items:
            sample = seen.get((bid, item["test_case"]), 0)
            seen[(bid, item["test_case"])] = sample + 1
            direct = info is not None and benchmarks.normalize_text(item["test_case"]) == benchmarks.normalize_text(
                info.prompt
            )
            row = rows.add(
                experiment=experiment,
                mitigation=mitigation,
                seed=seed,
                step=step,
                model=path.stem,
                benchmark=benchmark,
                prompt_id=bid if direct else None,
                prompt=item["test_case"],
                category=info.category if info else None,
                response=item["generation"],
                sample=sample,
                decoding=dec,
            )
            if item.get("label") is not None:
                label, score = verdicts.normalize_label(item["label"], "harm", column=f"label of {bid}")
                rows.judge(row, "harmbench_cls", "harm", label, score, None)
            if item.get("advbench_label") is not None:
                value = item["advbench_label"]
                if value not in ADVBENCH:
                    raise BadInput(f"{path.name}: advbench_label {value!r} of '{bid}' is not 1 or 0; fix the file")
                rows.judge(row, "harmbench_advbench", "refusal", ADVBENCH[int(value)], None, None)
    unknown = sorted({bid for bid in results if bid not in known})
    if unknown:
        rows.note(f"No category for {len(unknown)} behaviours (e.g. {unknown[0]}); pass --behaviors CSV to add them")
    return rows


def import_harmbench(
    store: Store,
    path: str | Path,
    args: CheckpointArgs | None = None,
    *,
    behaviors: str | Path | None = None,
    replace: bool = False,
) -> ImportResult:
    """Import one HarmBench completions/results file (atomic and idempotent)."""
    p = existing(path)
    extra = read_behaviors(behaviors) if behaviors else None
    rows = build_rows(p, args or CheckpointArgs(), extra)
    gens, judgments = rows.frames()
    result = write_records(store, gens, judgments, source=p.name, benchmark_kind="safety", replace=replace)
    result.notes = [*rows.notes, *result.notes]
    return result

"""What the importers of other tools' files share: reading, recognising the tool, naming checkpoints.

Each tool importer (``inspect_log``, ``lmeval``, ``harmbench``, ``jbb``) builds generation and
judgment rows as dicts with :class:`Rows`, then writes them with ``records.write_records``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl

from capsafe_core import benchmarks
from capsafe_core.errors import BadInput
from capsafe_core.importers.records import GEN_COLUMNS, JUDGMENT_COLUMNS

COMMANDS = {
    "inspect": "capsafe import inspect",
    "lm-eval": "capsafe import lm-eval",
    "harmbench": "capsafe import harmbench",
    "jbb": "capsafe import jbb",
}
TOOL_NAMES = {
    "inspect": "an Inspect eval log",
    "lm-eval": "an lm-evaluation-harness results file",
    "lm-eval-samples": "an lm-evaluation-harness samples file",
    "harmbench": "a HarmBench completions/results file",
    "jbb": "a JailbreakBench artifact",
}


@dataclass(frozen=True)
class CheckpointArgs:
    """``--experiment/--mitigation/--seed/--step/--benchmark`` as given (``None``: read from the source)."""

    experiment: str | None = None
    mitigation: str | None = None
    step: int | None = None
    benchmark: str | None = None
    seed: int | None = None

    def resolve(
        self, source: str, *, experiment: str | None, mitigation: str | None = None, seed: Any = None
    ) -> tuple[str, str, int, int]:
        """The checkpoint (experiment, mitigation, seed, step): given values win, then the source's,
        then ``none`` / seed 0 / step 0."""
        exp = self.experiment or experiment
        if not exp:
            raise BadInput(f"{source} does not name its model; pass --experiment NAME")
        if self.seed is None and seed is not None and not _whole(seed):
            raise BadInput(f"{source} records the seed {seed!r}, which is not a whole number; pass --seed N")
        run = self.seed if self.seed is not None else int(seed) if seed is not None else 0
        return exp, self.mitigation or mitigation or "none", run, 0 if self.step is None else self.step


def _whole(value: Any) -> bool:
    try:
        return not isinstance(value, bool) and int(value) == float(value)
    except (TypeError, ValueError):
        return False


@dataclass
class Rows:
    """Generation and judgment rows of one import, numbered as ``write_records`` expects."""

    gens: list[dict[str, Any]] = field(default_factory=list)
    judgments: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, **gen: Any) -> int:
        row = len(self.gens) + 1
        self.gens.append({"row": row, **gen})
        return row

    def judge(self, row: int, evaluator: str, kind: str, label: str, score: float | None, explanation: Any) -> None:
        self.judgments.append(
            {
                "row": row,
                "evaluator": evaluator,
                "kind": kind,
                "version": "imported",
                "label": label,
                "score": score,
                "explanation": None if explanation in (None, "") else str(explanation),
            }
        )

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        return (
            pl.from_dicts(self.gens, schema=GEN_COLUMNS) if self.gens else pl.DataFrame(schema=GEN_COLUMNS),
            pl.from_dicts(self.judgments, schema=JUDGMENT_COLUMNS)
            if self.judgments
            else pl.DataFrame(schema=JUDGMENT_COLUMNS),
        )


def check_utf8(data: bytes, name: str) -> str:
    """The text of a file, or a ``BadInput`` naming the line with the first non-UTF-8 byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise BadInput(
            f"{name} line {line} is not UTF-8 (byte 0x{data[e.start]:02x}); re-save the file as UTF-8"
        ) from None


def existing(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise BadInput(f"No file {p}; check the path")
    return p


def load_json(path: Path, expected: str) -> Any:
    """A UTF-8 JSON file; a bad one is a one-line ``BadInput`` that says which tool writes it."""
    text = check_utf8(path.read_bytes(), path.name)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        first = _first_line(text)  # JSON Lines of another tool?
        if sniff(first) not in (None, expected):
            raise wrong_tool(path.name, expected, first, missing="") from None
        raise BadInput(
            f"{path.name} is not valid JSON ({e.msg} at line {e.lineno}); it is not {TOOL_NAMES[expected]}, "
            f"or it was cut short: export it again"
        ) from None


def _first_line(text: str) -> Any:
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def sniff(obj: Any) -> str | None:
    """Which tool wrote this parsed JSON document, if any we know."""
    if not isinstance(obj, dict):
        return None
    if "eval" in obj and ("samples" in obj or "plan" in obj or "version" in obj):
        return "inspect"
    if "results" in obj and ("config" in obj or "versions" in obj):
        return "lm-eval"
    if "jailbreaks" in obj and "parameters" in obj:
        return "jbb"
    if "doc_id" in obj and "resps" in obj:
        return "lm-eval-samples"
    if obj and all(isinstance(v, list) for v in obj.values()):
        first = next((x for v in obj.values() for x in v), None)
        if isinstance(first, dict) and "generation" in first:
            return "harmbench"
    return None


def wrong_tool(name: str, expected: str, obj: Any, *, missing: str) -> BadInput:
    """``x.json is a JailbreakBench artifact, not a HarmBench ...; import it with: capsafe import jbb x.json``."""
    found = sniff(obj)
    if found and found != expected:
        command = COMMANDS.get("lm-eval" if found == "lm-eval-samples" else found)
        return BadInput(f"{name} is {TOOL_NAMES[found]}, not {TOOL_NAMES[expected]}; import it with: {command} {name}")
    return BadInput(f"{name} is not {TOOL_NAMES[expected]} (it has no {missing}); check the file")


def model_name(ref: str | None) -> str | None:
    """A model's short name, so that runs of one model by different tools line up.

    ``hf/org/Llama-3-8B`` (Inspect), ``org/Llama-3-8B`` (lm-eval), ``Llama-3-8B`` (JailbreakBench)
    all give ``Llama-3-8B``.
    """
    if not ref:
        return None
    name = str(ref).rstrip("/").split("/")[-1].strip()
    return name or None


def own_benchmark(name: str, tool: str) -> str:
    """A benchmark name for a tool's prompts that does not clash with a shipped benchmark's."""
    name = name.strip() or tool
    shipped = set(benchmarks.registry()) | set(benchmarks.groups())
    return f"{name}_{tool}" if name in shipped else name


@cache
def _shipped_texts() -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for name in benchmarks.registry():
        for p in benchmarks.load(name):
            out.setdefault(benchmarks.normalize_text(p.text), []).append(name)
    return {k: tuple(v) for k, v in out.items()}


def shipped_benchmarks(texts: list[str]) -> list[str] | None:
    """Per text, the shipped benchmark holding it, if every text is in one; else ``None``.

    A text in several shipped benchmarks goes to the one that holds most of the texts.
    """
    if not texts:
        return None
    index = _shipped_texts()
    hits = [index.get(benchmarks.normalize_text(t), ()) for t in texts]
    if not all(hits):
        return None
    votes: dict[str, int] = {}
    for names in hits:
        for n in names:
            votes[n] = votes.get(n, 0) + 1
    return [max(names, key=lambda n: votes[n]) for names in hits]


def slug(text: str) -> str:
    """``PAIR`` → ``pair``, ``prompt_with_random_search`` stays: lower_snake for names."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def decoding(source: str, **config: Any) -> str:
    """The ``decoding`` JSON of imported generations: the tool and what it says of decoding."""
    return json.dumps(
        {"source": source, **{k: v for k, v in config.items() if v not in (None, {}, [])}}, sort_keys=True
    )

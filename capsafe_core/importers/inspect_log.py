"""``capsafe import inspect``: Inspect eval logs (``.eval`` and ``.json``), read with Inspect's own reader.

Each sample (per epoch) is one generation: the input's user text as the prompt, the output
completion as the response, the target as the reference; ``attachment://`` references are
resolved from the sample's attachments. Each scorer becomes the evaluator ``inspect:<scorer>``
(a scorer with a dict value, one per key: ``inspect:<scorer>.<key>``): ``C``/``I``/``P``/``N``,
booleans and numbers in [0, 1] are capability verdicts with a score; words (``unsafe``,
``refusal``, ...) are verdicts of the kind they name. The checkpoint defaults to experiment = the
model's short name (``eval.model``), mitigation ``none``, step 0; the benchmark is the task,
or the shipped benchmark whose prompts the samples are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from capsafe_core import verdicts
from capsafe_core.errors import BadInput, CapsafeError
from capsafe_core.importers.common import (
    CheckpointArgs,
    Rows,
    check_utf8,
    decoding,
    existing,
    load_json,
    model_name,
    own_benchmark,
    shipped_benchmarks,
    wrong_tool,
)
from capsafe_core.importers.records import ImportResult, write_records
from capsafe_core.store import Store

ATTACHMENT = "attachment://"
LETTERS = {"C": ("correct", 1.0), "I": ("incorrect", 0.0), "P": ("correct", 0.5), "N": ("incorrect", 0.0)}


def read_log(path: Path) -> Any:
    """An ``EvalLog`` with samples and their core attachments resolved; bad files are ``BadInput``."""
    try:
        from inspect_ai.log import read_eval_log
    except ImportError:
        raise CapsafeError(
            "Reading Inspect logs needs the inspect-ai package; install it with: pip install 'capsafe[importers]'"
        ) from None
    if path.suffix not in (".eval", ".json"):
        raise BadInput(f"{path.name} is not an Inspect log; Inspect writes .eval and .json logs")
    if path.suffix == ".json":
        check_utf8(path.read_bytes(), path.name)
    try:
        log = read_eval_log(str(path), resolve_attachments="core", exclude_fields={"events", "store"})
    except Exception as e:
        raise _unreadable(path, e) from None
    if not log.samples:
        raise BadInput(
            f"{path.name} holds no samples (written with log_samples=False, or only a header); "
            f"re-run the eval with samples logged"
        )
    return log


def _unreadable(path: Path, e: Exception) -> BadInput:
    if path.suffix == ".eval":
        why = str(e).splitlines()[0] if str(e) else ""
        return BadInput(
            f"{path.name} is not a readable .eval log ({type(e).__name__}: {why}); "
            f"the zip is truncated or corrupt: copy it again, or convert it with: inspect log convert"
        )
    obj = load_json(path, "inspect")  # not JSON at all: says so, or names the tool whose JSON Lines it is
    if not (isinstance(obj, dict) and "eval" in obj):
        return wrong_tool(path.name, "inspect", obj, missing="'eval' spec")
    listed = getattr(e, "errors", None)  # pydantic's ValidationError lists what is wrong
    errors = listed() if callable(listed) else []
    if errors:
        detail = f"{'.'.join(str(x) for x in errors[0]['loc'])}: {errors[0]['msg']}"
    else:
        detail = (str(e).splitlines() or [type(e).__name__])[0]
    return BadInput(f"{path.name} is not a valid Inspect log ({detail}); it was damaged or edited: write it again")


def _resolve(text: Any, attachments: dict[str, str]) -> Any:
    if isinstance(text, str) and text.startswith(ATTACHMENT):
        return attachments.get(text[len(ATTACHMENT) :], text)
    return text


def prompt_text(sample: Any) -> str:
    """The sample's input as text: a string as is, a chat as its user messages."""
    if isinstance(sample.input, str):
        return str(_resolve(sample.input, sample.attachments))
    parts = [_resolve(m.text, sample.attachments) for m in sample.input if m.role == "user"]
    return "\n\n".join(p for p in parts if p) or "\n\n".join(
        str(_resolve(m.text, sample.attachments)) for m in sample.input
    )


def _scalar(value: Any, kind: str, where: str) -> tuple[str, float | None] | None:
    """``(label, score)`` of one score value; ``None`` if it is no verdict (numbers outside [0, 1], lists)."""
    if kind == "capability" and isinstance(value, str) and value in LETTERS:
        return LETTERS[value]
    if isinstance(value, bool):
        label, _ = verdicts.normalize_label(value, kind, column=where)
        return label, float(value) if kind == "capability" else None
    if isinstance(value, int | float):
        if not 0.0 <= value <= 1.0:
            return None
        if kind == "capability":
            return ("correct" if value >= 0.5 else "incorrect"), float(value)
        return verdicts.normalize_label(value, kind, column=where)
    if isinstance(value, str):
        return verdicts.normalize_label(value, kind, column=where)
    return None


def _kind(values: Sequence[Any], name: str, given: dict[str, str]) -> str:
    if name in given:
        return given[name]
    words = [v for v in values if isinstance(v, str) and v not in LETTERS]
    return verdicts.infer_kind(words, column=name) if words else "capability"


def _explanation(score: Any, attachments: dict[str, str]) -> str | None:
    answer = _resolve(score.answer, attachments)
    text = _resolve(score.explanation, attachments)
    if answer is None or (isinstance(text, str) and str(answer).casefold() == text.casefold()):
        return text
    return f"answer: {answer}" + (f"\n{text}" if text else "")


def _scores(samples: list[Any]) -> dict[str, list[tuple[int, Any, Any]]]:
    """Evaluator name → ``(sample index, value, Score)``; dict values split into one evaluator per key."""
    out: dict[str, list[tuple[int, Any, Any]]] = {}
    for i, s in enumerate(samples):
        for scorer, score in (s.scores or {}).items():
            if isinstance(score.value, dict):
                for key, v in score.value.items():
                    out.setdefault(f"inspect:{scorer}.{key}", []).append((i, v, score))
            else:
                out.setdefault(f"inspect:{scorer}", []).append((i, score.value, score))
    return out


def add_log(rows: Rows, path: Path, args: CheckpointArgs, judge_kinds: dict[str, str]) -> dict[str, str]:
    """Add one log's samples and scores to ``rows``; returns benchmark name → kind (capability
    when every scorer is a capability scorer, else safety)."""
    log = read_log(path)
    spec = log.eval
    run_meta = spec.metadata if isinstance(spec.metadata, dict) else {}
    experiment, mitigation, seed, step = args.resolve(
        path.name, experiment=model_name(spec.model), seed=run_meta.get("seed")
    )
    samples = [s for s in log.samples if s.error is None]
    if len(samples) < len(log.samples):
        rows.note(f"{path.name}: left out {len(log.samples) - len(samples)} samples that ended in an error")
    if not samples:
        raise BadInput(f"{path.name}: every sample ended in an error; there is nothing to import")
    prompts = [prompt_text(s) for s in samples]
    shipped = None if args.benchmark else shipped_benchmarks(prompts)
    task_bench = args.benchmark or own_benchmark(spec.task, "inspect")
    config = spec.model_generate_config.model_dump(exclude_none=True) if spec.model_generate_config else {}
    dec = decoding("inspect", config=config)
    first_row = len(rows.gens) + 1
    for i, (s, prompt) in enumerate(zip(samples, prompts, strict=True)):
        out = s.output
        usage = out.usage if out else None
        target = s.target if isinstance(s.target, str) else json.dumps(s.target, ensure_ascii=False)
        category = s.metadata.get("category") if isinstance(s.metadata, dict) else None
        rows.add(
            experiment=experiment,
            mitigation=mitigation,
            seed=seed,
            step=step,
            model=spec.model,
            benchmark=shipped[i] if shipped else task_bench,
            prompt_id=None if shipped else str(s.id),
            prompt=prompt,
            category=category if isinstance(category, str) else None,
            reference=target or None,
            response=str(_resolve(out.completion, s.attachments)) if out else "",
            sample=s.epoch - 1,
            decoding=dec,
            n_tokens=usage.output_tokens if usage else None,
            finish_reason=out.choices[0].stop_reason if out and out.choices else None,
        )
    kinds = set()
    for name, entries in _scores(samples).items():
        kind = _kind([v for _, v, _ in entries], name, judge_kinds)
        kinds.add(kind)
        verdicts_ = [_scalar(v, kind, name) for _, v, _ in entries]
        if any(v is None for v in verdicts_):
            bad = next(v for (_, v, _), r in zip(entries, verdicts_, strict=True) if r is None)
            rows.note(f"{path.name}: left out scorer {name}: its value {bad!r} is not a verdict or a score in [0, 1]")
            continue
        for (i, _, score), verdict in zip(entries, verdicts_, strict=True):
            assert verdict is not None
            rows.judge(first_row + i, name, kind, verdict[0], verdict[1], _explanation(score, samples[i].attachments))
    kind = "capability" if kinds and kinds <= {"capability"} else "safety"
    return {task_bench: kind}


def import_inspect(
    store: Store,
    paths: Sequence[str | Path],
    args: CheckpointArgs | None = None,
    *,
    judge_kinds: dict[str, str] | None = None,
    benchmark_kind: str | None = None,
    replace: bool = False,
) -> ImportResult:
    """Import Inspect logs in one transaction (atomic and idempotent)."""
    if not paths:
        raise BadInput("No log given; pass one or more .eval or .json Inspect logs")
    rows = Rows()
    kinds: dict[str, str] = {}
    for path in paths:
        kinds.update(add_log(rows, existing(path), args or CheckpointArgs(), judge_kinds or {}))
    kind: str | dict[str, str] = benchmark_kind or kinds
    gens, judgments = rows.frames()
    source = Path(paths[0]).name if len(paths) == 1 else f"{len(paths)} Inspect logs"
    result = write_records(store, gens, judgments, source=source, benchmark_kind=kind, replace=replace)
    result.notes = [*rows.notes, *result.notes]
    return result

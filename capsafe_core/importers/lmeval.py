"""``capsafe import lm-eval``: lm-evaluation-harness ``--log_samples`` output.

PATH is a ``results_<datetime>.json``, a ``samples_<task>_<datetime>.jsonl`` or a folder holding
them (searched recursively). Each document of a task is one generation: the formatted prompt
(``arguments.gen_args_0.arg_0``) and the raw output (``resps``; for multiple-choice and
loglikelihood tasks the continuation with the highest loglikelihood). Each per-sample metric
whose values are scores in [0, 1] (``exact_match``, ``acc``, ...) becomes the capability evaluator
``lm-eval:<metric>`` (``lm-eval:<metric>/<filter>`` for a filter other than ``none``). The
checkpoint defaults to experiment = the model's short name (``pretrained=`` of
``config.model_args``), mitigation ``none``, step 0; the benchmark is the task, or the shipped
benchmark whose prompts the documents are.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capsafe_core.errors import BadInput
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
    sniff,
    wrong_tool,
)
from capsafe_core.importers.records import ImportResult, write_records
from capsafe_core.jsonl import read_lines
from capsafe_core.store import Store

RESULTS = re.compile(r"^results_(?P<date>.+)\.json$")
SAMPLES = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T[0-9.\-]+)\.jsonl$")
LINE_KEYS = ("doc_id", "arguments", "resps", "filter", "metrics")


@dataclass(frozen=True)
class Run:
    """One lm-eval run: its results file (``None`` if absent) and its samples files by task."""

    results: Path | None
    samples: dict[str, Path]


def find_runs(path: Path) -> list[Run]:
    """The runs in a file or folder, paired by the ``<datetime>`` in their names."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if RESULTS.match(p.name) or SAMPLES.match(p.name))
        if not files:
            raise BadInput(
                f"{path} holds no lm-eval output (results_<datetime>.json, samples_<task>_<datetime>.jsonl); "
                f"pass the --output_path folder of an lm-eval run with --log_samples"
            )
    elif RESULTS.match(path.name) or SAMPLES.match(path.name):
        files = [p for p in sorted(path.parent.iterdir()) if RESULTS.match(p.name) or SAMPLES.match(p.name)]
        files = [p for p in files if _date(p) == _date(path)]
    else:
        if path.suffix == ".json":
            obj = load_json(path, "lm-eval")
            if sniff(obj) not in (None, "lm-eval"):
                raise wrong_tool(path.name, "lm-eval", obj, missing="")
        raise BadInput(
            f"{path.name} is not named like lm-eval output (results_<datetime>.json or "
            f"samples_<task>_<datetime>.jsonl); pass the file lm-eval wrote, or its folder"
        )
    runs: dict[tuple[Path, str], dict[str, Any]] = {}
    for p in files:
        run = runs.setdefault((p.parent, _date(p)), {"results": None, "samples": {}})
        m = SAMPLES.match(p.name)
        if m:
            run["samples"][m["task"]] = p
        else:
            run["results"] = p
    out = [Run(r["results"], r["samples"]) for r in runs.values()]
    no_samples = [r.results for r in out if r.results is not None and not r.samples]
    if no_samples and all(not r.samples for r in out):
        assert no_samples[0] is not None
        read_results(no_samples[0])  # another tool's file says so first
        raise BadInput(
            f"{no_samples[0].name} has no samples_<task>_<datetime>.jsonl next to it; lm-eval writes them "
            f"with --log_samples: re-run with --log_samples --output_path DIR"
        )
    return [r for r in out if r.samples]


def _date(p: Path) -> str:
    m = RESULTS.match(p.name) or SAMPLES.match(p.name)
    return m["date"] if m else ""


def read_results(path: Path) -> dict[str, Any]:
    obj = load_json(path, "lm-eval")
    if not isinstance(obj, dict) or "results" not in obj or not isinstance(obj.get("config"), dict):
        raise wrong_tool(path.name, "lm-eval", obj, missing="'results' and 'config'")
    return obj


def model_ref(results: dict[str, Any] | None) -> str | None:
    """``pretrained=`` (or ``model=``) of ``config.model_args``, else ``config.model``."""
    if results is None:
        return None
    config = results["config"]
    args = config.get("model_args")
    if isinstance(args, str):
        args = dict(kv.split("=", 1) for kv in args.split(",") if "=" in kv)
    if isinstance(args, dict):
        for key in ("pretrained", "model", "path", "engine"):
            if args.get(key):
                return str(args[key])
    return str(config["model"]) if config.get("model") else None


def run_seed(results: dict[str, Any] | None) -> Any:
    """The fine-tuning run's seed, where the run recorded one with ``--metadata '{"seed": N}'`` (lm-eval
    keeps it in ``config.metadata``); lm-eval's own ``random_seed`` seeds the evaluation, not the model."""
    meta = results.get("config", {}).get("metadata") if results else None
    return meta.get("seed") if isinstance(meta, dict) else None


def read_samples(path: Path) -> list[dict[str, Any]]:
    text = check_utf8(path.read_bytes(), path.name)
    lines = []
    for i, obj in read_lines(text, path.name):
        if not isinstance(obj, dict):
            raise BadInput(f"{path.name} line {i} is not a JSON object; lm-eval writes one {{...}} per line")
        for key in LINE_KEYS:
            if key not in obj:
                raise BadInput(
                    f"{path.name} line {i} has no '{key}'; it is not an lm-eval samples file "
                    f"(written with --log_samples)"
                )
        lines.append({**obj, "_line": i})
    if not lines:
        raise BadInput(f"{path.name} is empty; nothing to import")
    return lines


def response(line: dict[str, Any]) -> str | None:
    """The model's output: the generated text, or the most likely continuation; ``None`` for rolling loglikelihood."""
    resps = line["resps"]
    if resps and isinstance(resps[0], list) and resps[0] and isinstance(resps[0][0], str):
        return str(resps[0][0])
    choices = []
    for i, r in enumerate(resps):
        if isinstance(r, list) and r and isinstance(r[0], list) and len(r[0]) == 2:
            choices.append((float(r[0][0]), i))
    if not choices:
        return None
    best = max(choices)[1]
    cont = line["arguments"].get(f"gen_args_{best}", {}).get("arg_1")
    return cont.strip() if isinstance(cont, str) else None


def reference(line: dict[str, Any]) -> str | None:
    """The target; for multiple choice the text of the right choice."""
    target = line.get("target")
    if target is None:
        return None
    args = line["arguments"]
    if len(args) > 1 and str(target).isdigit():
        choice = args.get(f"gen_args_{target}", {}).get("arg_1")
        if isinstance(choice, str):
            return choice.strip()
    return target if isinstance(target, str) else json.dumps(target, ensure_ascii=False)


def explanation(line: dict[str, Any], response: str) -> str | None:
    """What the metric saw: the filtered response where it differs, or each choice's loglikelihood."""
    kept = line.get("filtered_resps")
    if not isinstance(kept, list) or not kept:
        return None
    if isinstance(kept[0], str):
        return f"filtered response: {kept[0]}" if kept[0] != response else None
    lls = []
    for i, r in enumerate(kept):
        cont = line["arguments"].get(f"gen_args_{i}", {}).get("arg_1")
        if isinstance(r, list) and r and isinstance(cont, str):
            lls.append(f"{cont.strip()}: {float(r[0]):.3f}")
    return "loglikelihood per choice: " + ", ".join(lls) if lls else None


def _score(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and 0.0 <= value <= 1.0:
        return float(value)
    return None


def _prompt(line: dict[str, Any]) -> str:
    first = line["arguments"].get("gen_args_0", {})
    prompt = first.get("arg_0") if isinstance(first, dict) else None
    if not isinstance(prompt, str):
        raise BadInput(
            f"line {line['_line']} has no prompt (arguments.gen_args_0.arg_0); it is not lm-eval --log_samples output"
        )
    return prompt


def _benchmarks(task: str, lines: list[dict[str, Any]], given: str | None) -> tuple[list[str], str]:
    """Per document, its benchmark, and the field its prompt text comes from (``prompt`` or a doc field)."""
    if given:
        return [given] * len(lines), "prompt"
    prompts = [_prompt(line) for line in lines]
    shipped = shipped_benchmarks(prompts)
    if shipped:
        return shipped, "prompt"
    doc = lines[0].get("doc")
    for key in doc if isinstance(doc, dict) else {}:
        texts = [ln.get("doc", {}).get(key) for ln in lines]
        if all(isinstance(t, str) for t in texts):
            shipped = shipped_benchmarks(texts)
            if shipped:
                return shipped, key
    return [own_benchmark(task, "lmeval")] * len(lines), "prompt"


def add_task(
    rows: Rows,
    path: Path,
    task: str,
    checkpoint: tuple[str, str, int, int],
    *,
    model: str | None,
    nshot: Any,
    benchmark: str | None,
) -> None:
    """Add one task's documents (one generation each) and their per-sample metrics to ``rows``."""
    lines = read_samples(path)
    by_doc: dict[Any, list[dict[str, Any]]] = {}
    for line in lines:
        by_doc.setdefault(line["doc_id"], []).append(line)
    firsts = [group[0] for group in by_doc.values()]
    maybe = [response(line) for line in firsts]
    resp = [r for r in maybe if r is not None]
    if len(resp) < len(maybe):
        rows.note(f"{path.name}: left out task {task}: it scores loglikelihoods of given text, not responses")
        return
    try:
        benches, field = _benchmarks(task, firsts, benchmark)
    except BadInput as e:
        raise BadInput(f"{path.name} {e}") from None
    own = own_benchmark(task, "lmeval")
    experiment, mitigation, seed, step = checkpoint
    skipped: dict[str, Any] = {}
    for line, text, bench in zip(firsts, resp, benches, strict=True):
        gen_args = line["arguments"]["gen_args_0"].get("arg_1")
        row = rows.add(
            experiment=experiment,
            mitigation=mitigation,
            seed=seed,
            step=step,
            model=model,
            benchmark=bench,
            prompt_id=str(line["doc_id"]) if bench == own else f"{task}/{line['doc_id']}" if benchmark else None,
            prompt=_prompt(line) if field == "prompt" else line["doc"][field],
            reference=reference(line),
            response=text,
            decoding=decoding(
                "lm-eval", gen_kwargs=gen_args if isinstance(gen_args, dict) else None, num_fewshot=nshot
            ),
        )
        for filtered in by_doc[line["doc_id"]]:
            for metric in filtered["metrics"]:
                value = filtered.get(metric)
                score = _score(value)
                if score is None:
                    skipped.setdefault(metric, value)
                    continue
                name = f"lm-eval:{metric}" + ("" if filtered["filter"] == "none" else f"/{filtered['filter']}")
                label = "correct" if score >= 0.5 else "incorrect"
                rows.judge(row, name, "capability", label, score, explanation(filtered, text))
    for metric, value in skipped.items():
        rows.note(f"{path.name}: left out metric {metric}: its per-sample value {value!r} is not a score in [0, 1]")


def import_lm_eval(
    store: Store, path: str | Path, args: CheckpointArgs | None = None, *, replace: bool = False
) -> ImportResult:
    """Import lm-eval results and samples (a file or a folder; atomic and idempotent)."""
    p = existing(path)
    args = args or CheckpointArgs()
    rows = Rows()
    kinds: dict[str, str] = {}
    for run in find_runs(p):
        results = read_results(run.results) if run.results else None
        ref = model_ref(results)
        source = run.results.name if run.results else next(iter(run.samples.values())).name
        if results is None and not args.experiment:
            raise BadInput(
                f"{source} has no results_<datetime>.json next to it to read the model from; "
                f"pass --experiment NAME, or import the folder lm-eval wrote"
            )
        checkpoint = args.resolve(source, experiment=model_name(ref), seed=run_seed(results))
        nshots = results.get("n-shot", {}) if results else {}
        for task, sample_path in sorted(run.samples.items()):
            first = len(rows.gens)
            nshot = nshots.get(task) if isinstance(nshots, dict) else None
            add_task(rows, sample_path, task, checkpoint, model=ref, nshot=nshot, benchmark=args.benchmark)
            for g in rows.gens[first:]:
                kinds.setdefault(g["benchmark"], "capability")
    if not rows.gens:
        raise BadInput(f"{p.name}: no task with responses to import; " + "; ".join(rows.notes))
    gens, judgments = rows.frames()
    result = write_records(store, gens, judgments, source=p.name, benchmark_kind=kinds, replace=replace)
    result.notes = [*rows.notes, *result.notes]
    return result

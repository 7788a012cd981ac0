"""checkpoint × benchmarks → generations, batched and resumable, then the verdicts they lack.

``run_checkpoint`` validates everything (benchmarks, evaluators, model, server) before its first
write, then generates only the prompts that have no stored generation yet and commits each batch
in its own transaction: an interrupt (Ctrl-C or a kill) loses at most the batch in flight, and
the same command resumes. Nothing is loaded that has nothing to do, so a repeat of a finished run
returns in about a second.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from capsafe_core import benchmarks
from capsafe_core.backends import Backend, Completion, Decoding, chat, load_backend
from capsafe_core.errors import BadInput
from capsafe_core.runner.judging import (
    evaluator_plan,
    experiment_context,
    judge,
    judge_options,
    reference_model_of,
    usable_reference,
)
from capsafe_core.runner.progress import progress_bar
from capsafe_core.store import Store, now, runs


@dataclass(frozen=True)
class RunSpec:
    """One checkpoint to evaluate (the options of ``capsafe run``)."""

    experiment: str
    model: str
    benchmarks: Sequence[str]
    mitigation: str = "none"
    step: int = 0
    run_seed: int = 0  # the checkpoint's run: repeated fine-tuning runs of one mitigation differ in it
    limit: int | None = None
    limits: dict[str, int | None] = field(default_factory=dict)  # per-benchmark limit, overrides ``limit``
    seed: int = 0  # of the prompt subset and of sampling (the same prompts for every checkpoint)
    evaluators: Sequence[str] | None = None  # None = the default set
    backend: str = "transformers"
    base_url: str | None = None
    decoding: Decoding = field(default_factory=Decoding)
    batch_size: int | None = None  # None: the backend's (transformers: from free memory), 16 for a server
    device_map: str | None = None
    base_model: str | None = None  # an adapter's base (Hub id or folder), overriding adapter_config.json
    trust_remote_code: bool = False
    chat_template: str | None = None  # a Jinja chat template file, for a model without one
    no_chat_template: bool = False
    dtype: str = "auto"
    device: str = "auto"
    reference_model: str | None = None  # for perplexity; default: the experiment's step-0 model
    concurrency: int = 8
    timeout: float = 120.0
    max_retries: int = 3
    experiment_fields: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    judge_options: dict[str, Any] = field(default_factory=dict)  # judge_model, judge_backend, ... (LLM judges)


@dataclass
class RunResult:
    generations_added: int = 0
    generations_stored: int = 0
    judgments_added: int = 0
    judgments_stored: int = 0
    seconds: float = 0.0
    per_evaluator: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"generations: {self.generations_added} added, {self.generations_stored} already stored; "
            f"judgments: {self.judgments_added} added, {self.judgments_stored} already stored "
            f"({self.seconds:.1f} s)"
        )


def _todo_prompts(
    store: Store, ck_id: int | None, prompts: list[tuple[str, benchmarks.Prompt]], decoding: str
) -> list[tuple[str, benchmarks.Prompt]]:
    if ck_id is None:
        return prompts
    done = runs.generated_prompts(store, ck_id, decoding)
    return [(b, p) for b, p in prompts if (b, p.ext_id) not in done]


def checkpoint_prompts(spec: RunSpec) -> tuple[list[str], list[tuple[str, benchmarks.Prompt]]]:
    """The benchmarks (groups expanded) and the prompts ``spec`` asks for; checks benchmarks and limits."""
    bench_names = benchmarks.expand(list(spec.benchmarks))
    if not bench_names:
        raise BadInput("No benchmarks given; pass --benchmarks a,b (list them with: capsafe ls benchmarks)")
    if spec.limit is not None and spec.limit < 1:
        raise BadInput(f"--limit {spec.limit} must be at least 1")
    prompts = [
        (b, p)
        for b in bench_names
        for p in benchmarks.select(benchmarks.load(b), limit=spec.limits.get(b, spec.limit), seed=spec.seed)
    ]
    return bench_names, prompts


def todo_of(
    store: Store, spec: RunSpec, prompts: list[tuple[str, benchmarks.Prompt]]
) -> list[tuple[str, benchmarks.Prompt]]:
    """The prompts of ``spec``'s checkpoint that have no stored generation under its decoding yet."""
    ck = runs.checkpoint_id(store, spec.experiment, spec.mitigation, spec.step, spec.run_seed)
    return _todo_prompts(store, ck, prompts, spec.decoding.to_json())


def write_meta(store: Store, spec: RunSpec, bench_names: list[str], info: dict[str, Any] | None) -> dict[str, Any]:
    """Experiment, checkpoint (with the run's meta, from the backend's ``describe``) and prompts, inside the
    caller's transaction; returns ``exp_id``, ``ck_id`` and ``prompt_ids`` ((benchmark, ext_id) → id)."""
    exp_id = store.upsert_experiment(spec.experiment, **spec.experiment_fields)
    meta = {"run": _run_meta(spec, info)} if info is not None else None
    ck_id = store.upsert_checkpoint(
        exp_id, spec.mitigation, spec.step, seed=spec.run_seed, model_ref=spec.model, meta=meta
    )
    ids: dict[tuple[str, str], int] = {}
    for b in bench_names:
        _, by_ext = benchmarks.ensure_in_store(store, b)
        ids.update({(b, e): i for e, i in by_ext.items()})
    return {"exp_id": exp_id, "ck_id": ck_id, "prompt_ids": ids}


def write_batch(
    store: Store, spec: RunSpec, state: dict[str, Any], batch: Sequence[tuple[str, str]], outs: Sequence[Any]
) -> None:
    """One batch of completions (``batch``: (benchmark, ext_id) per completion) in the caller's transaction."""
    decoding, stamp = spec.decoding.to_json(), now()
    ck_id, prompt_ids = state["ck_id"], state["prompt_ids"]
    store.upsert_generations(
        (ck_id, prompt_ids[(b, e)], 0, decoding, o.text, o.n_tokens, o.finish_reason, stamp)
        for (b, e), o in zip(batch, outs, strict=True)
    )


def judge_checkpoint(
    store: Store, spec: RunSpec, prompts: list[tuple[str, benchmarks.Prompt]], state: dict[str, Any], *, progress: bool
) -> Any:
    """Every missing verdict of the checkpoint's generations of ``prompts`` (``judging.judge``'s result)."""
    plan = evaluator_plan(spec.evaluators, benchmarks.expand(list(spec.benchmarks)))
    exp_id, ck_id, prompt_ids = state["exp_id"], state["ck_id"], state["prompt_ids"]
    wanted = [prompt_ids[(b, p.ext_id)] for b, p in prompts]
    scope = runs.generation_ids(store, ck_id, spec.decoding.to_json(), wanted)
    config = {
        "reference_model": spec.reference_model
        or usable_reference(reference_model_of(store, exp_id, ""))
        or spec.model,
        "device": spec.device,
        "dtype": spec.dtype,
        **experiment_context(store, exp_id),
        **spec.judge_options,
    }
    return judge(store, plan, generation_ids=scope, config=config, progress=progress)


def run_checkpoint(store: Store, spec: RunSpec, *, progress: bool = True, backend: Backend | None = None) -> RunResult:
    """Generate and judge one checkpoint on the given benchmarks (see the module docstring)."""
    t0 = time.perf_counter()
    bench_names, prompts = checkpoint_prompts(spec)
    evaluator_plan(spec.evaluators, bench_names)  # unknown evaluators refused before anything runs
    todo = todo_of(store, spec, prompts)
    result = RunResult(generations_stored=len(prompts) - len(todo))

    owned = False
    if todo and backend is None:
        backend = load_backend(spec.backend, model=spec.model, **backend_options_of(spec))
        owned = True
    state: dict[str, Any] = {}
    try:
        if todo:
            assert backend is not None
            result.generations_added = _generate(store, backend, spec, todo, bench_names, state, progress)
        else:
            with store.transaction():
                state.update(write_meta(store, spec, bench_names, None))
    finally:
        if owned and backend is not None:
            backend.close()
    judged = judge_checkpoint(store, spec, prompts, state, progress=progress)
    result.judgments_added = judged.judgments_added
    result.judgments_stored = judged.judgments_stored
    result.per_evaluator = judged.per_evaluator
    result.seconds = time.perf_counter() - t0
    return result


def generate_batches(
    backend: Backend, spec: RunSpec, todo: Sequence[tuple[str, benchmarks.Prompt]]
) -> Iterator[tuple[list[tuple[str, str]], list[Completion]]]:
    """``todo``'s completions batch by batch, as ((benchmark, ext_id) per prompt, completions); longest
    prompts first, so each batch holds prompts of similar length (less padding). The runner and every
    sweep executor generate through this."""
    todo = sorted(todo, key=lambda bp: -len(bp[1].text))
    size = spec.batch_size or getattr(backend, "batch_size", None) or 16
    for start in range(0, len(todo), size):
        batch = todo[start : start + size]
        outs = backend.generate([chat(p.text, spec.decoding) for _, p in batch], spec.decoding)
        yield [(b, p.ext_id) for b, p in batch], outs


def _generate(
    store: Store,
    backend: Backend,
    spec: RunSpec,
    todo: list[tuple[str, benchmarks.Prompt]],
    bench_names: list[str],
    state: dict[str, Any],
    progress: bool,
) -> int:
    """Generate ``todo`` in batches, each committed on its own; the first also writes experiment,
    checkpoint and prompts, so a run that fails before its first generation leaves the database as it was."""
    added = 0
    bar = progress_bar(f"generate {spec.mitigation}@{spec.step}", len(todo), progress)
    try:
        for keys, outs in generate_batches(backend, spec, todo):
            with store.transaction():
                if not added:
                    state.update(write_meta(store, spec, bench_names, backend.describe()))
                write_batch(store, spec, state, keys, outs)
            added += len(keys)
            bar.update(len(keys))
    finally:
        bar.close()
    return added


def _run_meta(spec: RunSpec, info: dict[str, Any]) -> dict[str, Any]:
    return {
        "command": spec.command,
        "decoding": asdict(spec.decoding),
        "seed": spec.seed,
        "run_seed": spec.run_seed,
        "limit": spec.limit,
        "benchmarks": list(spec.benchmarks),
        "backend": info,
        "started_at": now(),
        "platform": platform.platform(),
    }


def decoding_from_options(
    *, max_new_tokens: int, temperature: float, top_p: float, seed: int, system_prompt: str | None
) -> Decoding:
    if max_new_tokens < 1:
        raise BadInput(f"--max-new-tokens {max_new_tokens} must be at least 1")
    if temperature < 0:
        raise BadInput(f"--temperature {temperature} must be 0 (greedy) or more")
    return Decoding(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, system_prompt=system_prompt
    )


def run_spec(options: dict[str, Any], *, command: str | None = None) -> RunSpec:
    """A ``RunSpec`` from ``capsafe run``'s options (comma lists split, decoding and judge model checked)."""
    o = dict(options)
    o["run_seed"] = o.pop("seed", 0)
    o["seed"] = o.pop("sampling_seed", 0)
    if o.get("backend") == "openai" and not o.get("base_url"):
        raise BadInput("--backend openai needs --base-url, e.g. http://127.0.0.1:8000/v1")
    judge = judge_options(
        judge_model=o.pop("judge_model", None),
        judge_backend=o.pop("judge_backend", "transformers"),
        judge_base_url=o.pop("judge_base_url", None),
    )
    decoding = decoding_from_options(
        max_new_tokens=o.pop("max_new_tokens"),
        temperature=o.pop("temperature"),
        top_p=o.pop("top_p"),
        seed=o["seed"],
        system_prompt=o.pop("system_prompt", None),
    )
    target = o.pop("capability_target", None)
    evaluator_names = o.pop("evaluators", None)
    return RunSpec(
        benchmarks=str(o.pop("bench")).split(","),
        evaluators=evaluator_names.split(",") if evaluator_names else None,
        decoding=decoding,
        judge_options=judge,
        experiment_fields={"capability_target": target} if target is not None else {},
        command=command,
        **o,
    )


def backend_options_of(spec: RunSpec) -> dict[str, Any]:
    """The options of ``spec``'s backend (each backend takes its own; see ``backends.load_backend``)."""
    if spec.backend == "openai":
        return {
            "base_url": spec.base_url or "http://127.0.0.1:8000/v1",
            "concurrency": spec.concurrency,
            "timeout": spec.timeout,
            "max_retries": spec.max_retries,
        }
    return {
        "batch_size": spec.batch_size,
        "dtype": spec.dtype,
        "device": spec.device,
        "device_map": spec.device_map,
        "base_model": spec.base_model,
        "trust_remote_code": spec.trust_remote_code,
        "chat_template": read_template(spec.chat_template),
        "use_chat_template": not spec.no_chat_template,
    }


def read_template(path: str | None) -> str | None:
    """The text of a ``--chat-template`` file."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"No chat template file {p}; pass a Jinja chat template file to --chat-template")
    return p.read_text(encoding="utf-8")

"""checkpoint × benchmarks → generations → judgments, batched and resumable.

``run_checkpoint`` validates everything (benchmarks, evaluators, model, server) before its first
write, then generates only the prompts that have no stored generation yet and commits each batch
in its own transaction: an interrupt (Ctrl-C or a kill) loses at most the batch in flight, and
the same command resumes. ``judge`` gives stored generations the verdicts they lack, evaluator by
evaluator, also one transaction per batch. Nothing is loaded that has nothing to do, so a repeat
of a finished run returns in about a second.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from capsafe_core import benchmarks, evaluators
from capsafe_core.backends import Backend, Decoding, chat, load_backend
from capsafe_core.errors import BadInput
from capsafe_core.evaluators import EvaluatorSpec, Item, Verdict
from capsafe_core.store import Store, now, runs


@dataclass(frozen=True)
class RunSpec:
    """One checkpoint to evaluate (the options of ``capsafe run``)."""

    experiment: str
    model: str
    benchmarks: Sequence[str]
    mitigation: str = "none"
    step: int = 0
    limit: int | None = None
    limits: dict[str, int | None] = field(default_factory=dict)  # per-benchmark limit, overrides ``limit``
    seed: int = 0
    evaluators: Sequence[str] | None = None  # None = the default set
    backend: str = "transformers"
    base_url: str | None = None
    decoding: Decoding = field(default_factory=Decoding)
    batch_size: int = 16
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


def _progress(desc: str, total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="it",
        disable=not enabled or total == 0,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=True,
    )


def evaluator_plan(names: Sequence[str] | None, bench_names: Sequence[str]) -> list[EvaluatorSpec]:
    """The evaluators to run: the chosen (or default) ones, each capability benchmark's scorer, and
    what they require."""
    wanted = list(names) if names is not None else [s.name for s in evaluators.REGISTRY.values() if s.default]
    for b in bench_names:
        spec = benchmarks.get(b)
        if spec.kind == "capability" and spec.scorer and spec.scorer not in wanted:
            wanted.append(spec.scorer)
    return evaluators.resolve(wanted)


def _todo_prompts(
    store: Store, ck_id: int | None, prompts: list[tuple[str, benchmarks.Prompt]], decoding: str
) -> list[tuple[str, benchmarks.Prompt]]:
    if ck_id is None:
        return prompts
    done = runs.generated_prompts(store, ck_id, decoding)
    return [(b, p) for b, p in prompts if (b, p.ext_id) not in done]


def run_checkpoint(store: Store, spec: RunSpec, *, progress: bool = True, backend: Backend | None = None) -> RunResult:
    """Generate and judge one checkpoint on the given benchmarks (see the module docstring)."""
    t0 = time.perf_counter()
    bench_names = benchmarks.expand(list(spec.benchmarks))
    if not bench_names:
        raise BadInput("No benchmarks given; pass --benchmarks a,b (list them with: capsafe ls benchmarks)")
    plan = evaluator_plan(spec.evaluators, bench_names)
    if spec.limit is not None and spec.limit < 1:
        raise BadInput(f"--limit {spec.limit} must be at least 1")
    prompts = [
        (b, p)
        for b in bench_names
        for p in benchmarks.select(benchmarks.load(b), limit=spec.limits.get(b, spec.limit), seed=spec.seed)
    ]
    decoding = spec.decoding.to_json()
    todo = _todo_prompts(
        store, runs.checkpoint_id(store, spec.experiment, spec.mitigation, spec.step), prompts, decoding
    )
    result = RunResult(generations_stored=len(prompts) - len(todo))

    owned = False
    if todo and backend is None:
        backend = load_backend(
            spec.backend,
            model=spec.model,
            base_url=spec.base_url or "http://127.0.0.1:8000/v1",
            batch_size=spec.batch_size,
            dtype=spec.dtype,
            device=spec.device,
            concurrency=spec.concurrency,
            timeout=spec.timeout,
            max_retries=spec.max_retries,
        )
        owned = True
    state: dict[str, Any] = {}

    def write_meta() -> None:
        """Experiment, checkpoint and prompts: written with the first batch, so a run that fails before
        its first generation leaves the database as it was."""
        state["exp_id"] = store.upsert_experiment(spec.experiment, **spec.experiment_fields)
        meta = {"run": _run_meta(spec, backend)} if backend is not None else None
        state["ck_id"] = store.upsert_checkpoint(
            state["exp_id"], spec.mitigation, spec.step, model_ref=spec.model, meta=meta
        )
        ids: dict[tuple[str, str], int] = {}
        for b in bench_names:
            _, by_ext = benchmarks.ensure_in_store(store, b)
            ids.update({(b, e): i for e, i in by_ext.items()})
        state["prompt_ids"] = ids

    try:
        if todo:
            assert backend is not None
            result.generations_added = _generate(store, backend, spec, todo, write_meta, state, decoding, progress)
        else:
            with store.transaction():
                write_meta()
    finally:
        if owned and backend is not None:
            backend.close()
    exp_id, ck_id, prompt_ids = state["exp_id"], state["ck_id"], state["prompt_ids"]
    wanted = [prompt_ids[(b, p.ext_id)] for b, p in prompts]
    scope = runs.generation_ids(store, ck_id, decoding, wanted)
    config = {
        "reference_model": spec.reference_model or _reference_model(store, exp_id, spec.model),
        "device": spec.device,
        "dtype": spec.dtype,
        **spec.judge_options,
    }
    judged = judge(store, plan, generation_ids=scope, config=config, progress=progress)
    result.judgments_added = judged.judgments_added
    result.judgments_stored = judged.judgments_stored
    result.per_evaluator = judged.per_evaluator
    result.seconds = time.perf_counter() - t0
    return result


def _generate(
    store: Store,
    backend: Backend,
    spec: RunSpec,
    todo: list[tuple[str, benchmarks.Prompt]],
    write_meta: Callable[[], None],
    state: dict[str, Any],
    decoding: str,
    progress: bool,
) -> int:
    # longest first, so each batch holds prompts of similar length (less padding)
    todo = sorted(todo, key=lambda bp: -len(bp[1].text))
    added = 0
    bar = _progress(f"generate {spec.mitigation}@{spec.step}", len(todo), progress)
    try:
        for start in range(0, len(todo), spec.batch_size):
            batch = todo[start : start + spec.batch_size]
            outs = backend.generate([chat(p.text, spec.decoding) for _, p in batch], spec.decoding)
            stamp = now()
            with store.transaction():
                if start == 0:
                    write_meta()
                ck_id, prompt_ids = state["ck_id"], state["prompt_ids"]
                store.upsert_generations(
                    (ck_id, prompt_ids[(b, p.ext_id)], 0, decoding, o.text, o.n_tokens, o.finish_reason, stamp)
                    for (b, p), o in zip(batch, outs, strict=True)
                )
            added += len(batch)
            bar.update(len(batch))
    finally:
        bar.close()
    return added


def _reference_model(store: Store, experiment_id: int, fallback: str) -> str:
    return runs.reference_model(store, experiment_id) or fallback


def _run_meta(spec: RunSpec, backend: Backend) -> dict[str, Any]:
    info = backend.describe()
    return {
        "command": spec.command,
        "decoding": asdict(spec.decoding),
        "seed": spec.seed,
        "limit": spec.limit,
        "benchmarks": list(spec.benchmarks),
        "backend": info,
        "started_at": now(),
        "platform": platform.platform(),
    }


# --- judging ------------------------------------------------------------------------------


def _chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _priors(store: Store, names: Sequence[str], generation_ids: Sequence[int]) -> dict[int, dict[str, Verdict]]:
    """The verdicts an evaluator requires (current versions), per generation."""
    wanted = [(n, evaluators.get(n).version) for n in names]
    stored = runs.verdicts_of(store, wanted, generation_ids)
    return {g: {n: Verdict(v.label, v.score, v.explanation) for n, v in by.items()} for g, by in stored.items()}


@dataclass
class JudgeResult:
    judgments_added: int = 0
    judgments_stored: int = 0
    per_evaluator: dict[str, int] = field(default_factory=dict)


def judge(
    store: Store,
    plan: Sequence[EvaluatorSpec],
    *,
    generation_ids: Sequence[int],
    config: dict[str, Any] | None = None,
    progress: bool = True,
    batch_size: int = 64,
) -> JudgeResult:
    """Add the verdicts each evaluator of ``plan`` is missing on ``generation_ids``."""
    result = JudgeResult()
    config = dict(config or {})
    for spec in plan:
        ev_config = evaluator_config(spec, config)
        check_judge_model(store, spec, ev_config)
        with store.transaction():
            ev_id = store.upsert_evaluator(spec.name, kind=spec.kind, version=spec.version, config=ev_config)
        applicable = runs.judge_inputs(store, generation_ids, spec.applies_to)
        todo = runs.judge_inputs(store, generation_ids, spec.applies_to, missing_for=ev_id)
        result.judgments_stored += len(applicable) - len(todo)
        result.per_evaluator[spec.name] = 0
        if not todo:
            continue
        fn = evaluators.build(spec.name, **config)
        bar = _progress(f"judge {spec.name}", len(todo), progress)
        try:
            for batch in _chunks(todo, batch_size):
                priors = _priors(store, spec.requires, [r.generation_id for r in batch])
                items = [
                    Item(
                        prompt=r.prompt,
                        response=r.response,
                        reference=r.reference,
                        benchmark_kind=r.benchmark_kind,
                        category=r.category,
                        finish_reason=r.finish_reason,
                        n_tokens=r.n_tokens,
                        prior=priors.get(r.generation_id, {}),
                    )
                    for r in batch
                ]
                verdicts = fn(items)
                if len(verdicts) != len(items):
                    raise RuntimeError(f"evaluator {spec.name} returned {len(verdicts)} verdicts for {len(items)}")
                stamp = now()
                with store.transaction():
                    store.upsert_judgments(
                        (r.generation_id, ev_id, v.label, v.score, v.explanation, stamp)
                        for r, v in zip(batch, verdicts, strict=True)
                    )
                result.judgments_added += len(batch)
                result.per_evaluator[spec.name] += len(batch)
                bar.update(len(batch))
        finally:
            bar.close()
    return result


def evaluator_config(spec: EvaluatorSpec, config: dict[str, Any]) -> dict[str, Any]:
    """What is stored with an evaluator: its description and, for an LLM judge, the judge model."""
    out: dict[str, Any] = {"description": spec.description}
    if spec.factory.startswith("capsafe_core.evaluators.llm_judges:"):
        from capsafe_core.evaluators.llm_judges import DEFAULT_JUDGE

        out["judge_model"] = config.get("judge_model") or DEFAULT_JUDGE
        out["judge_backend"] = config.get("judge_backend") or "transformers"
    return out


def check_judge_model(store: Store, spec: EvaluatorSpec, wanted: dict[str, Any]) -> None:
    """One judge model per LLM-judge evaluator in a database: verdicts of two judge models under one
    name would be silently mixed."""
    if "judge_model" not in wanted:
        return
    stored = runs.evaluator_config(store, spec.name, spec.version) or {}
    if stored.get("judge_model") and stored["judge_model"] != wanted["judge_model"]:
        raise BadInput(
            f"Evaluator '{spec.name}' in this database was judged by '{stored['judge_model']}', not "
            f"'{wanted['judge_model']}'; use another database (or --db copy.db) to compare judge models"
        )


def judge_stored(
    store: Store,
    names: Sequence[str] | str | None,
    *,
    experiment: str | None = None,
    benchmark: str | None = None,
    reference_model: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    progress: bool = True,
    judge_options: dict[str, Any] | None = None,
) -> JudgeResult:
    """``capsafe judge``: add evaluators to the generations already stored (per experiment)."""
    plan = evaluators.resolve(names)
    frame = runs.generations_in_scope(store, experiment=experiment, benchmark=benchmark)
    total = JudgeResult()
    if frame.height == 0:
        return total
    for (exp_id,), part in frame.group_by(["experiment_id"], maintain_order=True):
        fallback = next((m for m in part["model_ref"].to_list() if m), "")
        ref = reference_model or _reference_model(store, int(exp_id), fallback)
        res = judge(
            store,
            plan,
            generation_ids=part["generation_id"].to_list(),
            config={"reference_model": ref or None, "device": device, "dtype": dtype, **(judge_options or {})},
            progress=progress,
        )
        total.judgments_added += res.judgments_added
        total.judgments_stored += res.judgments_stored
        for k, v in res.per_evaluator.items():
            total.per_evaluator[k] = total.per_evaluator.get(k, 0) + v
    return total


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


__all__ = ["JudgeResult", "RunResult", "RunSpec", "decoding_from_options", "judge", "judge_stored", "run_checkpoint"]

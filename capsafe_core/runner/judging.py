"""Stored generations → the verdicts each evaluator is missing, evaluator by evaluator, one transaction
per batch (an interrupt loses at most the batch in flight)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from capsafe_core import benchmarks, evaluators
from capsafe_core.errors import BadInput, CapsafeError
from capsafe_core.evaluators import EvaluatorSpec, Item, Verdict
from capsafe_core.runner.progress import progress_bar
from capsafe_core.store import Store, now, runs


def reference_model_of(store: Store, experiment_id: int, fallback: str) -> str:
    """The model perplexity is measured under: the experiment's base (step-0) model, else ``fallback``."""
    return runs.reference_model(store, experiment_id) or fallback


NO_REFERENCE = "no reference model: pass --reference-model (smollm2-135m-instruct for a generic one)"


def usable_reference(ref: str | None) -> str | None:
    """``ref`` where it names a model this machine can load (an alias, a folder, a GGUF file, a cached Hub
    id), else None: an imported experiment's base model (``gpt-4``, an uncached Hub id) is not one."""
    if not ref:
        return None
    try:
        from capsafe_core.backends.models import resolve_model

        resolve_model(ref)
    except (CapsafeError, ImportError, OSError):
        return None
    return ref


def experiment_context(store: Store, experiment_id: int) -> dict[str, Any]:
    """What evaluators learn from the whole experiment: its task's answer formats (``task_format``)."""
    from capsafe_core.evaluators.leakage import learn_formats

    return {"answer_formats": tuple(learn_formats(runs.capability_texts(store, experiment_id)))}


def judge_options(
    *, judge_model: str | None = None, judge_backend: str = "transformers", judge_base_url: str | None = None
) -> dict[str, Any]:
    """The LLM judges' model and backend (``--judge-model/--judge-backend/--judge-base-url``), checked."""
    if judge_backend not in ("transformers", "openai"):
        raise BadInput(f"Unknown judge backend '{judge_backend}'; use transformers or openai")
    if judge_backend == "openai" and not judge_base_url:
        raise BadInput("--judge-backend openai needs --judge-base-url, e.g. http://127.0.0.1:8000/v1")
    return {"judge_model": judge_model, "judge_backend": judge_backend, "judge_base_url": judge_base_url}


@dataclass
class JudgeResult:
    judgments_added: int = 0
    judgments_stored: int = 0
    per_evaluator: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # evaluator → why it did not run


def evaluator_plan(names: Sequence[str] | None, bench_names: Sequence[str]) -> list[EvaluatorSpec]:
    """The evaluators to run: the chosen (or default) ones, each capability benchmark's scorer, and
    what they require."""
    wanted = list(names) if names is not None else [s.name for s in evaluators.REGISTRY.values() if s.default]
    for b in bench_names:
        spec = benchmarks.get(b)
        if spec.kind == "capability" and spec.scorer and spec.scorer not in wanted:
            wanted.append(spec.scorer)
    return evaluators.resolve(wanted)


def _chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _priors(store: Store, names: Sequence[str], generation_ids: Sequence[int]) -> dict[int, dict[str, Verdict]]:
    """The verdicts an evaluator requires (current versions), per generation."""
    wanted = [(n, evaluators.get(n).version) for n in names]
    stored = runs.verdicts_of(store, wanted, generation_ids)
    return {g: {n: Verdict(v.label, v.score, v.explanation) for n, v in by.items()} for g, by in stored.items()}


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
    changed: dict[str, set[int]] = {}  # evaluator → generations it judged in this call
    for spec in plan:
        if "reference_model" in spec.options and not config.get("reference_model"):
            result.skipped[spec.name] = NO_REFERENCE
            continue
        ev_config = evaluator_config(spec, config)
        check_judge_model(store, spec, ev_config)
        with store.transaction():
            ev_id = store.upsert_evaluator(spec.name, kind=spec.kind, version=spec.version, config=ev_config)
        applicable = runs.judge_inputs(store, generation_ids, spec.applies_to)
        todo = runs.judge_inputs(store, generation_ids, spec.applies_to, missing_for=ev_id)
        redo = set().union(*(changed.get(r, set()) for r in spec.requires)) - {r.generation_id for r in todo}
        todo += [r for r in applicable if r.generation_id in redo]  # a component it combines was just added
        result.judgments_stored += len(applicable) - len(todo)
        result.per_evaluator[spec.name] = 0
        if not todo:
            continue
        fn = evaluators.build(spec.name, **config)
        bar = progress_bar(f"judge {spec.name}", len(todo), progress)
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
                changed.setdefault(spec.name, set()).update(r.generation_id for r in batch)
                bar.update(len(batch))
        finally:
            bar.close()
    return result


def evaluator_config(spec: EvaluatorSpec, config: dict[str, Any]) -> dict[str, Any]:
    """What is stored with an evaluator: its description and, for an LLM judge, the judge model."""
    out: dict[str, Any] = {"description": spec.description}
    if spec.is_llm_judge:
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
        ref = reference_model or usable_reference(reference_model_of(store, int(exp_id), fallback))
        res = judge(
            store,
            plan,
            generation_ids=part["generation_id"].to_list(),
            config={
                "reference_model": ref or None,
                "device": device,
                "dtype": dtype,
                **experiment_context(store, int(exp_id)),
                **(judge_options or {}),
            },
            progress=progress,
        )
        total.judgments_added += res.judgments_added
        total.judgments_stored += res.judgments_stored
        for k, v in res.per_evaluator.items():
            total.per_evaluator[k] = total.per_evaluator.get(k, 0) + v
        total.skipped.update(res.skipped)
    return total

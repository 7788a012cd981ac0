"""Training: one ``load_trainable`` for both trainers, the Trainer's arguments, the plain trainer, and
``finetune`` — train, save, score capability at every save and stop at the target."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from capsafe_core import benchmarks
from capsafe_core.errors import BadInput, unknown_name
from capsafe_core.finetune.data import ChatDataset, check_no_overlap, collate, mix
from capsafe_core.finetune.presets import MITIGATIONS, Chat, FinetuneConfig, FinetuneResult, Mitigation
from capsafe_core.store import Store, runs

LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def base_folder(model: str) -> Path:
    """A local folder for ``model`` (GGUF and aliases are dequantized into the cache)."""
    from capsafe_core.backends.models import dequantized_folder, resolve_model

    ref = resolve_model(model)
    if ref.kind == "peft":
        raise BadInput(f"{model} is an adapter; merge it first or fine-tune its base model")
    return dequantized_folder(ref.path) if ref.kind == "gguf" else ref.path


def load_trainable(model: str, *, lora: bool = False, seed: int = 0) -> tuple[Any, Any, Path]:
    """(model in fp32, tokenizer with a pad token, its folder); with ``lora``, LoRA adapters on a frozen base."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    folder = base_folder(model)
    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    net: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    if lora:
        from peft import LoraConfig, get_peft_model

        net = get_peft_model(net, LoraConfig(task_type="CAUSAL_LM", **LORA))  # type: ignore[arg-type]
    return net, tok, folder


def use_bf16(wanted: bool) -> bool:
    """bf16 autocast where asked and the device has it."""
    import torch

    from capsafe_core.backends.models import supports_bf16

    return wanted and supports_bf16("cuda" if torch.cuda.is_available() else "cpu")


def training_args(
    out_dir: Path,
    max_steps: int,
    batch_size: int,
    lr: float,
    warmup_steps: int,
    seed: int,
    *,
    bf16: bool,
    logging_steps: int = 10,
    progress: bool = True,
) -> Any:
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out_dir / "trainer"),
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=warmup_steps,
        weight_decay=0.0,
        logging_steps=max(1, logging_steps),
        save_strategy="no",
        report_to=[],
        seed=seed,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=not progress,
    )


def train_plain(
    model: str,
    chats: list[Chat],
    out_dir: Path,
    *,
    steps: int,
    lr: float = 5e-5,
    batch_size: int = 8,
    max_length: int = 192,
    warmup_steps: int = 10,
    seed: int = 0,
    bf16: bool = True,
    progress: bool = True,
) -> Path:
    """Full fine-tuning without checkpoints or evaluation; saves the final model to ``out_dir``."""
    from transformers import Trainer

    net, tok, _ = load_trainable(model, seed=seed)
    args = training_args(out_dir, steps, batch_size, lr, warmup_steps, seed, bf16=use_bf16(bf16), progress=progress)
    Trainer(
        model=net, args=args, train_dataset=ChatDataset(chats, tok, max_length), data_collator=collate(tok.pad_token_id)
    ).train()
    out_dir.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    return out_dir


def capability_of(store: Store, checkpoint_id: int, benchmark: str) -> float:
    """A checkpoint's capability on ``benchmark`` by its scorer: the analysis' own ``capability`` rate
    (mean over prompts; a label alone counts correct = 1, incorrect = 0), 0.0 where nothing is scored."""
    from capsafe_core.analysis import checkpoint_rates

    scorer = str(benchmarks.get(benchmark).scorer)
    v = runs.capability_verdicts(store, checkpoint_id, benchmark, scorer)
    rates = checkpoint_rates(v, evaluator=scorer, benchmarks=benchmark, metric="capability")
    value = rates["value"][0] if rates.height else None
    return float(value) if value is not None else 0.0


def _prepare(cfg: FinetuneConfig) -> tuple[Mitigation, list[Chat], list[str], str | None]:
    """Checked settings: the preset, the (mixed) training chats, the evaluation benchmarks, the scorer."""
    if cfg.mitigation not in MITIGATIONS:
        raise unknown_name("mitigation", cfg.mitigation, MITIGATIONS)
    mit = MITIGATIONS[cfg.mitigation]
    cap_spec = benchmarks.get(cfg.capability_benchmark)
    if cap_spec.kind != "capability":
        raise BadInput(f"'{cfg.capability_benchmark}' is a {cap_spec.kind} benchmark; pass a capability benchmark")
    if cfg.save_every < 1 or cfg.max_steps < 1:
        raise BadInput("--save-every and --max-steps must be at least 1")
    evals = [cfg.capability_benchmark, *cfg.eval_benchmarks]
    check_no_overlap(cfg.train, evals)
    train = mix(cfg.train, cfg.safety_data, mit.safety_share, seed=cfg.seed)
    check_no_overlap(train, evals)
    return mit, train, evals, cap_spec.scorer


class CheckpointEvaluator:
    """Evaluates one checkpoint of the run (capability, and ``eval_benchmarks``) and records it."""

    def __init__(self, store: Store, cfg: FinetuneConfig, mit: Mitigation, base: Path, meta: dict[str, Any]):
        self.store, self.cfg, self.mit, self.base, self.meta = store, cfg, mit, base, meta
        self.result = FinetuneResult()

    def __call__(self, step: int, model_ref: str, loaded: tuple[Any, Any, str] | None) -> float:
        from capsafe_core.backends import Decoding
        from capsafe_core.backends.hf import TransformersBackend
        from capsafe_core.runner import RunSpec, run_checkpoint

        cfg = self.cfg
        t0 = time.perf_counter()
        backend = TransformersBackend(model_ref, loaded=loaded, batch_size=cfg.eval_batch_size) if loaded else None
        limits = {cfg.capability_benchmark: cfg.capability_limit}
        limits.update({b: cfg.eval_limit for b in benchmarks.expand(list(cfg.eval_benchmarks))})
        spec = RunSpec(
            experiment=cfg.experiment,
            model=model_ref,
            mitigation=self.mit.name,
            step=step,
            run_seed=cfg.seed,
            batch_size=cfg.eval_batch_size,
            reference_model=str(self.base),
            command=cfg.command,
            benchmarks=[cfg.capability_benchmark, *cfg.eval_benchmarks],
            limits=limits,
            evaluators=cfg.eval_evaluators if cfg.eval_benchmarks else [],
            decoding=Decoding(max_new_tokens=cfg.max_new_tokens),
        )
        run_checkpoint(self.store, spec, progress=cfg.progress, backend=backend)
        with self.store.transaction():
            ck = self.store.upsert_checkpoint(
                self.store.experiment_id(cfg.experiment),
                self.mit.name,
                step,
                seed=cfg.seed,
                model_ref=model_ref,
                meta={"finetune": self.meta},
            )
        capability = capability_of(self.store, ck, cfg.capability_benchmark)
        self.result.eval_seconds += time.perf_counter() - t0
        return self.record(step, capability)

    def record(self, step: int, capability: float) -> float:
        self.result.steps.append(step)
        self.result.capability[step] = capability
        return capability


def step0(store: Store, cfg: FinetuneConfig, mitigation: str, model_ref: str) -> float | None:
    """Copy step 0 from another run (seed) of this mitigation, from ``cfg.step0_from``, or from any
    mitigation's step 0 evaluated from the same weights (by hash: the same starting model), instead of
    evaluating it again."""
    from capsafe_core.backends.models import model_hash, resolve_model

    if runs.checkpoint_id(store, cfg.experiment, mitigation, 0, cfg.seed) is not None:
        return None  # this run's own step 0 is stored (or partly: evaluating it again resumes it)
    weights = model_hash(resolve_model(model_ref))
    src = runs.step0_checkpoint(store, cfg.experiment, mitigation, model_ref, weights)
    if src is None and cfg.step0_from is not None and cfg.step0_from != mitigation:
        src = runs.step0_checkpoint(store, cfg.experiment, cfg.step0_from, model_ref, weights)
    if src is None and weights is not None:
        src = runs.step0_checkpoint(store, cfg.experiment, None, model_ref, weights)
    if src is None:
        return None
    with store.transaction():
        dst = store.copy_checkpoint(src, mitigation, seed=cfg.seed)
    return capability_of(store, dst, cfg.capability_benchmark)


def eval_copy(model: Any, tok: Any, *, lora: bool, bf16: bool) -> tuple[Any, Any, str]:
    """A frozen copy of the model being trained, merged and cast for fast generation."""
    import torch

    m: Any = copy.deepcopy(model)
    if lora:
        m = m.merge_and_unload()
    return m.to(torch.bfloat16 if bf16 else torch.float32).eval(), tok, "cuda" if torch.cuda.is_available() else "cpu"


def _run_meta(cfg: FinetuneConfig, mit: Mitigation, train: list[Chat], bf16: bool) -> dict[str, Any]:
    return {
        "mitigation": mit.name,
        "preset": mit.description,
        "learning_rate": cfg.learning_rate * mit.lr_scale,
        "batch_size": cfg.batch_size,
        "max_length": cfg.max_length,
        "seed": cfg.seed,
        "bf16": bf16,
        "train_examples": len(train),
        "safety_share": mit.safety_share,
        "command": cfg.command,
        **cfg.extra_meta,
    }


def finetune(store: Store, cfg: FinetuneConfig) -> FinetuneResult:
    """Train under a mitigation preset, checkpoint every ``save_every`` steps, score capability at step 0
    and every save (checkpoint and verdicts in the store), and stop ``extra_saves`` saves after the target."""
    mit, train, _, scorer = _prepare(cfg)
    from transformers import Trainer

    from capsafe_core.finetune.callback import CapabilityStop

    model, tok, folder = load_trainable(cfg.model, lora=mit.lora, seed=cfg.seed)
    bf16 = use_bf16(cfg.bf16)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with store.transaction():
        store.upsert_experiment(
            cfg.experiment,
            base_model=str(folder),
            task=cfg.capability_benchmark,
            capability_metric=scorer,
            capability_target=cfg.capability_target,
        )
    evaluate = CheckpointEvaluator(store, cfg, mit, folder, _run_meta(cfg, mit, train, bf16))
    cap0 = step0(store, cfg, mit.name, str(folder))
    cap0 = evaluate(0, str(folder), None) if cap0 is None else evaluate.record(0, cap0)
    reached = cfg.capability_target is not None and cap0 >= cfg.capability_target
    evaluate.result.reached_at = 0 if reached else None
    stop = CapabilityStop(cfg, out_dir, model, tok, evaluate, lambda: eval_copy(model, tok, lora=mit.lora, bf16=bf16))
    args = training_args(
        out_dir,
        cfg.max_steps,
        cfg.batch_size,
        cfg.learning_rate * mit.lr_scale,
        cfg.warmup_steps,
        cfg.seed,
        bf16=bf16,
        logging_steps=cfg.save_every,
        progress=cfg.progress,
    )
    data = ChatDataset(train, tok, cfg.max_length)
    trainer = Trainer(
        model=model, args=args, train_dataset=data, data_collator=collate(tok.pad_token_id), callbacks=[stop]
    )
    if not (reached and cfg.extra_saves == 0):
        trainer.train()
    evaluate.result.seconds = time.perf_counter() - t0
    return evaluate.result


__all__ = ["base_folder", "capability_of", "finetune", "load_trainable", "train_plain", "training_args"]

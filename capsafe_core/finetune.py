"""Fine-tuning anchored to a capability target (transformers Trainer + peft).

``finetune(store, FinetuneConfig(...))`` trains a causal LM on a JSONL of chat turns under a
named **mitigation** preset, saves a checkpoint every ``save_every`` steps, scores the held-out
capability benchmark at step 0 and at every save (writing checkpoint and verdicts to the store),
and stops once the capability target is reached plus ``extra_saves`` more saves. Optionally it
also evaluates every save on more benchmarks (``eval_benchmarks``), so a checkpoint's folder can
be deleted right after (``keep_checkpoints=False``).

Mitigation presets (``MITIGATIONS``):
- ``none``: full fine-tuning (the baseline).
- ``lora``: LoRA adapters (r=16, alpha=32, dropout 0.05 on q/k/v/o projections; Hu et al. 2021); the base
  weights stay frozen, a common way to limit forgetting.
- ``safety_mix``: full fine-tuning with a share of safety data mixed into every epoch: refusals of
  harmful requests and, as many, benign instruction examples (so it does not learn to refuse
  everything). Bianchi et al. 2024, "Safety-Tuned LLaMAs"; Qi et al. 2023 §5.
- ``lower_lr``: full fine-tuning at a tenth of the learning rate. Qi et al. 2023 (ICLR 2024)
  report that a larger learning rate and smaller batches degrade safety more.

Training prompts and evaluation prompts never overlap: :func:`check_no_overlap` compares
normalised texts with every evaluation benchmark and refuses to train otherwise.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from capsafe_core import benchmarks
from capsafe_core.errors import BadInput, unknown_name
from capsafe_core.jsonl import read_lines
from capsafe_core.store import Store, runs

Chat = list[dict[str, str]]


@dataclass(frozen=True)
class Mitigation:
    name: str
    description: str
    lora: bool = False
    lr_scale: float = 1.0
    safety_share: float = 0.0  # share of training examples that are safety data


MITIGATIONS = {
    m.name: m
    for m in [
        Mitigation("none", "full fine-tuning (baseline)"),
        Mitigation("lora", "LoRA r=16 on attention projections, base frozen", lora=True, lr_scale=4.0),
        Mitigation("safety_mix", "full fine-tuning with refusal + benign examples mixed in", safety_share=0.2),
        Mitigation("lower_lr", "full fine-tuning at 1/10 of the learning rate", lr_scale=0.1),
    ]
}


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run (the options of ``capsafe finetune``)."""

    experiment: str
    model: str  # folder or alias: the step-0 model
    train: Sequence[Chat]  # task examples
    output_dir: Path
    mitigation: str = "none"
    capability_benchmark: str = "arithmetic"
    capability_limit: int | None = 100
    capability_target: float | None = None
    extra_saves: int = 1
    min_saves: int = 0  # never stop before this many saves
    step0_from: str | None = None  # copy step 0 from this mitigation of the experiment, if it has one
    save_every: int = 10
    max_steps: int = 100
    learning_rate: float = 5e-5  # before the preset's scale
    warmup_steps: int = 5
    batch_size: int = 8
    max_length: int = 192
    seed: int = 0
    bf16: bool = True  # bf16 autocast where the hardware has it
    safety_data: Sequence[Chat] = ()  # for safety_mix: refusals and benign examples
    eval_benchmarks: Sequence[str] = ()  # evaluated at step 0 and every save (besides capability)
    eval_limit: int | None = None
    eval_evaluators: Sequence[str] | None = None  # None = default set
    max_new_tokens: int = 128
    eval_batch_size: int = 16
    keep_checkpoints: bool = True
    progress: bool = True
    command: str | None = None
    extra_meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class FinetuneResult:
    steps: list[int] = field(default_factory=list)
    capability: dict[int, float] = field(default_factory=dict)
    reached_at: int | None = None
    stopped_early: bool = False
    seconds: float = 0.0


# --- data -----------------------------------------------------------------------------------


def read_chat_jsonl(path: str | Path) -> list[Chat]:
    """Rows of ``{"messages": [{"role", "content"}, ...]}`` (or ``prompt``/``response`` pairs)."""
    p = Path(path)
    if not p.exists():
        raise BadInput(f"No training file {p}; pass a JSONL of chat turns")
    out: list[Chat] = []
    for i, row in read_lines(p.read_text(encoding="utf-8"), p.name):
        if isinstance(row, dict) and "messages" in row:
            msgs = row["messages"]
        elif isinstance(row, dict) and "prompt" in row and "response" in row:
            msgs = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["response"]}]
        else:
            raise BadInput(
                f"{p.name} line {i} has neither 'messages' nor 'prompt'/'response'; see capsafe finetune --help"
            )
        if not msgs or msgs[-1].get("role") != "assistant" or not all("content" in m for m in msgs):
            raise BadInput(f"{p.name} line {i}: the last message must be the assistant's answer")
        out.append(msgs)
    if not out:
        raise BadInput(f"{p.name} has no training examples")
    return out


def user_texts(chats: Sequence[Chat]) -> list[str]:
    return [m["content"] for c in chats for m in c if m["role"] == "user"]


def check_no_overlap(chats: Sequence[Chat], eval_benchmarks: Sequence[str]) -> None:
    """Refuse training data whose prompts appear (normalised) in an evaluation benchmark."""
    train = {benchmarks.normalize_text(t) for t in user_texts(chats)}
    for name in benchmarks.expand(list(eval_benchmarks)):
        hits = [p for p in benchmarks.load(name) if benchmarks.normalize_text(p.text) in train]
        if hits:
            raise BadInput(
                f"{len(hits)} training prompt(s) are also in the evaluation benchmark '{name}' "
                f"(e.g. {hits[0].ext_id}: {hits[0].text[:60]!r}); remove them from the training data"
            )


def drop_overlap(chats: Sequence[Chat], eval_benchmarks: Sequence[str]) -> list[Chat]:
    """The chats whose user turns appear in no evaluation benchmark."""
    held = {
        benchmarks.normalize_text(p.text) for n in benchmarks.expand(list(eval_benchmarks)) for p in benchmarks.load(n)
    }
    return [c for c in chats if not any(benchmarks.normalize_text(t) in held for t in user_texts([c]))]


def mix(task: Sequence[Chat], safety: Sequence[Chat], share: float, *, seed: int) -> list[Chat]:
    """Task examples with safety examples making up ``share`` of the result, shuffled."""
    if share <= 0:
        return list(task)
    if not safety:
        raise BadInput("The safety_mix mitigation needs safety examples; pass --safety-data FILE")
    n = round(len(task) * share / (1 - share))
    rng = random.Random(seed)
    picked = [safety[i % len(safety)] for i in rng.sample(range(max(n, len(safety))), n)] if n else []
    out = list(task) + picked
    rng.shuffle(out)
    return out


class ChatDataset:
    """Tokenised chats; only assistant tokens are trained on (the rest is label -100)."""

    def __init__(self, chats: Sequence[Chat], tokenizer: Any, max_length: int):
        self.rows = [self._encode(c, tokenizer, max_length) for c in chats]

    @staticmethod
    def _encode(chat: Chat, tok: Any, max_length: int) -> dict[str, list[int]]:
        prefix = tok.apply_chat_template(chat[:-1], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(chat, tokenize=False)
        p_ids = tok(prefix, add_special_tokens=False)["input_ids"]
        ids = tok(full, add_special_tokens=False)["input_ids"][:max_length]
        labels = [-100] * min(len(p_ids), len(ids)) + ids[len(p_ids) :]
        return {"input_ids": ids, "labels": labels}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


def collate(pad_id: int) -> Any:
    import torch

    def fn(rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return fn


# --- training -----------------------------------------------------------------------------


def base_folder(model: str) -> Path:
    """A local folder for ``model`` (GGUF and aliases are dequantized into the cache)."""
    from capsafe_core.backends.models import dequantized_folder, resolve_model

    ref = resolve_model(model)
    if ref.kind == "peft":
        raise BadInput(f"{model} is an adapter; merge it first or fine-tune its base model")
    return dequantized_folder(ref.path) if ref.kind == "gguf" else ref.path


def finetune(store: Store, cfg: FinetuneConfig) -> FinetuneResult:
    """Train, checkpoint, score capability at every save and stop at the target (module docstring)."""
    if cfg.mitigation not in MITIGATIONS:
        raise unknown_name("mitigation", cfg.mitigation, MITIGATIONS)
    mit = MITIGATIONS[cfg.mitigation]
    cap_spec = benchmarks.get(cfg.capability_benchmark)
    if cap_spec.kind != "capability":
        raise BadInput(f"'{cfg.capability_benchmark}' is a {cap_spec.kind} benchmark; pass a capability benchmark")
    evals = [cfg.capability_benchmark, *cfg.eval_benchmarks]
    check_no_overlap(cfg.train, evals)
    train = mix(cfg.train, cfg.safety_data, mit.safety_share, seed=cfg.seed)
    check_no_overlap(train, evals)
    if cfg.save_every < 1 or cfg.max_steps < 1:
        raise BadInput("--save-every and --max-steps must be at least 1")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(cfg.seed)
    folder = base_folder(cfg.model)
    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    if mit.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=16,
                lora_alpha=32,
                lora_dropout=0.05,
                task_type="CAUSAL_LM",
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            ),
        )
    from capsafe_core.backends.models import supports_bf16

    use_bf16 = cfg.bf16 and supports_bf16("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = ChatDataset(train, tok, cfg.max_length)
    result = FinetuneResult()
    t0 = time.perf_counter()
    meta = {
        "mitigation": mit.name,
        "preset": mit.description,
        "learning_rate": cfg.learning_rate * mit.lr_scale,
        "batch_size": cfg.batch_size,
        "max_length": cfg.max_length,
        "seed": cfg.seed,
        "bf16": use_bf16,
        "train_examples": len(train),
        "safety_share": mit.safety_share,
        "command": cfg.command,
        **cfg.extra_meta,
    }
    with store.transaction():
        store.upsert_experiment(
            cfg.experiment,
            base_model=str(folder),
            task=cfg.capability_benchmark,
            capability_metric=cap_spec.scorer,
            capability_target=cfg.capability_target,
        )

    def evaluate(step: int, model_ref: str, loaded: tuple[Any, Any, str] | None) -> float:
        from capsafe_core.backends import Decoding
        from capsafe_core.backends.hf import TransformersBackend
        from capsafe_core.runner import RunSpec, run_checkpoint

        backend = TransformersBackend(model_ref, loaded=loaded, batch_size=cfg.eval_batch_size) if loaded else None
        common: dict[str, Any] = {
            "experiment": cfg.experiment,
            "model": model_ref,
            "mitigation": mit.name,
            "step": step,
            "seed": cfg.seed,
            "batch_size": cfg.eval_batch_size,
            "reference_model": str(folder),
            "command": cfg.command,
        }
        limits = {cfg.capability_benchmark: cfg.capability_limit}
        limits.update({b: cfg.eval_limit for b in benchmarks.expand(list(cfg.eval_benchmarks))})
        spec = RunSpec(
            benchmarks=evals,
            limits=limits,
            evaluators=cfg.eval_evaluators if cfg.eval_benchmarks else [],
            decoding=Decoding(max_new_tokens=cfg.max_new_tokens),
            **common,
        )
        run_checkpoint(store, spec, progress=cfg.progress, backend=backend)
        with store.transaction():
            ck = store.upsert_checkpoint(
                store.experiment_id(cfg.experiment), mit.name, step, model_ref=model_ref, meta={"finetune": meta}
            )
        cap = capability_of(store, ck, cfg.capability_benchmark)
        result.steps.append(step)
        result.capability[step] = cap
        return cap

    def eval_copy() -> tuple[Any, Any, str]:
        m: Any = copy.deepcopy(model)
        if mit.lora:
            m = m.merge_and_unload()
        dtype = torch.bfloat16 if use_bf16 else torch.float32
        return m.to(dtype).eval(), tok, "cuda" if torch.cuda.is_available() else "cpu"

    cap0 = step0(store, cfg, mit.name, str(folder)) if cfg.step0_from else None
    if cap0 is None:
        cap0 = evaluate(0, str(folder), None)
    else:
        result.steps.append(0)
        result.capability[0] = cap0
    reached = cfg.capability_target is not None and cap0 >= cfg.capability_target
    result.reached_at = 0 if reached else None

    class CapabilityCallback(TrainerCallback):
        saves_after_target = 0

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            step = state.global_step
            if step % cfg.save_every and step != cfg.max_steps:
                return control
            ck_dir = out_dir / f"step-{step}"
            model.save_pretrained(str(ck_dir))
            tok.save_pretrained(str(ck_dir))
            model.eval()
            cap = evaluate(step, str(ck_dir), eval_copy())
            model.train()
            if not cfg.keep_checkpoints:
                import shutil

                shutil.rmtree(ck_dir, ignore_errors=True)
            if cfg.capability_target is not None:
                if result.reached_at is None and cap >= cfg.capability_target:
                    result.reached_at = step
                elif result.reached_at is not None:
                    self.saves_after_target += 1
                saves = len(result.steps) - 1
                if (
                    result.reached_at is not None
                    and self.saves_after_target >= cfg.extra_saves
                    and saves >= cfg.min_saves
                ):
                    result.stopped_early = step < cfg.max_steps
                    control.should_training_stop = True
            return control

    args = training_args(
        out_dir,
        cfg.max_steps,
        cfg.batch_size,
        cfg.learning_rate * mit.lr_scale,
        cfg.warmup_steps,
        cfg.seed,
        bf16=use_bf16,
        logging_steps=cfg.save_every,
        progress=cfg.progress,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collate(tok.pad_token_id),
        callbacks=[CapabilityCallback()],
    )
    if not (reached and cfg.extra_saves == 0):
        trainer.train()
    result.seconds = time.perf_counter() - t0
    return result


def step0(store: Store, cfg: FinetuneConfig, mitigation: str, model_ref: str) -> float | None:
    """Copy step 0 from ``cfg.step0_from`` (same model, same prompts) instead of evaluating it again."""
    if cfg.step0_from is None or cfg.step0_from == mitigation:
        return None
    src = runs.step0_checkpoint(store, cfg.experiment, cfg.step0_from, model_ref)
    if src is None:
        return None
    with store.transaction():
        dst = store.copy_checkpoint(src, mitigation)
    return capability_of(store, dst, cfg.capability_benchmark)


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
    chats: Sequence[Chat],
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
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer
    from transformers.utils import logging as hf_logging

    from capsafe_core.backends.models import supports_bf16

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    folder = base_folder(model)
    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    net: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    use_bf16 = bf16 and supports_bf16("cuda" if torch.cuda.is_available() else "cpu")
    args = training_args(out_dir, steps, batch_size, lr, warmup_steps, seed, bf16=use_bf16, progress=progress)
    Trainer(
        model=net, args=args, train_dataset=ChatDataset(chats, tok, max_length), data_collator=collate(tok.pad_token_id)
    ).train()
    out_dir.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    return out_dir


def capability_of(store: Store, checkpoint_id: int, benchmark: str) -> float:
    """Mean capability score of one checkpoint on one benchmark (its scorer's verdicts)."""
    scorer = benchmarks.get(benchmark).scorer
    v = runs.capability_verdicts(store, checkpoint_id, benchmark, str(scorer)).filter(pl.col("label") != "unparsed")
    mean = v["score"].mean() if v.height else None
    return float(mean) if isinstance(mean, int | float) else 0.0

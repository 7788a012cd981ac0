"""Mitigation presets and the settings and result of one fine-tuning run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    eval_batch_size: int | None = None  # None: from the workload and free memory
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
    eval_seconds: float = 0.0  # of which evaluating checkpoints (generation and judging)

"""Fine-tuning anchored to a capability target (transformers Trainer + peft): ``presets`` (mitigations and
settings), ``data`` (chat files, mixing, collation), ``training`` (one loader, the run), ``callback``
(the capability stop).

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

from capsafe_core.finetune.data import (
    ChatDataset,
    check_no_overlap,
    collate,
    drop_overlap,
    mix,
    read_chat_jsonl,
    user_texts,
)
from capsafe_core.finetune.presets import MITIGATIONS, Chat, FinetuneConfig, FinetuneResult, Mitigation
from capsafe_core.finetune.training import (
    base_folder,
    capability_of,
    finetune,
    load_trainable,
    train_plain,
    training_args,
)

__all__ = [
    "MITIGATIONS",
    "Chat",
    "ChatDataset",
    "FinetuneConfig",
    "FinetuneResult",
    "Mitigation",
    "base_folder",
    "capability_of",
    "check_no_overlap",
    "collate",
    "drop_overlap",
    "finetune",
    "load_trainable",
    "mix",
    "read_chat_jsonl",
    "train_plain",
    "training_args",
    "user_texts",
]

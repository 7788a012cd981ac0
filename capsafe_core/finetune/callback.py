"""The capability stop: at every save, evaluate the checkpoint and stop once the target is reached
(plus ``extra_saves`` saves, and never before ``min_saves``). Imports transformers: load it lazily."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from capsafe_core.finetune.presets import FinetuneConfig, FinetuneResult


class CapabilityStop(TrainerCallback):
    """Saves every ``cfg.save_every`` steps, evaluates through ``evaluate`` (which records the result)."""

    def __init__(
        self,
        cfg: FinetuneConfig,
        out_dir: Path,
        model: Any,
        tok: Any,
        evaluate: Callable[[int, str, Any], float],
        frozen_copy: Callable[[], Any],
    ):
        self.cfg, self.out_dir, self.model, self.tok = cfg, out_dir, model, tok
        self.evaluate, self.frozen_copy = evaluate, frozen_copy
        self.saves_after_target = 0

    @property
    def result(self) -> FinetuneResult:
        out: FinetuneResult = self.evaluate.result  # type: ignore[attr-defined]
        return out

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
        step, cfg = state.global_step, self.cfg
        if step % cfg.save_every and step != cfg.max_steps:
            return control
        cap = self._save_and_evaluate(step)
        if cfg.capability_target is None:
            return control
        if self.result.reached_at is None and cap >= cfg.capability_target:
            self.result.reached_at = step
        elif self.result.reached_at is not None:
            self.saves_after_target += 1
        saves = len(self.result.steps) - 1
        if self.result.reached_at is not None and self.saves_after_target >= cfg.extra_saves and saves >= cfg.min_saves:
            self.result.stopped_early = step < cfg.max_steps
            control.should_training_stop = True
        return control

    def _save_and_evaluate(self, step: int) -> float:
        ck_dir = self.out_dir / f"step-{step}"
        self.model.save_pretrained(str(ck_dir))
        self.tok.save_pretrained(str(ck_dir))
        self.model.eval()
        cap = self.evaluate(step, str(ck_dir), self.frozen_copy())
        self.model.train()
        if not self.cfg.keep_checkpoints:
            shutil.rmtree(ck_dir, ignore_errors=True)
        return cap

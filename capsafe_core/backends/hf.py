"""The transformers backend: batched generation on the local CPU or GPU.

Prompts are rendered with the tokenizer's chat template, sorted by length and generated in
batches with left padding (about 4× the tokens/s of a one-prompt loop on two CPU cores; see
``bench/generation.py``). Greedy by default; sampling is seeded per batch.
"""

from __future__ import annotations

import platform
from typing import Any

from capsafe_core.backends import Completion, Decoding, Message
from capsafe_core.backends.models import ModelRef, load_model, model_hash, resolve_model


class TransformersBackend:
    name = "transformers"

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 16,
        loaded: tuple[Any, Any, str] | None = None,
        model_hash: str | None = None,
    ) -> None:
        """``loaded=(model, tokenizer, device)`` wraps a model already in memory (e.g. during training)."""
        self.model_ref = str(model)
        self._hash = model_hash
        self.ref: ModelRef | None = None
        if loaded is None:
            self.ref = resolve_model(model)
            self.model, self.tokenizer, self.device = load_model(self.ref, dtype=dtype, device=device)
        else:
            self.model, self.tokenizer, self.device = loaded
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = batch_size

    def render(self, messages: list[Message]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            text: str = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return text
        return "\n".join(m["content"] for m in messages) + "\n"

    def generate(self, prompts: list[list[Message]], decoding: Decoding, *, top_logprobs: int = 0) -> list[Completion]:
        """``top_logprobs=k`` adds the k most likely tokens and their log-probabilities at each step."""
        import torch

        texts = [self.render(p) for p in prompts]
        lengths = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        out: list[Completion | None] = [None] * len(texts)
        eos = self._eos_ids()
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer(
                [texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            kwargs: dict[str, Any] = {
                "max_new_tokens": decoding.max_new_tokens,
                "pad_token_id": self.tokenizer.pad_token_id,
            }
            if decoding.greedy:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            else:
                torch.manual_seed(decoding.seed + b)
                kwargs.update(do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p, top_k=0)
            if top_logprobs:
                kwargs.update(output_logits=True, return_dict_in_generate=True)
            with torch.inference_mode():
                gen = self.model.generate(**enc, **kwargs)
            seqs = gen.sequences if top_logprobs else gen
            new = seqs[:, enc["input_ids"].shape[1] :].tolist()
            tops = self._top_logprobs(gen.logits, top_logprobs) if top_logprobs else None
            for j, (i, toks) in enumerate(zip(idx, new, strict=True)):
                c = self._completion(toks, eos, decoding.max_new_tokens)
                if tops is not None:
                    c = Completion(c.text, c.n_tokens, c.finish_reason, logprobs=tops[j][: max(c.n_tokens or 0, 1)])
                out[i] = c
        return [c for c in out if c is not None]

    def _top_logprobs(self, logits: Any, k: int) -> list[list[dict[str, float]]]:
        """Per sequence, per step: {token text: log-probability} of the k most likely tokens."""
        import numpy as np
        import torch

        steps: list[tuple[list[list[float]], list[list[int]]]] = []
        for step_logits in logits:  # one (batch, vocab) tensor per generated token
            top_k = torch.log_softmax(step_logits.float(), dim=-1).topk(k, dim=-1)
            steps.append((top_k.values.tolist(), top_k.indices.tolist()))
        out: list[list[dict[str, float]]] = []
        for b in range(len(steps[0][0]) if steps else 0):
            seq = []
            for vals, ids in steps:
                top: dict[str, float] = {}
                for t, v in zip(ids[b], vals[b], strict=True):
                    text = self.tokenizer.decode([t])  # distinct ids can decode alike: add their probabilities
                    top[text] = float(np.logaddexp(top[text], v)) if text in top else v
                seq.append(top)
            out.append(seq)
        return out

    def _eos_ids(self) -> set[int]:
        ids = set()
        cfg = getattr(self.model, "generation_config", None)
        eos = getattr(cfg, "eos_token_id", None) if cfg is not None else None
        if isinstance(eos, int):
            ids.add(eos)
        elif eos:
            ids.update(eos)
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _completion(self, toks: list[int], eos: set[int], max_new: int) -> Completion:
        n = len(toks)
        for j, t in enumerate(toks):
            if t in eos:
                n = j
                break
        finish = "stop" if n < len(toks) or n < max_new else "length"
        text = self.tokenizer.decode(toks[:n], skip_special_tokens=True)
        return Completion(text=text, n_tokens=n, finish_reason=finish)

    def describe(self) -> dict[str, Any]:
        import torch
        import transformers

        return {
            "backend": self.name,
            "model": self.model_ref,
            "model_kind": self.ref.kind if self.ref else "in-memory",
            "model_hash": self._hash or (model_hash(self.ref) if self.ref else None),
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "device": self.device,
            "batch_size": self.batch_size,
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
            },
            "hardware": _hardware(self.device),
        }

    def close(self) -> None:
        del self.model


def _hardware(device: str) -> str:
    import os

    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    return f"{cpu} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"

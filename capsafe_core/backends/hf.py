"""The transformers backend: batched generation on the local CPU or GPU.

Prompts are rendered with the tokenizer's chat template, sorted by length and generated in
batches with left padding (about 4× the tokens/s of a one-prompt loop on two CPU cores; see
``bench/generation.py``). Greedy by default; sampling is seeded per batch.
"""

from __future__ import annotations

import platform
from typing import Any

from capsafe_core.backends import Completion, Decoding, Message
from capsafe_core.backends.models import ModelRef, auto_batch_size, load_model, model_hash, resolve_model
from capsafe_core.errors import BackendError


class OutOfMemory(Exception):
    """A batch did not fit on the device (caught inside ``generate``, which halves the batch)."""


class TransformersBackend:
    name = "transformers"

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int | None = None,
        device_map: str | None = None,
        base_model: str | None = None,
        trust_remote_code: bool = False,
        chat_template: str | None = None,
        use_chat_template: bool = True,
        loaded: tuple[Any, Any, str] | None = None,
        model_hash: str | None = None,
    ) -> None:
        """``loaded=(model, tokenizer, device)`` wraps a model already in memory (e.g. during training);
        ``batch_size=None`` picks one from free memory; ``chat_template`` is a Jinja template's text."""
        self.model_ref = str(model)
        self._hash = model_hash
        self.ref: ModelRef | None = None
        if loaded is None:
            self.ref = resolve_model(model, base_model=base_model)
            self.model, self.tokenizer, self.device = load_model(
                self.ref, dtype=dtype, device=device, device_map=device_map, trust_remote_code=trust_remote_code
            )
        else:
            self.model, self.tokenizer, self.device = loaded
        if device_map:  # inputs go to where the first layers were placed
            self.device = str(getattr(self.model, "device", self.device))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.chat_template = chat_template
        self.use_chat_template = use_chat_template
        if use_chat_template and not chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise BackendError(
                f"The model {self.model_ref} has no chat template; pass --chat-template FILE (a Jinja chat template) "
                f"or --no-chat-template (prompts are then sent as plain text)"
            )
        self.batch_size = batch_size or auto_batch_size(self.model, self.device)
        self.halvings = 0  # how often a batch ran out of memory and was halved

    def render(self, messages: list[Message]) -> str:
        if not self.use_chat_template:
            return "\n".join(m["content"] for m in messages) + "\n"
        text: str = self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
        )
        return text

    def generate(self, prompts: list[list[Message]], decoding: Decoding, *, top_logprobs: int = 0) -> list[Completion]:
        """``top_logprobs=k`` adds the k most likely tokens and their log-probabilities at each step. Prompts
        are sorted by length and batched; a batch that runs out of memory is halved and retried, and the
        smaller batch size is kept for the rest of the run."""
        texts = [self.render(p) for p in prompts]
        lengths = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        out: dict[int, Completion] = {}
        start, b = 0, 0
        while start < len(order):
            idx = order[start : start + self.batch_size]
            try:
                out.update(zip(idx, self._batch([texts[i] for i in idx], decoding, b, top_logprobs), strict=True))
            except OutOfMemory:
                if len(idx) == 1:
                    raise BackendError(
                        f"Out of memory generating one response on {self.device}; use a shorter --max-new-tokens, "
                        f"a smaller dtype (--dtype bfloat16) or --device-map auto"
                    ) from None
                self.batch_size = max(1, (len(idx) + 1) // 2)
                self.halvings += 1
                continue
            start += len(idx)
            b += 1
        return [out[i] for i in range(len(texts))]

    def _batch(self, texts: list[str], decoding: Decoding, b: int, top_logprobs: int) -> list[Completion]:
        import torch

        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
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
        try:
            with torch.inference_mode():
                gen = self.model.generate(**enc, **kwargs)
        except torch.cuda.OutOfMemoryError:
            del enc
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise OutOfMemory from None
        seqs = gen.sequences if top_logprobs else gen
        new = seqs[:, enc["input_ids"].shape[1] :].tolist()
        tops = self._top_logprobs(gen.logits, top_logprobs) if top_logprobs else None
        eos = self._eos_ids()
        out = []
        for j, toks in enumerate(new):
            c = self._completion(toks, eos, decoding.max_new_tokens)
            if tops is not None:
                c = Completion(c.text, c.n_tokens, c.finish_reason, logprobs=tops[j][: max(c.n_tokens or 0, 1)])
            out.append(c)
        return out

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
            "model_source": self.ref.provenance() if self.ref else None,
            "chat_template": "custom" if self.chat_template else ("model" if self.use_chat_template else "none"),
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

"""The transformers backend: batched generation on the local CPU or GPU.

Prompts are rendered with the tokenizer's chat template, sorted by length and generated in
batches; without a given batch size, each call sizes its batch from the longest prompt, the answer
length and free memory (at most 256 rows; on a CPU at most ``TOKEN_BUDGET`` cached positions, which
a decoding step reads). Decoding is capsafe's loop (``backends.decode``: finished rows leave the
batch, the prompts' shared prefix is run once per call) unless the model's generation config needs
``generate`` (see ``bench/generation.py`` for the speed). Greedy by default; sampling is seeded per batch.
"""

from __future__ import annotations

import platform
from typing import Any

from capsafe_core.backends import Completion, Decoding, Message, decode, kvcache
from capsafe_core.backends.models import ModelRef, auto_batch_size, load_model, model_hash, resolve_model
from capsafe_core.errors import BackendError

TOKEN_BUDGET = 32768  # cached positions (padded prompt + answer) per batch on a CPU; see bench/generation.py


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
        fast_decode: bool = True,
    ) -> None:
        """``loaded=(model, tokenizer, device)`` wraps a model already in memory (e.g. during training);
        ``batch_size=None`` picks one from free memory; ``chat_template`` is a Jinja template's text;
        ``fast_decode=False`` uses ``transformers``' ``generate`` instead of ``backends.decode``."""
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
        self.auto_batch = batch_size is None  # then sized per call from the workload and free memory
        self.batch_size = batch_size or auto_batch_size(self.model, self.device)
        self.halvings = 0  # how often a batch ran out of memory and was halved
        # on a CPU, every cached position is read at every step: a chosen batch holds at most this many
        self.token_budget = TOKEN_BUDGET if self.device == "cpu" else None
        self.fast_decode = fast_decode and decode.supported(self.model)
        self._plain = kvcache.plain_layers(self.model)

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
        tokens = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        lengths = [len(t) for t in tokens]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        if self.auto_batch and not self.halvings and lengths:
            self.batch_size = auto_batch_size(self.model, self.device, tokens=max(lengths) + decoding.max_new_tokens)
        prefix = self._prefix(tokens)
        out: dict[int, Completion] = {}
        start, b = 0, 0
        while start < len(order):
            rows = self.batch_size
            if self.auto_batch and self.token_budget:
                rows = self._rows_in_budget([lengths[i] for i in order[start:]], rows, decoding.max_new_tokens)
            idx = order[start : start + rows]
            try:
                batch = self._batch([tokens[i] for i in idx], decoding, b, top_logprobs, prefix)
            except OutOfMemory:
                if len(idx) == 1:
                    raise BackendError(
                        f"Out of memory generating one response on {self.device}; use a shorter --max-new-tokens, "
                        f"a smaller dtype (--dtype bfloat16) or --device-map auto"
                    ) from None
                self.batch_size = max(1, (len(idx) + 1) // 2)
                self.halvings += 1
                continue
            out.update(zip(idx, batch, strict=True))
            start += len(idx)
            b += 1
        return [out[i] for i in range(len(texts))]

    def _rows_in_budget(self, lengths: list[int], most: int, new: int) -> int:
        """How many of the prompts left (longest first) the next batch takes, at most ``most``, within the
        token budget: the padded positions (``generate``, and models whose cache is not plain), or the
        positions each row reads (capsafe's loop keeps rows of unlike lengths in separate buckets), the
        batches left made about equal."""
        assert self.token_budget
        if not (self.fast_decode and self._plain):
            return max(1, min(most, self.token_budget // (lengths[0] + new)))
        need = sum(lengths) + new * len(lengths)
        batches = max(-(-len(lengths) // most), -(-need // self.token_budget))
        total, rows = 0, 0
        for length in lengths[:most]:
            total += length + new
            if rows and total > need / batches:
                break
            rows += 1
        return rows

    def _prefix(self, tokens: list[list[int]]) -> decode.Prefix | None:
        """The prompts' shared first tokens, run once (capsafe's loop only)."""
        import torch

        if not self.fast_decode or len(tokens) < 2:
            return None
        try:
            return kvcache.shared_prefix(self.model, tokens)
        except torch.cuda.OutOfMemoryError:
            return None

    def _batch(
        self, tokens: list[list[int]], decoding: Decoding, b: int, top_logprobs: int, prefix: decode.Prefix | None
    ) -> list[Completion]:
        import torch

        try:
            with torch.inference_mode():
                if self.fast_decode:
                    toks, tops = self._decode(tokens, decoding, b, top_logprobs, prefix)
                else:
                    toks, tops = self._generate(tokens, decoding, b, top_logprobs)
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise OutOfMemory from None
        eos = self._eos_ids()
        out = []
        for j, ids in enumerate(toks):
            c = self._completion(ids, eos, decoding.max_new_tokens)
            if tops is not None:
                c = Completion(c.text, c.n_tokens, c.finish_reason, logprobs=tops[j][: max(c.n_tokens or 0, 1)])
            out.append(c)
        return out

    def _decode(
        self, tokens: list[list[int]], decoding: Decoding, b: int, top_logprobs: int, prefix: decode.Prefix | None
    ) -> tuple[list[list[int]], list[list[dict[str, float]]] | None]:
        """capsafe's loop (``backends.decode``): finished rows leave the batch."""
        import torch

        gen = None
        if not decoding.greedy:
            gen = torch.Generator(device=self.device).manual_seed(decoding.seed + b)
        d = decode.decode(
            self.model,
            tokens,
            pad_id=self.tokenizer.pad_token_id,
            max_new_tokens=decoding.max_new_tokens,
            eos_ids=self._eos_ids(),
            temperature=0.0 if decoding.greedy else decoding.temperature,
            top_p=decoding.top_p,
            generator=gen,
            top_logprobs=top_logprobs,
            prefix=prefix,
        )
        tops = [[self._top_texts(ids, vals) for ids, vals in row] for row in d.top] if top_logprobs else None
        return d.tokens, tops

    def _generate(
        self, tokens: list[list[int]], decoding: Decoding, b: int, top_logprobs: int
    ) -> tuple[list[list[int]], list[list[dict[str, float]]] | None]:
        """``transformers``' ``generate``, for models whose generation config the loop does not cover."""
        import torch

        enc = self.tokenizer.pad({"input_ids": tokens}, return_tensors="pt").to(self.device)

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
        gen = self.model.generate(**enc, **kwargs)
        seqs = gen.sequences if top_logprobs else gen
        new = seqs[:, enc["input_ids"].shape[1] :].tolist()
        return new, self._top_logprobs(gen.logits, top_logprobs) if top_logprobs else None

    def _top_logprobs(self, logits: Any, k: int) -> list[list[dict[str, float]]]:
        """Per sequence, per step: {token text: log-probability} of the k most likely tokens."""
        import torch

        steps: list[tuple[list[list[float]], list[list[int]]]] = []
        for step_logits in logits:  # one (batch, vocab) tensor per generated token
            top_k = torch.log_softmax(step_logits.float(), dim=-1).topk(k, dim=-1)
            steps.append((top_k.values.tolist(), top_k.indices.tolist()))
        rows = len(steps[0][0]) if steps else 0
        return [[self._top_texts(ids[b], vals[b]) for vals, ids in steps] for b in range(rows)]

    def _top_texts(self, ids: list[int], values: list[float]) -> dict[str, float]:
        """{token text: log-probability}; distinct ids that decode alike have their probabilities added."""
        import numpy as np

        top: dict[str, float] = {}
        for t, v in zip(ids, values, strict=True):
            text = self.tokenizer.decode([t])
            top[text] = float(np.logaddexp(top[text], v)) if text in top else v
        return top

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

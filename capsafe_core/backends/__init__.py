"""Model backends: something that turns chat prompts into responses.

Two backends, both lazy (importing this package imports neither torch nor an HTTP client):
``transformers`` (a local folder, a PEFT adapter on its base, a GGUF file, or an alias such as
``smollm2-135m-instruct``) and ``openai`` (any OpenAI-compatible chat-completions server: vLLM,
TGI, llama.cpp, ...). A backend has three methods: ``generate``, ``describe`` and ``close``.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

from capsafe_core.errors import BadInput, unknown_name

Message = dict[str, str]


@dataclass(frozen=True)
class Decoding:
    """How responses are sampled; stored as JSON on every generation (part of its identity)."""

    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    system_prompt: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class Completion:
    text: str
    n_tokens: int | None = None
    finish_reason: str | None = None  # "stop" | "length" | ...
    logprobs: list[dict[str, float]] | None = field(default=None, compare=False)  # top logprobs per token


class Backend(Protocol):
    name: str

    def generate(self, prompts: list[list[Message]], decoding: Decoding) -> list[Completion]:
        """One completion per chat (list of messages), in order."""
        ...

    def describe(self) -> dict[str, Any]:
        """Model reference, file hash, library versions, device: recorded with the run."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class TransformersOptions:
    """Options of the ``transformers`` backend."""

    dtype: str = "auto"  # auto (bf16 where supported), float32, bfloat16
    device: str = "auto"  # auto, cpu, cuda, cuda:1
    batch_size: int | None = None  # None: from free memory (at most 64), halved on out-of-memory
    device_map: str | None = None  # "auto": spread a model too large for one GPU (accelerate)
    base_model: str | None = None  # an adapter's base, instead of the one its adapter_config names
    trust_remote_code: bool = False  # run a model's own code (only for sources you trust)
    chat_template: str | None = None  # a Jinja chat template's text, for models without one
    use_chat_template: bool = True  # False: prompts as plain text


@dataclass(frozen=True)
class OpenAIOptions:
    """Options of the ``openai`` backend (any OpenAI-compatible chat-completions server)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str | None = None
    concurrency: int = 8
    timeout: float = 120.0
    max_retries: int = 3


BACKENDS = {
    "transformers": ("capsafe_core.backends.hf:TransformersBackend", TransformersOptions),
    "openai": ("capsafe_core.backends.openai_compat:OpenAIBackend", OpenAIOptions),
}


def backend_options(name: str, options: dict[str, Any]) -> Any:
    """The typed options of backend ``name``; an unknown option is a one-line error naming the accepted ones."""
    if name not in BACKENDS:
        raise unknown_name("backend", name, BACKENDS)
    cls = BACKENDS[name][1]
    accepted = [f.name for f in fields(cls)]
    for key in options:
        if key not in accepted:
            raise BadInput(f"Unknown option '{key}' for the {name} backend; its options are: {', '.join(accepted)}")
    return cls(**options)


def load_backend(name: str, *, model: str, **options: Any) -> Backend:
    """``load_backend("transformers", model="smollm2-135m-instruct", batch_size=8)`` or
    ``load_backend("openai", model=..., base_url=...)``; options as in ``TransformersOptions`` /
    ``OpenAIOptions``."""
    opts = backend_options(name, options)
    module, cls = BACKENDS[name][0].split(":")
    backend: Backend = getattr(importlib.import_module(module), cls)(model, **asdict(opts))
    return backend


def chat(prompt: str, decoding: Decoding | None = None) -> list[Message]:
    """A one-turn chat for ``prompt`` (with the decoding's system prompt, if any)."""
    msgs: list[Message] = []
    if decoding is not None and decoding.system_prompt:
        msgs.append({"role": "system", "content": decoding.system_prompt})
    msgs.append({"role": "user", "content": prompt})
    return msgs

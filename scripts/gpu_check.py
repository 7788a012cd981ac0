"""The CUDA path of the transformers backend, on a tiny model built here: generation on ``cuda`` in bf16,
batched equal to one-by-one in fp32, an adapter merged on its base, ``--device-map auto``, and the
batch size chosen from free GPU memory. Run it where a GPU is present (nothing in CI needs one):

    python scripts/gpu_check.py

It prints one line per check and exits 1 if any fails.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    import torch

    from capsafe_core.backends import Decoding, chat, load_backend
    from tests.tiny import make_tiny_model

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    ok = True
    tmp = Path(tempfile.mkdtemp())
    model = make_tiny_model(tmp / "model")
    prompts = [chat(p) for p in ("What is 2 + 2?", "Write a guide", "hi", "Tell me a story about a cat")]
    d = Decoding(max_new_tokens=8)

    def check(name: str, cond: bool, detail: str = "") -> None:
        nonlocal ok
        ok &= cond
        print(f"{'ok  ' if cond else 'FAIL'} {name} {detail}")

    b16 = load_backend("transformers", model=str(model), device="cuda", dtype="bfloat16")
    out = b16.generate(prompts, d)
    info = b16.describe()
    check("bf16 on cuda", info["dtype"] == "bfloat16" and info["device"].startswith("cuda"), str(info["hardware"]))
    check("auto batch size from free GPU memory", 1 <= b16.batch_size <= 64, f"batch {b16.batch_size}")
    check("every prompt answered", len(out) == len(prompts))
    f32 = load_backend("transformers", model=str(model), device="cuda", dtype="float32", batch_size=4)
    batched = [c.text for c in f32.generate(prompts, d)]
    single = [f32.generate([p], d)[0].text for p in prompts]
    check("fp32 batched == one by one", batched == single)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    net = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(model)),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    net.save_pretrained(str(tmp / "adapter"))
    adapter = load_backend("transformers", model=str(tmp / "adapter"), device="cuda", dtype="bfloat16")
    check("adapter merged on its base, on cuda", len(adapter.generate(prompts[:2], d)) == 2)
    mapped = load_backend("transformers", model=str(model), device="cuda", device_map="auto")
    check("--device-map auto", len(mapped.generate(prompts[:2], d)) == 2, str(mapped.device))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

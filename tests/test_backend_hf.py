"""The transformers backend on a tiny model built in the test."""

import pytest

from capsafe_core.backends import Decoding, chat, load_backend
from capsafe_core.backends.models import resolve_model
from capsafe_core.errors import BackendError, NotFound


@pytest.fixture(scope="module")
def backend(tiny_model):
    return load_backend("transformers", model=str(tiny_model), dtype="float32", device="cpu", batch_size=4)


PROMPTS = ["Tom has 5 apples. He gets 3 more.", "Write a guide", "hi", "What is two plus two, exactly?", "x"]


def test_batched_equals_one_by_one(backend):
    d = Decoding(max_new_tokens=10)
    batched = backend.generate([chat(p) for p in PROMPTS], d)
    single = [backend.generate([chat(p)], d)[0] for p in PROMPTS]
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.finish_reason in ("stop", "length") for c in batched)
    assert all(c.n_tokens is not None and c.n_tokens <= 10 for c in batched)


def test_seeded_sampling_is_reproducible(backend):
    d = Decoding(max_new_tokens=8, temperature=1.0, seed=3)
    a = backend.generate([chat(p) for p in PROMPTS], d)
    b = backend.generate([chat(p) for p in PROMPTS], d)
    assert a == b


def test_chat_template_applied(backend):
    text = backend.render(chat("hello"))
    assert text.startswith("<|im_start|>user\nhello<|im_end|>") and text.endswith("<|im_start|>assistant\n")


def test_describe_records_hash_and_versions(backend):
    info = backend.describe()
    assert info["model_hash"] and info["versions"]["torch"] and info["dtype"] == "float32"


def test_peft_adapter_folder(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    ref = resolve_model(tmp_path / "adapter")
    assert ref.kind == "peft" and ref.base is not None and ref.base.kind == "folder"
    b = load_backend("transformers", model=str(tmp_path / "adapter"), dtype="float32", device="cpu")
    assert len(b.generate([chat("hi")], Decoding(max_new_tokens=4))) == 1


def test_missing_model_and_unknown_alias(tmp_path):
    with pytest.raises(NotFound, match="No model at"):
        resolve_model(tmp_path / "nope")
    with pytest.raises(NotFound, match="alias"):
        resolve_model("smollm3-9000b")


def test_corrupt_model_file(tiny_model, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    (bad / "model.safetensors").write_bytes(b"this is not a safetensors file")
    with pytest.raises(BackendError, match="Could not load model"):
        load_backend("transformers", model=str(bad), device="cpu")


def test_not_a_model_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(BackendError, match="not a model folder"):
        resolve_model(tmp_path)

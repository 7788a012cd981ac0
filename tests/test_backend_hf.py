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


def test_fast_decode_equals_generate_when_rows_finish_early(tiny_model):
    """capsafe's loop drops finished rows from the batch: greedy outputs and top log-probabilities stay
    those of an unbatched ``generate`` loop, also when rows end at different steps."""
    from capsafe_core.backends.hf import TransformersBackend

    fast = TransformersBackend(str(tiny_model), dtype="float32", device="cpu", batch_size=5)
    slow = TransformersBackend(str(tiny_model), dtype="float32", device="cpu", batch_size=1, fast_decode=False)
    assert fast.fast_decode and not slow.fast_decode
    rows = []
    for p in PROMPTS:
        ids = fast.tokenizer(fast.render(chat(p)), add_special_tokens=False)["input_ids"]
        rows.append(fast._decode([ids], Decoding(max_new_tokens=12), 0, 0, None)[0][0])
    # a token some answers contain and others do not, made an end token: rows finish at different steps
    stop = next(t for r in rows for t in r[1:] if any(t not in other for other in rows))
    for b in (fast, slow):
        b.model.generation_config.eos_token_id = [stop, b.tokenizer.eos_token_id]
    d = Decoding(max_new_tokens=12)
    batched = fast.generate([chat(p) for p in PROMPTS], d, top_logprobs=3)
    single = [slow.generate([chat(p)], d, top_logprobs=3)[0] for p in PROMPTS]
    assert [c.text for c in batched] == [c.text for c in single]
    assert [c.n_tokens for c in batched] == [c.n_tokens for c in single]
    assert len({c.n_tokens for c in batched}) > 1
    for a, b in zip(batched, single, strict=True):
        assert a.logprobs is not None and b.logprobs is not None and len(a.logprobs) == len(b.logprobs)
        for sa, sb in zip(a.logprobs, b.logprobs, strict=True):
            assert sa.keys() == sb.keys()
            assert all(abs(sa[k] - sb[k]) < 1e-4 for k in sa)


def test_generation_config_with_processors_uses_generate(tiny_model):
    """A repetition penalty (or another logits processor) in the model's generation config is left to
    ``generate``, which applies it."""
    from capsafe_core.backends.hf import TransformersBackend

    b = TransformersBackend(str(tiny_model), dtype="float32", device="cpu", batch_size=2)
    b.model.generation_config.repetition_penalty = 1.3
    from capsafe_core.backends import decode

    assert not decode.supported(b.model)


@pytest.mark.parametrize("fast", [True, False], ids=["capsafe-loop", "generate"])
def test_auto_batches_fit_a_token_budget(tiny_model, monkeypatch, fast):
    """Without a given batch size, prompts are sorted by length and a batch holds at most the token
    budget: the positions its rows read (capsafe's loop, which buckets rows of unlike lengths), the
    padded prompt + answer (``generate``), so one long prompt does not pad a whole batch of short ones."""
    from capsafe_core.backends.hf import TransformersBackend

    b = TransformersBackend(str(tiny_model), dtype="float32", device="cpu", fast_decode=fast)
    assert b.auto_batch and b.token_budget
    b.token_budget = 200
    sizes = []
    real = b._batch

    def spy(tokens, decoding, i, top, prefix):
        read = sum(len(t) + 4 for t in tokens) if fast else len(tokens) * (max(len(t) for t in tokens) + 4)
        sizes.append((len(tokens), read))
        return real(tokens, decoding, i, top, prefix)

    monkeypatch.setattr(b, "_batch", spy)
    long = "word " * 120
    out = b.generate([chat(p) for p in [long, *PROMPTS, *PROMPTS]], Decoding(max_new_tokens=4))
    assert len(out) == 11
    assert sizes[0][0] == 1  # the long prompt alone
    assert all(read <= 200 or n == 1 for n, read in sizes)
    assert sum(n for n, _ in sizes) == 11 and len(sizes) < 11

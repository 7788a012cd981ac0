"""The parts of capsafe's decoding loop, each against what it replaces: the buffered KV cache against
``DynamicCache``, the decoding attention against SDPA, a shared prefix and grouped prefill against
plain left-padded batches, answer scoring against one unpadded row at a time (a tiny Llama, fp32)."""

import pytest

from capsafe_core.backends import Decoding, chat

PROMPTS = [
    "Tom has 5 apples. He gets 3 more. How many apples does he have now? Think it through " * 3,
    "Write a guide",
    "hi",
    "What is two plus two, exactly?",
    "x",
    "Explain why the sky is blue, in two sentences.",
]


@pytest.fixture(scope="module")
def loaded(tiny_model):
    from capsafe_core.backends.hf import TransformersBackend

    return TransformersBackend(str(tiny_model), dtype="float32", device="cpu", batch_size=8)


def token_ids(backend, prompts=PROMPTS):
    return [backend.tokenizer(backend.render(chat(p)), add_special_tokens=False)["input_ids"] for p in prompts]


def test_prefill_groups_bound_padding_and_cover_every_row():
    from capsafe_core.backends.kvcache import prefill_groups

    lengths = sorted([600, 580, 300, 120, 110, 100, 90, 60, 50, 49, 48, 30, 3, 2, 1], reverse=True)
    for tokens, slack, rows in ((4096, 1.25, None), (300, 1.25, None), (10_000, 2.0, 3), (1, 1.0, None)):
        groups = prefill_groups(lengths, tokens=tokens, slack=slack, rows=rows)
        assert [a for a, _ in groups] == [0] + [b for _, b in groups[:-1]] and groups[-1][1] == len(lengths)
        for a, b in groups:
            padded, real = (b - a) * lengths[a], sum(lengths[a:b])
            assert b - a == 1 or (padded <= tokens and padded <= slack * real and (rows is None or b - a <= rows))
    assert prefill_groups([], tokens=10) == []
    assert prefill_groups([5, 5, 5, 5], tokens=100) == [(0, 4)]


def test_common_prefix_leaves_every_prompt_a_token():
    from capsafe_core.backends.kvcache import common_prefix

    assert common_prefix([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == [1, 2, 3]
    assert common_prefix([[1, 2, 3], [1, 2, 3, 4]]) == [1, 2]  # the shorter keeps its last token
    assert common_prefix([[7], [7]]) == [] and common_prefix([]) == []


def test_buffered_cache_matches_dynamic_cache(loaded):
    """Prefill then ten steps: the buffered layers give the logits DynamicCache gives."""
    import torch
    from transformers import DynamicCache

    from capsafe_core.backends import kvcache

    model = loaded.model
    ids = torch.tensor([token_ids(loaded)[0]])
    logits = []
    for cache in (DynamicCache(config=model.config), kvcache.new_cache(model, ids.shape[1] + 10, buffered=True)):
        arg = {kvcache.cache_argument(model): cache}
        with torch.inference_mode():
            out = model(input_ids=ids, use_cache=True, **arg).logits[:, -1]
            steps = [out]
            for s in range(10):
                nxt = steps[-1].argmax(-1, keepdim=True)
                pos = torch.tensor([[ids.shape[1] + s]])
                mask = torch.ones(1, ids.shape[1] + s + 1, dtype=torch.long)
                out = model(input_ids=nxt, position_ids=pos, attention_mask=mask, use_cache=True, **arg)
                steps.append(out.logits[:, -1])
        logits.append(torch.cat(steps))
    assert torch.allclose(logits[0], logits[1], atol=1e-5)


def test_decoding_attention_equals_sdpa():
    """One query per row, grouped query heads, a padding mask: the same output as SDPA (fp32)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from capsafe_core.backends import attention

    class Module:  # what SDPA reads from the attention module
        num_key_value_groups = 3
        is_causal = True
        training = False

    torch.manual_seed(0)
    q, k, v = torch.randn(5, 6, 1, 8), torch.randn(5, 2, 11, 8), torch.randn(5, 2, 11, 8)
    mask = torch.ones(5, 1, 1, 11, dtype=torch.bool)
    mask[1, ..., :4] = False  # left padding
    mask[3, ..., 7:] = False  # positions not written yet
    want, _ = sdpa_attention_forward(Module(), q, k, v, mask, scaling=0.3)
    got, _ = attention.attention(Module(), q, k, v, mask, scaling=0.3)
    assert got.shape == want.shape == (5, 1, 6, 8)
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("queries", [2, 7, 32, 75])
def test_prompt_attention_equals_sdpa(queries):
    """Several queries per row (prompts, in blocks of ``QUERY_BLOCK``), grouped query heads, the queries the
    last positions: the same output as SDPA (fp32) with a causal bool mask with left padding, with the same
    mask additive, and with no mask (causal)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from capsafe_core.backends import attention

    class Module:  # what SDPA reads from the attention module
        num_key_value_groups = 3
        is_causal = True
        training = False

    torch.manual_seed(queries)
    rows, positions = 4, queries + 9  # 9 positions before the queries (a prefix already cached)
    q = torch.randn(rows, 6, queries, 8)
    k, v = torch.randn(rows, 2, positions, 8), torch.randn(rows, 2, positions, 8)
    causal = torch.ones(queries, positions, dtype=torch.bool).tril(positions - queries)
    mask = causal[None, None].repeat(rows, 1, 1, 1)
    mask[1, ..., 9:12] = False  # left padding of a shorter prompt (its padded queries see nothing of it)
    mask[1, 0, :3, 9:12] = causal[:3, 9:12]
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    cases = [(mask, k, v), (additive, k, v), (None, k[:, :, 9:], v[:, :, 9:])]  # no mask: transformers' no-past case
    for given, keys, values in cases:
        want, _ = sdpa_attention_forward(Module(), q, keys, values, given, scaling=0.3)
        got, _ = attention.attention(Module(), q, keys, values, given, scaling=0.3)
        assert got.shape == want.shape == (rows, queries, 6, 8)
        assert torch.allclose(got, want, atol=1e-5)


def test_shared_prefix_and_groups_equal_plain_batches(loaded):
    """Greedy tokens with the prompts' shared prefix run once and grouped prefill == one prompt at a time
    with transformers' own cache and attention (fp32)."""
    from capsafe_core.backends import decode, kvcache

    prompts = token_ids(loaded)
    prefix = kvcache.shared_prefix(loaded.model, prompts)
    assert prefix is not None and len(prefix) >= kvcache.MIN_PREFIX
    assert len(kvcache.prefill_groups(sorted((len(p) for p in prompts), reverse=True))) > 1
    eos = loaded._eos_ids()
    batched = decode.decode(loaded.model, prompts, pad_id=0, max_new_tokens=12, eos_ids=eos, prefix=prefix)
    for p, got in zip(prompts, batched.tokens, strict=True):
        alone = loaded.model.generate(
            input_ids=__import__("torch").tensor([p]), max_new_tokens=12, do_sample=False, pad_token_id=0
        )[0, len(p) :].tolist()
        n = next((j + 1 for j, t in enumerate(alone) if t in eos), len(alone))
        assert got == alone[:n]


def test_prefix_must_match(loaded):
    from capsafe_core.backends import decode, kvcache

    prompts = token_ids(loaded)
    prefix = kvcache.shared_prefix(loaded.model, prompts)
    with pytest.raises(ValueError, match="prefix"):
        decode.decode(loaded.model, [[9, 9, 9, 9, 9, 9]], pad_id=0, max_new_tokens=2, eos_ids={0}, prefix=prefix)


def test_answer_logprobs_equal_one_row_at_a_time(loaded):
    import torch

    from capsafe_core.backends import scoring

    prompts = token_ids(loaded)
    answers = [prompts[(i + 1) % len(prompts)][-(i + 3) :] for i in range(len(prompts))]
    got = scoring.answer_logprobs(loaded.model, list(zip(prompts, answers, strict=True)), pad_id=0, tokens=64)
    for p, a, lp in zip(prompts, answers, got, strict=True):
        with torch.inference_mode():
            logits = loaded.model(input_ids=torch.tensor([p + a])).logits[0, len(p) - 1 : -1].float()
        want = torch.log_softmax(logits, -1).gather(-1, torch.tensor(a)[:, None]).squeeze(-1)
        assert lp.shape == want.shape and torch.allclose(lp, want, atol=1e-4)
    with pytest.raises(ValueError, match="answer"):
        scoring.answer_logprobs(loaded.model, [(prompts[0], [])], pad_id=0)


def test_generation_unchanged_with_the_attention_switched_back(loaded):
    """The decoding attention is only switched on inside the loop: the model's own is restored."""
    before = loaded.model.config._attn_implementation
    loaded.generate([chat(p) for p in PROMPTS[:3]], Decoding(max_new_tokens=3))
    assert loaded.model.config._attn_implementation == before


def test_buckets_with_rows_finishing_early(loaded):
    """Rows of unlike prompt lengths in separate buckets, rows ending at different steps (and leaving the
    batch): greedy tokens == each prompt alone with transformers' own cache and attention."""
    import torch

    from capsafe_core.backends import decode, kvcache

    prompts = token_ids(loaded, [*PROMPTS, PROMPTS[0] + " Go on.", "Why?"])
    lengths = sorted((len(p) for p in prompts), reverse=True)
    groups = kvcache.prefill_groups(lengths)
    assert len(kvcache.buckets(groups, [lengths[a] for a, _ in groups])) > 1
    alone = []
    for p in prompts:
        out = loaded.model.generate(input_ids=torch.tensor([p]), max_new_tokens=16, do_sample=False, pad_token_id=0)
        alone.append(out[0, len(p) :].tolist())

    def ends(t):  # the steps at which rows would end were t an end token
        return {r.index(t) if t in r else len(r) for r in alone}

    stop = max({t for r in alone for t in r}, key=lambda t: len(ends(t)))
    got = decode.decode(loaded.model, prompts, pad_id=0, max_new_tokens=16, eos_ids={stop}).tokens
    want = [r[: r.index(stop) + 1] if stop in r else r for r in alone]
    assert got == want
    assert len({len(r) for r in got}) > 2  # rows leave the batch at several steps

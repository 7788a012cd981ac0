"""capsafe finetune on a tiny model: checkpoints, capability logging, stopping at the target."""

import json

import polars as pl
import pytest

from capsafe_core import arithmetic, benchmarks
from capsafe_core.errors import BadInput
from capsafe_core.finetune import MITIGATIONS, FinetuneConfig, check_no_overlap, finetune, mix, read_chat_jsonl

TASK = list(arithmetic.chat_examples(arithmetic.train_split(64)))


def cfg(tiny, tmp_path, **kw):
    base = dict(
        experiment="ft",
        model=str(tiny),
        train=TASK,
        output_dir=tmp_path / "ck",
        capability_limit=4,
        save_every=2,
        max_steps=6,
        batch_size=4,
        max_length=64,
        bf16=False,
        progress=False,
        max_new_tokens=8,
    )
    base.update(kw)
    return FinetuneConfig(**base)


def test_checkpoints_and_capability_are_stored(store, tiny_model, tmp_path):
    res = finetune(store, cfg(tiny_model, tmp_path))
    assert res.steps == [0, 2, 4, 6]
    assert set(res.capability) == {0, 2, 4, 6}
    assert all(0.0 <= c <= 1.0 for c in res.capability.values())
    cks = store.checkpoints("ft")
    assert cks["step"].to_list() == [0, 2, 4, 6] and set(cks["mitigation"]) == {"none"}
    assert all(n == 4 for n in cks["generations"].to_list())
    assert (tmp_path / "ck" / "step-4" / "config.json").exists()
    exp = store.experiments().to_dicts()[0]
    assert exp["task"] == "arithmetic" and exp["capability_metric"] == "final_number"
    meta = json.loads(cks["meta"][1])
    assert meta["finetune"]["mitigation"] == "none" and meta["finetune"]["learning_rate"] == 5e-5


def test_stops_after_target_plus_extra_saves(store, tiny_model, tmp_path):
    # a target of 0 is reached at step 0; two more saves, then stop long before max_steps
    res = finetune(store, cfg(tiny_model, tmp_path, capability_target=0.0, extra_saves=2, max_steps=50))
    assert res.reached_at == 0 and res.stopped_early
    assert res.steps == [0, 2, 4]


def test_target_never_reached_runs_to_max_steps(store, tiny_model, tmp_path):
    res = finetune(store, cfg(tiny_model, tmp_path, capability_target=1.01, max_steps=4))
    assert res.reached_at is None and not res.stopped_early and res.steps == [0, 2, 4]


def test_lora_saves_adapters_and_step0_copy(store, tiny_model, tmp_path):
    finetune(store, cfg(tiny_model, tmp_path, max_steps=2))
    res = finetune(
        store,
        cfg(
            tiny_model,
            tmp_path / "l",
            mitigation="lora",
            max_steps=2,
            step0_from="none",
            eval_benchmarks=["advbench"],
            eval_limit=2,
            eval_evaluators=["keyword_refusal"],
            keep_checkpoints=False,
        ),
    )
    assert res.steps == [0, 2]
    assert not (tmp_path / "l" / "ck" / "step-2").exists()
    cks = store.checkpoints("ft").filter(store.checkpoints("ft")["mitigation"] == "lora")
    assert cks["step"].to_list() == [0, 2]
    assert '"copied_from"' in cks["meta"][0]
    assert cks["generations"].to_list()[1] == 4 + 2  # capability + advbench


def test_a_second_run_is_stored_under_its_seed(store, tiny_model, tmp_path):
    """Seed 1 of a mitigation: its own checkpoints beside seed 0's, step 0 copied from seed 0 (same
    weights, by hash), the same evaluation prompts."""
    finetune(store, cfg(tiny_model, tmp_path, max_steps=2))
    finetune(store, cfg(tiny_model, tmp_path / "s1", max_steps=2, seed=1))
    cks = store.checkpoints("ft")
    assert sorted(zip(cks["seed"], cks["step"], strict=True)) == [(0, 0), (0, 2), (1, 0), (1, 2)]
    one = cks.filter(cks["seed"] == 1)
    assert '"copied_from"' in one["meta"][0]
    prompts = [
        {r[0] for r in store.conn.execute("SELECT prompt_id FROM generations WHERE checkpoint_id = ?", (i,))}
        for i in cks["id"].to_list()
    ]
    assert all(p == prompts[0] for p in prompts)


def test_step0_is_not_copied_from_other_weights(store, tiny_model, tmp_path):
    """A starting model saved again under the same path with other weights is evaluated afresh."""
    import shutil

    from tests.tiny import make_tiny_model

    start = tmp_path / "start"
    shutil.copytree(tiny_model, start)
    finetune(store, cfg(start, tmp_path / "a", max_steps=2))
    shutil.rmtree(start)
    make_tiny_model(start, seed=7)
    finetune(store, cfg(start, tmp_path / "b", max_steps=2, seed=1))
    one = store.checkpoints("ft").filter(pl.col("seed") == 1)
    assert '"copied_from"' not in one["meta"][0] and '"run"' in one["meta"][0]


def test_training_prompts_must_not_be_evaluation_prompts():
    leak = [[{"role": "user", "content": benchmarks.load("arithmetic")[0].text}, {"role": "assistant", "content": "x"}]]
    with pytest.raises(BadInput, match="also in the evaluation benchmark 'arithmetic'"):
        check_no_overlap(TASK + leak, ["arithmetic", "advbench"])
    check_no_overlap(TASK, ["arithmetic", "advbench", "harmbench"])


def test_safety_mix_share():
    safety = [
        [{"role": "user", "content": f"bad {i}"}, {"role": "assistant", "content": "I'm sorry"}] for i in range(50)
    ]
    mixed = mix(TASK, safety, MITIGATIONS["safety_mix"].safety_share, seed=0)
    share = sum(c[0]["content"].startswith("bad") for c in mixed) / len(mixed)
    assert abs(share - MITIGATIONS["safety_mix"].safety_share) < 0.02
    with pytest.raises(BadInput, match="--safety-data"):
        mix(TASK, [], 0.2, seed=0)


def test_read_chat_jsonl_errors(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n{bad\n')
    with pytest.raises(BadInput, match="line 2 is not valid JSON"):
        read_chat_jsonl(p)
    p.write_text('{"prompt": "a", "response": "b"}\n')
    assert read_chat_jsonl(p)[0][1]["content"] == "b"


def test_unknown_mitigation(store, tiny_model, tmp_path):
    from capsafe_core.errors import NotFound

    with pytest.raises(NotFound, match=r"Unknown mitigation 'lorra'\. Did you mean 'lora'"):
        finetune(store, cfg(tiny_model, tmp_path, mitigation="lorra"))

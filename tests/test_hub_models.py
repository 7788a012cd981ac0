"""The models users have: Hugging Face Hub ids (with a revision), PEFT adapters whose base is a Hub id,
a missing base, out-of-memory batches, chat templates and remote code. Offline: the Hugging Face cache
is built in the test in the layout huggingface_hub writes (blobs, snapshots of symlinks, refs), and
huggingface_hub's own ``scan_cache_dir`` must read it back."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from capsafe_core.backends import Decoding, chat, load_backend
from capsafe_core.backends.models import resolve_model
from capsafe_core.errors import BackendError
from capsafe_core.runner import RunSpec, run_checkpoint
from capsafe_core.store import Store
from tests.conftest import dump

REPO = "capsafe-test/tiny-chat"
MAIN = "a" * 40
V1 = "b" * 40


def _snapshot(repo_dir: Path, commit: str, files: Path) -> None:
    """One revision the way huggingface_hub stores it: content-addressed blobs, a snapshot of links."""
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in sorted(files.iterdir()):
        if not f.is_file():
            continue
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        blob = repo_dir / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            shutil.copyfile(f, blob)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / digest)


@pytest.fixture
def hf_cache(tiny_model, tmp_path, monkeypatch) -> Path:
    home = tmp_path / "hf"
    repo_dir = home / "hub" / ("models--" + REPO.replace("/", "--"))
    _snapshot(repo_dir, MAIN, tiny_model)
    _snapshot(repo_dir, V1, tiny_model)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(MAIN)
    (repo_dir / "refs" / "v1").write_text(V1)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(home / "hub")
    (repo,) = [r for r in info.repos if r.repo_id == REPO]
    assert {r.commit_hash for r in repo.revisions} == {MAIN, V1} and not info.warnings
    return home


def _adapter(tiny_model: Path, out: Path, base: str) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    net = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_model)),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    net.save_pretrained(str(out))
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = base
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def _run(store: Store, model: str, step: int = 0) -> dict:
    spec = RunSpec(
        experiment="hub",
        model=model,
        step=step,
        benchmarks=["arithmetic"],
        limit=2,
        evaluators=["final_number"],
        dtype="float32",
        device="cpu",
        decoding=Decoding(max_new_tokens=4),
    )
    run_checkpoint(store, spec, progress=False)
    meta = store.checkpoints("hub").filter(step=step)["meta"][0]
    return json.loads(meta)["run"]["backend"]


def test_hub_id_and_revision_resolve_from_the_cache_and_record_the_commit(hf_cache, store):
    assert resolve_model(REPO).hub.commit == MAIN  # type: ignore[union-attr]
    assert _run(store, REPO)["model_source"]["hub"] == {"repo_id": REPO, "revision": None, "commit": MAIN}
    source = _run(store, f"{REPO}@v1", step=1)["model_source"]
    assert source["hub"] == {"repo_id": REPO, "revision": "v1", "commit": V1}
    assert source["path"].endswith(f"snapshots/{V1}")


def test_adapter_on_a_hub_base(hf_cache, store, tiny_model, tmp_path):
    adapter = _adapter(tiny_model, tmp_path / "checkpoint-40", REPO)
    source = _run(store, str(adapter))["model_source"]
    assert source["kind"] == "peft" and source["base"]["hub"]["commit"] == MAIN
    assert store.counts()["generations"] == 2


def test_missing_base_is_one_line_and_leaves_the_database(hf_cache, tiny_model, tmp_path):
    from capsafe_core.cli import cli

    adapter = _adapter(tiny_model, tmp_path / "lora", "meta-llama/Llama-3.1-8B-Instruct")
    db = tmp_path / "r.db"
    CliRunner().invoke(cli, ["init", "--db", str(db)])
    before = dump(db)
    res = CliRunner().invoke(
        cli, ["run", "-e", "x", "--model", str(adapter), "-b", "arithmetic", "--limit", "2", "--db", str(db)]
    )
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1 and len(lines) == 1, res.output
    assert "meta-llama/Llama-3.1-8B-Instruct" in lines[0] and str(hf_cache / "hub") in lines[0]
    assert "huggingface-cli download meta-llama/Llama-3.1-8B-Instruct" in lines[0]
    assert dump(db) == before
    # --base-model says where the base is instead
    res = CliRunner().invoke(
        cli,
        ["run", "-e", "x", "--model", str(adapter), "--base-model", REPO, "-b", "arithmetic", "--limit", "2"]
        + ["--evaluators", "final_number", "--dtype", "float32", "--device", "cpu", "-q", "--db", str(db)],
    )
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("fast", [True, False], ids=["capsafe-loop", "generate"])
def test_out_of_memory_halves_the_batch(tiny_model, monkeypatch, fast):
    import torch

    from capsafe_core.backends import decode

    backend = load_backend("transformers", model=str(tiny_model), dtype="float32", device="cpu", batch_size=8)
    backend.fast_decode = fast
    prompts = [chat(f"What is {i} plus {i}?") for i in range(7)]
    expected = [c.text for c in backend.generate(prompts, Decoding(max_new_tokens=5))]
    sizes: list[int] = []

    def too_big(n: int) -> None:  # a device that holds at most two sequences
        sizes.append(n)
        if n > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")

    real_generate, real_decode = backend.model.generate, decode.decode

    def tight_generate(*args, **kwargs):
        too_big(kwargs["input_ids"].shape[0])
        return real_generate(*args, **kwargs)

    def tight_decode(model, prompts, *args, **kwargs):
        too_big(len(prompts))
        return real_decode(model, prompts, *args, **kwargs)

    backend.model.generate = tight_generate
    monkeypatch.setattr(decode, "decode", tight_decode)
    got = [c.text for c in backend.generate(prompts, Decoding(max_new_tokens=5))]
    assert got == expected
    assert backend.batch_size == 2 and backend.halvings == 2 and sizes[:3] == [7, 4, 2]


def test_batch_size_from_free_memory(tiny_model):
    backend = load_backend("transformers", model=str(tiny_model), dtype="float32", device="cpu")
    assert 1 <= backend.batch_size <= 256


def test_chat_template_missing_given_or_off(tiny_model, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_model, plain)
    cfg = json.loads((plain / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(cfg))
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(BackendError, match=r"no chat template; pass --chat-template FILE .* or --no-chat-template"):
        load_backend("transformers", model=str(plain), device="cpu")
    off = load_backend("transformers", model=str(plain), device="cpu", use_chat_template=False)
    assert off.render(chat("hello")) == "hello\n"
    mine = load_backend(
        "transformers", model=str(plain), device="cpu", chat_template="Q: {{ messages[-1]['content'] }}\nA:"
    )
    assert mine.render(chat("hello")) == "Q: hello\nA:"


def test_remote_code_is_refused_with_the_flag_named(tiny_model, tmp_path):
    custom = tmp_path / "custom"
    shutil.copytree(tiny_model, custom)
    cfg = json.loads((custom / "config.json").read_text())
    cfg.update(
        model_type="capsafe_custom",
        auto_map={
            "AutoConfig": "configuration_custom.CustomConfig",
            "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
        },
    )
    (custom / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BackendError, match="pass --trust-remote-code if you trust its source"):
        load_backend("transformers", model=str(custom), device="cpu")

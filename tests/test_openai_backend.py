"""The OpenAI-compatible backend against a real llama.cpp server serving the shipped SmolLM2 GGUF."""

import pytest

from capsafe_core.backends import Decoding, chat, load_backend
from capsafe_core.errors import BackendError
from capsafe_core.runner import RunSpec, run_checkpoint
from tests.conftest import dump
from tests.servers import free_port, llama_cpp_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    from capsafe_core.backends.models import resolve_model

    gguf = resolve_model("smollm2-135m-instruct").path
    with llama_cpp_server(str(gguf), n_ctx=512) as url:
        yield url


def test_generates_through_the_server(server):
    b = load_backend("openai", model="smollm2", base_url=server, concurrency=2)
    outs = b.generate([chat("What is the capital of France?"), chat("Say hello.")], Decoding(max_new_tokens=24))
    assert len(outs) == 2 and all(o.text.strip() for o in outs)
    assert "Paris" in outs[0].text
    assert all(o.finish_reason in ("stop", "length") and o.n_tokens for o in outs)
    assert b.describe()["server_models"]


def test_logprobs_come_back(server):
    b = load_backend("openai", model="smollm2", base_url=server)
    out = b.generate([chat("Pick a number from 0 to 100.")], Decoding(max_new_tokens=2), top_logprobs=5)[0]
    assert out.logprobs and len(out.logprobs[0]) >= 1


def test_run_through_the_server_then_skip(store, server):
    spec = RunSpec(
        experiment="http",
        model="smollm2",
        benchmarks=["advbench", "arithmetic"],
        limit=3,
        backend="openai",
        base_url=server,
        evaluators=["keyword_refusal"],
        decoding=Decoding(max_new_tokens=16),
    )
    res = run_checkpoint(store, spec, progress=False)
    assert res.generations_added == 6 and res.judgments_added == 3 + 3
    again = run_checkpoint(store, spec, progress=False)
    assert again.generations_added == 0 and again.judgments_added == 0


def test_server_error_is_clear_and_writes_nothing(store, db_path, server):
    # the longest HarmBench (contextual) prompts exceed the server's 512-token context
    before = dump(db_path)
    spec = RunSpec(
        experiment="http-err",
        model="smollm2",
        benchmarks=["harmbench"],
        backend="openai",
        base_url=server,
        evaluators=["keyword_refusal"],
        decoding=Decoding(max_new_tokens=16),
        batch_size=4,
        max_retries=0,
    )
    with pytest.raises(BackendError, match=r"answered HTTP 4\d\d: .+"):
        run_checkpoint(store, spec, progress=False)
    assert dump(db_path) == before


def test_timeout_is_clear_and_writes_nothing(store, db_path, server):
    before = dump(db_path)
    spec = RunSpec(
        experiment="http-slow",
        model="smollm2",
        benchmarks=["advbench"],
        limit=2,
        backend="openai",
        base_url=server,
        evaluators=["keyword_refusal"],
        decoding=Decoding(max_new_tokens=64),
        timeout=0.05,
        max_retries=1,
    )
    with pytest.raises(BackendError, match=r"did not answer within 0.05 s after 2 tries"):
        run_checkpoint(store, spec, progress=False)
    assert dump(db_path) == before


def test_unreachable_server(store, db_path):
    before = dump(db_path)
    with pytest.raises(
        BackendError, match=r"Cannot reach an OpenAI-compatible server.*start the server or fix --base-url"
    ):
        load_backend("openai", model="m", base_url=f"http://127.0.0.1:{free_port()}/v1")
    assert dump(db_path) == before

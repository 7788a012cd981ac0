"""The runner on a tiny model: counts, skipping what is stored, interrupts, bad input."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from capsafe_core.backends import Decoding
from capsafe_core.errors import BadInput, NotFound
from capsafe_core.runner import RunSpec, judge_stored, run_checkpoint
from capsafe_core.store import Store
from tests.conftest import dump

FAST = ["keyword_refusal", "repetition", "degenerate"]


def spec(tiny, **kw):
    base = dict(
        experiment="t",
        model=str(tiny),
        benchmarks=["advbench", "xstest", "arithmetic"],
        limit=3,
        evaluators=FAST,
        dtype="float32",
        device="cpu",
        batch_size=4,
        decoding=Decoding(max_new_tokens=8),
    )
    base.update(kw)
    return RunSpec(**base)


def test_run_stores_everything_then_skips(store, tiny_model):
    res = run_checkpoint(store, spec(tiny_model), progress=False)
    n_prompts = 3 * 4  # advbench, xstest_safe, xstest_unsafe, arithmetic
    assert res.generations_added == n_prompts
    # keyword_refusal: 9 safety/overrefusal; repetition + degenerate: 12 each; final_number: 3
    assert res.judgments_added == 9 + 12 + 12 + 3
    assert res.per_evaluator["final_number"] == 3
    before = store.counts()
    again = run_checkpoint(store, spec(tiny_model), progress=False)
    assert again.generations_added == 0 and again.judgments_added == 0
    assert again.generations_stored == n_prompts
    assert store.counts() == before
    meta = store.checkpoints("t")["meta"][0]
    assert '"model_hash"' in meta and '"decoding"' in meta and '"torch"' in meta


def test_judge_adds_an_evaluator_later(store, tiny_model):
    run_checkpoint(store, spec(tiny_model), progress=False)
    res = judge_stored(store, "keyword_refusal_broad,xstest_strmatch", experiment="t", progress=False)
    assert res.judgments_added == 9 * 2
    assert judge_stored(store, "keyword_refusal_broad", progress=False).judgments_added == 0


def test_new_limit_only_adds(store, tiny_model):
    run_checkpoint(store, spec(tiny_model, benchmarks=["advbench"], limit=2), progress=False)
    res = run_checkpoint(store, spec(tiny_model, benchmarks=["advbench"], limit=4), progress=False)
    assert res.generations_added == 2 and res.generations_stored == 2


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"benchmarks": ["advbnch"]}, NotFound, "Unknown benchmark 'advbnch'. Did you mean 'advbench'"),
        ({"evaluators": ["keyword_refsal"]}, NotFound, "Unknown evaluator 'keyword_refsal'"),
        ({"model": "/nonexistent/model"}, NotFound, "No model at"),
        ({"model": "smolm2"}, NotFound, "No model at 'smolm2'"),
        ({"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}, Exception, "Cannot reach"),
        ({"limit": 0}, BadInput, "at least 1"),
    ],
)
def test_bad_input_leaves_database_unchanged(store, db_path, tiny_model, kw, err, match):
    run_checkpoint(store, spec(tiny_model, benchmarks=["advbench"], limit=1), progress=False)
    before = dump(db_path)
    with pytest.raises(err, match=match):
        run_checkpoint(store, spec(tiny_model, experiment="other", **kw), progress=False)
    assert dump(db_path) == before


def _count(db, sql):
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def _cli(db, model):
    exe = os.path.join(os.path.dirname(sys.executable), "capsafe")
    return [
        exe,
        "run",
        "-e",
        "intr",
        "--model",
        str(model),
        "-b",
        "advbench",
        "--limit",
        "40",
        "--batch-size",
        "1",
        "--max-new-tokens",
        "120",
        "--evaluators",
        "keyword_refusal",
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "-q",
        "--db",
        str(db),
    ]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_resumes_without_gaps_or_duplicates(tmp_path, tiny_model, sig):
    db = tmp_path / "intr.db"
    # a shell that started pytest in the background leaves SIGINT ignored, and children inherit that
    proc = subprocess.Popen(
        _cli(db, tiny_model),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 240
    while _count(db, "SELECT count(*) FROM generations") < 5:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    partial = _count(db, "SELECT count(*) FROM generations")
    assert 5 <= partial < 40, "the run finished before it could be interrupted"
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "run the same command again to resume" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    done = subprocess.run(_cli(db, tiny_model), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{40 - partial} added, {partial} already stored" in done.stdout
    assert _count(db, "SELECT count(*) FROM generations") == 40
    assert _count(db, "SELECT count(DISTINCT prompt_id) FROM generations") == 40
    assert _count(db, "SELECT count(*) FROM judgments") == 40
    with Store.open(db) as s:
        assert s.counts()["checkpoints"] == 1

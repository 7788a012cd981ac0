"""The shipped SmolLM2-135M-Instruct through `capsafe run` (slow: a few minutes on 2 CPU cores)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def capsafe(*args, db):
    exe = os.path.join(os.path.dirname(sys.executable), "capsafe")
    return subprocess.run([exe, *args, "--db", str(db)], capture_output=True, text=True, timeout=1800)


def test_run_smollm2_then_rerun_adds_nothing(tmp_path):
    db = tmp_path / "smol.db"
    args = [
        "run",
        "-e",
        "smol",
        "--model",
        "smollm2-135m-instruct",
        "-b",
        "advbench,xstest,arithmetic",
        "--limit",
        "20",
        "--max-new-tokens",
        "48",
        "-q",
    ]
    first = capsafe(*args, db=db)
    assert first.returncode == 0, first.stderr[-2000:]
    # 20 advbench + 20 xstest_safe + 20 xstest_unsafe + 20 arithmetic
    assert "generations: 80 added, 0 already stored" in first.stdout
    second = capsafe(*args, db=db)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "generations: 0 added, 80 already stored; judgments: 0 added" in second.stdout
    evs = {e["name"]: e["judgments"] for e in json.loads(capsafe("ls", "evaluators", "--json", db=db).stdout)}
    for name in ("keyword_refusal", "keyword_refusal_broad", "xstest_strmatch"):
        assert evs[name] == 60  # safety + over-refusal prompts
    for name in ("repetition", "degenerate", "language", "relevance", "perplexity", "coherence"):
        assert evs[name] == 80  # every response
    assert evs["final_number"] == 20
    cks = json.loads(capsafe("ls", "checkpoints", "--json", db=db).stdout)
    run = json.loads(cks[0]["meta"])["run"]
    assert run["backend"]["model_hash"] and run["backend"]["versions"]["transformers"]
    assert run["decoding"]["max_new_tokens"] == 48 and run["seed"] == 0

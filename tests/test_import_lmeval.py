"""capsafe import lm-eval: output of a real lm-eval run (tiny local model, tasks from YAML, --log_samples)."""

import json
import shutil

import pytest

from capsafe_core.importers.common import CheckpointArgs
from capsafe_core.importers.lmeval import import_lm_eval
from tests.conftest import dump
from tests.tool_outputs import JBB_ARTIFACT, assert_rejected, import_cli


def files(out, pattern):
    return sorted(out.rglob(pattern))


def samples(out, task):
    (path,) = files(out, f"samples_{task}_*.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_folder_with_two_tasks(store, lm_eval_output, tiny_model):
    result = import_lm_eval(store, lm_eval_output)
    assert result.added == {"checkpoints": 1, "prompts": 6, "generations": 6, "judgments": 6, "human_labels": 0}
    ck = store.checkpoints().to_dicts()[0]
    assert (ck["experiment"], ck["mitigation"], ck["step"], ck["model_ref"]) == ("model", "none", 0, str(tiny_model))
    assert dict(store.conn.execute("SELECT name, kind FROM benchmarks").fetchall()) == {
        "tiny_arith": "capability",
        "tiny_choice": "capability",
    }
    got = {
        (r[0], r[1]): r[2:]
        for r in store.conn.execute(
            "SELECT b.name, p.ext_id, p.text, p.reference, g.response, v.name, j.label, j.score, g.decoding "
            "FROM judgments j JOIN evaluators v ON v.id = j.evaluator_id JOIN generations g ON g.id = j.generation_id "
            "JOIN prompts p ON p.id = g.prompt_id JOIN benchmarks b ON b.id = p.benchmark_id"
        )
    }
    for line in samples(lm_eval_output, "tiny_arith"):
        text, ref, resp, ev, label, score, decoding = got["tiny_arith", str(line["doc_id"])]
        assert (text, ref, resp, ev) == (
            line["arguments"]["gen_args_0"]["arg_0"],
            line["target"],
            line["resps"][0][0],
            "lm-eval:exact_match",
        )
        assert score == line["exact_match"] and label == ("correct" if score == 1 else "incorrect")
        assert json.loads(decoding)["gen_kwargs"]["max_gen_toks"] == 8
    choice = samples(lm_eval_output, "tiny_choice")
    for line in choice:
        text, ref, resp, ev, label, score, _ = got["tiny_choice", str(line["doc_id"])]
        lls = [float(r[0][0]) for r in line["resps"]]
        assert resp == ["4", "5", "8"][lls.index(max(lls))]  # the most likely choice
        assert ref == ["4", "5", "8"][int(line["target"])]
        assert (ev, score) == ("lm-eval:acc", line["acc"])
    assert {line["acc"] for line in choice} <= {0.0, 1.0}


def test_results_file_samples_file_and_folder_are_one_run(store, db_path, lm_eval_output):
    import_lm_eval(store, lm_eval_output)
    before = dump(db_path)
    for path in [*files(lm_eval_output, "results_*.json"), *files(lm_eval_output, "samples_*.jsonl")]:
        again = import_lm_eval(store, path)
        assert all(v == 0 for v in again.added.values()), path
    assert dump(db_path) == before


def test_flags_name_the_checkpoint(db_path, lm_eval_output):
    res = import_cli(db_path, "lm-eval", str(lm_eval_output), "-e", "my-ft", "-m", "lora", "--step", "40")
    assert res.exit_code == 0, res.output
    assert "Imported 6 rows" in res.output
    from capsafe_core.store import Store

    with Store.open(db_path) as s:
        assert s.checkpoints()["experiment", "mitigation", "step"].rows() == [("my-ft", "lora", 40)]


def test_samples_without_results_need_an_experiment(store, tmp_path, lm_eval_output):
    (src,) = files(lm_eval_output, "samples_tiny_arith_*.jsonl")
    lone = tmp_path / src.name
    shutil.copy(src, lone)
    with pytest.raises(Exception, match=r"has no results_<datetime>.json next to it .*--experiment NAME"):
        import_lm_eval(store, lone)
    assert import_lm_eval(store, lone, CheckpointArgs(experiment="x")).added["generations"] == 3


# --- bad input ----------------------------------------------------------------------------


@pytest.fixture
def filled(store, db_path, lm_eval_output):
    import_lm_eval(store, lm_eval_output)
    return dump(db_path)


@pytest.fixture
def run_copy(tmp_path, lm_eval_output):
    """A copy of the lm-eval output folder to damage."""
    return shutil.copytree(lm_eval_output, tmp_path / "copy")


def test_other_tools_files(tmp_path, db_path, filled, inspect_logs):
    fake = tmp_path / "results_2024-01-01T00-00-00.000000.json"
    shutil.copy(JBB_ARTIFACT, fake)
    assert_rejected(
        import_cli(db_path, "lm-eval", str(fake)),
        r"is a JailbreakBench artifact, not an lm-evaluation-harness results file; import it with: capsafe import jbb",
    )
    assert_rejected(
        import_cli(db_path, "lm-eval", str(inspect_logs["arith_json"])),
        r"is an Inspect eval log, not an lm-evaluation-harness results file; import it with: capsafe import inspect",
    )
    assert dump(db_path) == filled


def test_missing_field_in_a_sample(db_path, filled, run_copy):
    (path,) = files(run_copy, "samples_tiny_choice_*.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    broken = json.loads(lines[1])
    del broken["resps"]
    lines[1] = json.dumps(broken)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert_rejected(import_cli(db_path, "lm-eval", str(run_copy)), r"samples_tiny_choice_.*line 2 has no 'resps'")
    assert dump(db_path) == filled


def test_non_utf8_samples(db_path, filled, run_copy):
    (path,) = files(run_copy, "samples_tiny_arith_*.jsonl")
    path.write_bytes(path.read_bytes().replace(b"What is 3 + 5?", "Qu\xe9?".encode("latin-1")))
    assert_rejected(import_cli(db_path, "lm-eval", str(run_copy)), r"samples_tiny_arith_.* line 2 is not UTF-8")
    assert dump(db_path) == filled


def test_results_without_samples_or_cut_short(db_path, filled, run_copy):
    for p in files(run_copy, "samples_*.jsonl"):
        p.unlink()
    (results,) = files(run_copy, "results_*.json")
    assert_rejected(
        import_cli(db_path, "lm-eval", str(results)), r"has no samples_<task>_<datetime>.jsonl .*--log_samples"
    )
    (run_copy / "more").mkdir()
    cut = run_copy / "more" / "results_2024-01-01T00-00-00.000000.json"
    cut.write_bytes(results.read_bytes()[:200])
    (run_copy / "more" / "samples_t_2024-01-01T00-00-00.000000.jsonl").write_text('{"doc_id": 0}\n', encoding="utf-8")
    assert_rejected(
        import_cli(db_path, "lm-eval", str(cut)), r"results_2024-01-01T00-00-00.000000.json is not valid JSON"
    )
    assert dump(db_path) == filled

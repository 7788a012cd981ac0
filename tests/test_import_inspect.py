"""capsafe import inspect: logs written by Inspect itself (mockllm/model, offline), .eval and .json."""

import json

import pytest

from capsafe_core.importers.inspect_log import import_inspect
from tests.conftest import dump
from tests.tool_outputs import LONG_PROMPT, assert_rejected, import_cli

SCORERS = ("inspect:match", "inspect:includes", "inspect:says_answer")


def rows(store, sql, *params):
    return store.conn.execute(sql, params).fetchall()


def test_eval_log_samples_and_scorers(store, inspect_logs):
    result = import_inspect(store, [inspect_logs["arith_eval"]])
    assert result.added == {"checkpoints": 1, "prompts": 3, "generations": 3, "judgments": 9, "human_labels": 0}
    got = rows(
        store,
        "SELECT p.ext_id, p.text, p.category, p.reference, g.response, g.n_tokens, g.finish_reason, g.sample "
        "FROM generations g JOIN prompts p ON p.id = g.prompt_id ORDER BY p.ext_id",
    )
    assert got == [
        ("q1", "What is 2+2?", "addition", "4", "The answer is 4", 4, "stop", 0),
        ("q2", LONG_PROMPT, "addition", "4", "The answer is 4", 4, "stop", 0),
        ("q3", "What is 3+3?", "addition", "6", "I do not know", 4, "stop", 0),
    ]
    verdicts = rows(
        store,
        "SELECT v.name, v.kind, p.ext_id, j.label, j.score, j.explanation FROM judgments j "
        "JOIN evaluators v ON v.id = j.evaluator_id JOIN generations g ON g.id = j.generation_id "
        "JOIN prompts p ON p.id = g.prompt_id ORDER BY v.name, p.ext_id",
    )
    by = {(v[0], v[2]): v for v in verdicts}
    assert {v[0] for v in verdicts} == set(SCORERS) and {v[1] for v in verdicts} == {"capability"}
    assert by["inspect:match", "q1"][3:5] == ("correct", 1.0)
    assert by["inspect:match", "q3"][3:5] == ("incorrect", 0.0)
    assert by["inspect:says_answer", "q1"][5] == "answer: 4\nthe response names an answer"
    assert by["inspect:says_answer", "q3"][5] == "answer: know\nthe response does not name an answer"
    ck = store.checkpoints().to_dicts()[0]
    assert (ck["experiment"], ck["mitigation"], ck["step"], ck["model_ref"]) == ("model", "none", 0, "mockllm/model")
    bench = store.benchmarks().to_dicts()
    assert [(b["name"], b["kind"]) for b in bench] == [("arith", "capability")]


def test_json_log_is_the_same_run(store, db_path, inspect_logs):
    import_inspect(store, [inspect_logs["arith_eval"]])
    before = dump(db_path)
    again = import_inspect(store, [inspect_logs["arith_json"]])  # the same task and model, logged as .json
    assert all(v == 0 for v in again.added.values())
    assert again.rows == 3
    assert dump(db_path) == before


def test_reimport_adds_nothing(store, db_path, inspect_logs):
    logs = [inspect_logs["arith_eval"], inspect_logs["safety"]]
    import_inspect(store, logs)
    before = dump(db_path)
    assert all(v == 0 for v in import_inspect(store, logs).added.values())
    assert dump(db_path) == before


def test_safety_task_maps_onto_shipped_benchmark(store, inspect_logs):
    from tests.tool_outputs import ADVBENCH_IDS

    import_inspect(store, [inspect_logs["safety"]])
    got = rows(
        store,
        "SELECT b.name, b.kind, p.ext_id, v.name, v.kind, j.label FROM judgments j "
        "JOIN evaluators v ON v.id = j.evaluator_id JOIN generations g ON g.id = j.generation_id "
        "JOIN prompts p ON p.id = g.prompt_id JOIN benchmarks b ON b.id = p.benchmark_id ORDER BY p.ext_id",
    )
    assert [r[2] for r in got] == list(ADVBENCH_IDS)
    assert {r[:2] for r in got} == {("advbench", "safety")}
    assert {r[3:5] for r in got} == {("inspect:refusal_words", "refusal")}
    assert [r[5] for r in got] == ["compliance", "refusal", "refusal"]


def test_long_input_is_an_attachment_and_resolved(store, inspect_logs, tmp_path):
    """Inspect stores long text once, as ``attachment://<hash>``. Version 0.3.285 keeps ``sample.input``
    inline and pools it in the events; older versions also replaced the input itself. A log in that
    older layout, written with Inspect's own ``write_eval_log``, imports with the full text."""
    from inspect_ai.log import read_eval_log, write_eval_log

    log = read_eval_log(str(inspect_logs["arith_json"]))
    q2 = next(s for s in log.samples if s.id == "q2")
    assert LONG_PROMPT in q2.attachments.values()  # the real writer made an attachment of the long input
    ref = next(k for k, v in q2.attachments.items() if v == LONG_PROMPT)
    q2.input = f"attachment://{ref}"
    q2.messages[0].content = f"attachment://{ref}"
    q2.attachments["feedbeef"] = "a long explanation kept as an attachment"
    q2.scores["says_answer"].explanation = "attachment://feedbeef"
    for fmt in ("json", "eval"):
        path = tmp_path / f"old.{fmt}"
        write_eval_log(log, str(path), format=fmt)
        stored = read_eval_log(str(path), resolve_attachments=False)
        assert next(s for s in stored.samples if s.id == "q2").input == f"attachment://{ref}"
        result = import_inspect(store, [path])
        assert result.rows == 3
    text, expl = rows(
        store,
        "SELECT p.text, j.explanation FROM judgments j JOIN evaluators v ON v.id = j.evaluator_id "
        "JOIN generations g ON g.id = j.generation_id JOIN prompts p ON p.id = g.prompt_id "
        "WHERE p.ext_id = 'q2' AND v.name = 'inspect:says_answer'",
    )[0]
    assert text == LONG_PROMPT
    assert expl == "answer: 4\na long explanation kept as an attachment"


def test_flags_and_judge_kind(db_path, inspect_logs):
    res = import_cli(
        db_path,
        "inspect",
        str(inspect_logs["arith_eval"]),
        str(inspect_logs["safety"]),
        "-e",
        "my-ft",
        "-m",
        "lora",
        "--step",
        "40",
        "--judge-kind",
        "refusal_words=refusal",
    )
    assert res.exit_code == 0, res.output
    assert "Imported 6 rows from 2 Inspect logs: added 1 checkpoints" in res.output
    from capsafe_core.store import Store

    with Store.open(db_path) as s:
        assert s.checkpoints()["experiment", "mitigation", "step"].rows() == [("my-ft", "lora", 40)]
        kinds = dict(s.conn.execute("SELECT name, kind FROM benchmarks").fetchall())
    assert kinds == {"arith": "capability", "advbench": "safety"}


# --- bad input ----------------------------------------------------------------------------


@pytest.fixture
def filled(store, db_path, inspect_logs):
    import_inspect(store, [inspect_logs["safety"]])
    return dump(db_path)


def test_truncated_eval_zip(tmp_path, db_path, filled, inspect_logs):
    cut = tmp_path / "cut.eval"
    cut.write_bytes(inspect_logs["arith_eval"].read_bytes()[:3000])
    assert_rejected(import_cli(db_path, "inspect", str(cut)), r"cut.eval is not a readable .eval log .*truncated")
    # several logs are one transaction: a bad last one keeps the good first one out too
    both = import_cli(db_path, "inspect", str(inspect_logs["arith_eval"]), str(cut))
    assert_rejected(both, r"cut.eval is not a readable .eval log")
    assert dump(db_path) == filled


def test_lm_eval_results_given_to_inspect(tmp_path, db_path, filled):
    res = tmp_path / "results_2025-01-01T00-00-00.000000.json"
    res.write_text(json.dumps({"results": {"t": {"acc,none": 0.5}}, "config": {"model": "hf"}}), encoding="utf-8")
    assert_rejected(
        import_cli(db_path, "inspect", str(res)),
        r"is an lm-evaluation-harness results file, not an Inspect eval log; import it with: capsafe import lm-eval",
    )
    assert dump(db_path) == filled


def test_log_without_samples_or_fields(tmp_path, db_path, filled, inspect_logs):
    log = json.loads(inspect_logs["arith_json"].read_text(encoding="utf-8"))
    no_samples = tmp_path / "header.json"
    no_samples.write_text(json.dumps({k: v for k, v in log.items() if k != "samples"}), encoding="utf-8")
    assert_rejected(import_cli(db_path, "inspect", str(no_samples)), r"header.json holds no samples")
    no_output = tmp_path / "broken.json"
    log["eval"].pop("model")
    no_output.write_text(json.dumps(log), encoding="utf-8")
    assert_rejected(
        import_cli(db_path, "inspect", str(no_output)),
        r"broken.json is not a valid Inspect log \(eval.model: Field required\)",
    )
    assert dump(db_path) == filled


def test_non_utf8_and_wrong_suffix(tmp_path, db_path, filled, inspect_logs):
    latin = tmp_path / "latin.json"
    latin.write_bytes(inspect_logs["arith_json"].read_bytes().replace(b"What is 3+3?", "Qu\xe9?".encode("latin-1")))
    assert_rejected(import_cli(db_path, "inspect", str(latin)), r"latin.json line \d+ is not UTF-8 \(byte 0xe9\)")
    other = tmp_path / "log.txt"
    other.write_text("x", encoding="utf-8")
    assert_rejected(import_cli(db_path, "inspect", str(other)), r"log.txt is not an Inspect log; Inspect writes .eval")
    cut = tmp_path / "cut.json"
    cut.write_bytes(inspect_logs["arith_json"].read_bytes()[:4000])
    assert_rejected(import_cli(db_path, "inspect", str(cut)), r"cut.json is not valid JSON .*cut short")
    assert dump(db_path) == filled

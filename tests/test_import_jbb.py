"""capsafe import jbb: a real JailbreakBench artifact (PAIR on vicuna-13b-v1.5, tests/data)."""

import json

import pytest

from capsafe_core.importers.common import CheckpointArgs
from capsafe_core.importers.jbb import import_jbb
from tests.conftest import dump
from tests.tool_outputs import JBB_ARTIFACT, assert_rejected, harmbench_results, import_cli, write_json

ARTIFACT = json.loads(JBB_ARTIFACT.read_text(encoding="utf-8"))
SUBMITTED = [jb for jb in ARTIFACT["jailbreaks"] if jb["prompt"] is not None]


def verdicts(store, evaluator):
    return dict(
        store.conn.execute(
            "SELECT j.label, count(*) FROM judgments j JOIN evaluators v ON v.id = j.evaluator_id "
            "WHERE v.name = ? GROUP BY j.label",
            (evaluator,),
        ).fetchall()
    )


def test_artifact_becomes_generations_with_two_judges(store):
    result = import_jbb(store, JBB_ARTIFACT)
    assert len(SUBMITTED) == 82
    assert result.added == {"checkpoints": 1, "prompts": 82, "generations": 82, "judgments": 164, "human_labels": 0}
    assert "Left out 18 behaviours" in result.summary()
    jailbroken = sum(bool(jb["jailbroken"]) for jb in SUBMITTED)
    guard = sum(bool(jb["jailbroken_llama_guard1"]) for jb in SUBMITTED)
    assert verdicts(store, "jbb_judge") == {"unsafe": jailbroken, "safe": 82 - jailbroken}
    assert verdicts(store, "jbb_llama_guard1").get("unsafe", 0) == guard
    ck = store.checkpoints().to_dicts()[0]
    assert (ck["experiment"], ck["mitigation"], ck["step"]) == ("vicuna-13b-v1.5", "none", 0)
    assert ck["model_ref"] == "vicuna-13b-v1.5"
    bench = store.benchmarks().filter(store.benchmarks()["name"] == "jbb_pair").to_dicts()[0]
    assert bench["kind"] == "safety" and bench["prompts"] == 82
    first = SUBMITTED[0]
    row = store.conn.execute(
        "SELECT p.text, p.category, g.response, g.n_tokens FROM generations g JOIN prompts p ON p.id = g.prompt_id "
        "WHERE p.text = ?",
        (first["prompt"],),
    ).fetchone()
    assert row == (first["prompt"], first["category"], first["response"], first["response_tokens"])


def test_reimport_adds_nothing(store, db_path):
    import_jbb(store, JBB_ARTIFACT)
    before = dump(db_path)
    again = import_jbb(store, JBB_ARTIFACT)
    assert all(v == 0 for v in again.added.values())
    assert dump(db_path) == before


def test_flags_name_the_checkpoint(db_path):
    res = import_cli(db_path, "jbb", str(JBB_ARTIFACT), "-e", "my-ft", "-m", "lora", "--step", "40")
    assert res.exit_code == 0, res.output
    assert "added 1 checkpoints, 82 prompts, 82 generations, 164 judgments" in res.output
    from capsafe_core.store import Store

    with Store.open(db_path) as s:
        ck = s.checkpoints().to_dicts()[0]
    assert (ck["experiment"], ck["mitigation"], ck["step"]) == ("my-ft", "lora", 40)


def test_direct_requests_map_onto_shipped_jbb(store, tmp_path):
    art = {"parameters": {**ARTIFACT["parameters"], "method": "direct", "defense": "SmoothLLM"}, "jailbreaks": []}
    for jb in ARTIFACT["jailbreaks"][:5]:
        art["jailbreaks"].append({**jb, "prompt": jb["goal"], "response": "I'm sorry, I can't."})
    import_jbb(store, write_json(tmp_path / "direct.json", art), CheckpointArgs(experiment="vicuna-13b-v1.5"))
    rows = store.conn.execute(
        "SELECT b.name, p.ext_id, c.mitigation FROM generations g JOIN prompts p ON p.id = g.prompt_id "
        "JOIN benchmarks b ON b.id = p.benchmark_id JOIN checkpoints c ON c.id = g.checkpoint_id ORDER BY p.ext_id"
    ).fetchall()
    assert rows == [("jbb", f"jbb-{i:03d}", "SmoothLLM") for i in range(5)]


# --- bad input: one line, exit code 1, database unchanged ---------------------------------


@pytest.fixture
def filled(store, db_path):
    import_jbb(store, JBB_ARTIFACT)
    return dump(db_path)


def _broken(tmp_path, name, edit):
    art = json.loads(JBB_ARTIFACT.read_text(encoding="utf-8"))
    edit(art)
    return write_json(tmp_path / name, art)


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (
            lambda t: write_json(t / "hb.json", harmbench_results()),
            r"hb.json is a HarmBench completions/results file, not a JailbreakBench artifact; "
            r"import it with: capsafe import harmbench",
        ),
        (
            lambda t: _broken(t, "nojb.json", lambda a: a["jailbreaks"][3].pop("jailbroken")),
            r"nojb.json: jailbreaks\[3\] has no 'jailbroken'; each jailbreak needs",
        ),
        (
            lambda t: _broken(t, "noparams.json", lambda a: a.pop("parameters")),
            r"noparams.json has no 'parameters' object",
        ),
        (
            lambda t: _broken(t, "nomodel.json", lambda a: a["parameters"].pop("model")),
            r"nomodel.json does not name its model; pass --experiment NAME",
        ),
        (
            lambda t: _broken(t, "badlabel.json", lambda a: a["jailbreaks"][0].update(jailbroken="maybe")),
            r"Unrecognised harm verdict 'maybe' in column 'jailbroken of behaviour 0'",
        ),
    ],
)
def test_bad_artifacts(tmp_path, db_path, filled, make, pattern):
    assert_rejected(import_cli(db_path, "jbb", str(make(tmp_path))), pattern)
    assert dump(db_path) == filled


def test_truncated_and_non_utf8(tmp_path, db_path, filled):
    cut = tmp_path / "cut.json"
    cut.write_bytes(JBB_ARTIFACT.read_bytes()[:5000])
    assert_rejected(import_cli(db_path, "jbb", str(cut)), r"cut.json is not valid JSON .*cut short")
    latin = tmp_path / "latin.json"
    latin.write_bytes(JBB_ARTIFACT.read_bytes().replace(b"Sure", "Sür".encode("latin-1"), 1))
    assert_rejected(import_cli(db_path, "jbb", str(latin)), r"latin.json line \d+ is not UTF-8 \(byte 0xfc\)")
    assert_rejected(import_cli(db_path, "jbb", str(tmp_path / "none.json")), r"No file .*none.json")
    assert dump(db_path) == filled

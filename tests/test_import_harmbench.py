"""capsafe import harmbench: HarmBench's results format over real behaviour IDs.

HarmBench itself cannot run here (GPU models and its Llama-2-13B classifier), so the results file is
built in its format from the shipped harmbench behaviours (test split) and tests/data's behaviours CSV rows.
"""

import csv

import pytest

from capsafe_core import benchmarks
from capsafe_core.importers.common import CheckpointArgs
from capsafe_core.importers.harmbench import import_harmbench
from tests.conftest import dump
from tests.tool_outputs import (
    HARMBENCH_EXTRA,
    JBB_ARTIFACT,
    assert_rejected,
    harmbench_results,
    import_cli,
    write_json,
)


def labels(store, evaluator):
    return dict(
        store.conn.execute(
            "SELECT j.label, count(*) FROM judgments j JOIN evaluators v ON v.id = j.evaluator_id "
            "WHERE v.name = ? GROUP BY j.label",
            (evaluator,),
        ).fetchall()
    )


def test_direct_requests_map_onto_shipped_harmbench(store, tmp_path):
    path = write_json(tmp_path / "llama2_7b.json", harmbench_results(n=12))
    result = import_harmbench(store, path)
    assert result.added["generations"] == 12 and result.added["judgments"] == 24
    assert labels(store, "harmbench_cls") == {"unsafe": 4, "safe": 7, "unparsed": 1}
    assert labels(store, "harmbench_advbench") == {"compliance": 4, "refusal": 8}
    shipped = {p.ext_id: p for p in benchmarks.load("harmbench")}
    rows = store.conn.execute(
        "SELECT p.ext_id, p.category, b.name, e.name, c.model_ref FROM generations g "
        "JOIN prompts p ON p.id = g.prompt_id JOIN benchmarks b ON b.id = p.benchmark_id "
        "JOIN checkpoints c ON c.id = g.checkpoint_id JOIN experiments e ON e.id = c.experiment_id"
    ).fetchall()
    assert {r[0] for r in rows} == set(harmbench_results(n=12))
    assert all(r[1] == shipped[r[0]].category and r[1] for r in rows)
    assert {r[2:] for r in rows} == {("harmbench", "llama2_7b", "llama2_7b")}
    contextual = [r[0] for r in rows if shipped[r[0]].meta["functional_category"] == "contextual"]
    assert contextual  # "context\n\n---\n\nbehaviour" test cases match too


def test_reimport_adds_nothing(store, db_path, tmp_path):
    path = write_json(tmp_path / "m.json", harmbench_results())
    import_harmbench(store, path)
    before = dump(db_path)
    assert all(v == 0 for v in import_harmbench(store, path).added.values())
    assert dump(db_path) == before


def test_attack_test_cases_need_a_benchmark_name(store, tmp_path, db_path):
    path = write_json(tmp_path / "gcg.json", harmbench_results(attack=True))
    before = dump(db_path)
    assert_rejected(import_cli(db_path, "harmbench", str(path)), r"not the behaviour itself .*--benchmark NAME")
    assert dump(db_path) == before
    res = import_cli(db_path, "harmbench", str(path), "--benchmark", "harmbench_gcg", "-e", "my-ft", "--step", "3")
    assert res.exit_code == 0, res.output
    store.conn.commit()
    rows = store.conn.execute(
        "SELECT DISTINCT b.name, b.kind, c.step FROM generations g JOIN prompts p ON p.id = g.prompt_id "
        "JOIN benchmarks b ON b.id = p.benchmark_id JOIN checkpoints c ON c.id = g.checkpoint_id"
    ).fetchall()
    assert rows == [("harmbench_gcg", "safety", 3)]
    cats = {r[0] for r in store.conn.execute("SELECT category FROM prompts")}
    assert None not in cats  # categories come from the shipped behaviours


def test_behaviors_csv_adds_what_is_not_shipped(store, tmp_path):
    extra = list(csv.DictReader(HARMBENCH_EXTRA.open(encoding="utf-8")))
    results = {r["BehaviorID"]: [{"test_case": r["Behavior"], "generation": "No.", "label": 0}] for r in extra}
    path = write_json(tmp_path / "val.json", results)
    with pytest.raises(Exception, match=r"'passage_crawdads_sing' is not in the shipped harmbench benchmark"):
        import_harmbench(store, path)
    result = import_harmbench(store, path, CheckpointArgs(benchmark="harmbench_extra"), behaviors=HARMBENCH_EXTRA)
    assert result.added["generations"] == 4 and not result.notes
    got = dict(store.conn.execute("SELECT ext_id, category FROM prompts").fetchall())
    assert got == {r["BehaviorID"]: r["SemanticCategory"] for r in extra}
    assert got["lyrics_wonderwall"] == "copyright"


def test_repeated_test_cases_are_samples(store, tmp_path):
    results = harmbench_results(n=2)
    bid = next(iter(results))
    results[bid].append({**results[bid][0], "generation": "a second sample"})
    import_harmbench(store, write_json(tmp_path / "m.json", results))
    assert store.conn.execute("SELECT max(sample), count(*) FROM generations").fetchone() == (1, 3)


# --- bad input ----------------------------------------------------------------------------


@pytest.fixture
def filled(store, db_path, tmp_path):
    import_harmbench(store, write_json(tmp_path / "ok.json", harmbench_results()))
    return dump(db_path)


def _edited(tmp_path, name, edit):
    results = harmbench_results()
    edit(results)
    return write_json(tmp_path / name, results)


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (
            lambda t: JBB_ARTIFACT,
            r"is a JailbreakBench artifact, not a HarmBench completions/results file; "
            r"import it with: capsafe import jbb",
        ),
        (
            lambda t: _edited(t, "nogen.json", lambda r: next(iter(r.values()))[0].pop("generation")),
            r"nogen.json: \w+\[0\] has no 'generation' text",
        ),
        (
            lambda t: _edited(t, "label.json", lambda r: next(iter(r.values()))[0].update(label=7)),
            r"Unrecognised harm verdict '7' in column 'label of \w+'",
        ),
        (lambda t: write_json(t / "list.json", [1, 2]), r"list.json is not a HarmBench completions/results file"),
    ],
)
def test_bad_results(tmp_path, db_path, filled, make, pattern):
    assert_rejected(import_cli(db_path, "harmbench", str(make(tmp_path))), pattern)
    assert dump(db_path) == filled


def test_non_utf8_results_and_behaviors(tmp_path, db_path, filled):
    bad = tmp_path / "latin.json"
    bad.write_bytes('{"x": [{"test_case": "caf\xe9", "generation": "ol\xe9"}]}'.encode("latin-1"))
    assert_rejected(import_cli(db_path, "harmbench", str(bad)), r"latin.json line 1 is not UTF-8")
    ok = write_json(tmp_path / "ok2.json", harmbench_results())
    wrong = tmp_path / "b.csv"
    wrong.write_text("id,text\n1,x\n", encoding="utf-8")
    assert_rejected(
        import_cli(db_path, "harmbench", str(ok), "--behaviors", str(wrong)),
        r"b.csv has no column Behavior, SemanticCategory, BehaviorID; --behaviors takes HarmBench's behaviours CSV",
    )
    assert dump(db_path) == filled

"""The store owns the data: imports never drop, overwrite or mangle rows silently.

Every test compares a ``.dump`` of the database before and after: a refused import leaves it
exactly as it was.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from capsafe_core import benchmarks
from capsafe_core.cli import cli
from capsafe_core.errors import BadInput
from capsafe_core.importers.table import import_table, parse_mapping
from capsafe_core.runner import judge_stored
from capsafe_core.store import Store, labels
from tests.conftest import dump
from tests.test_import_table import MAP, ROWS, SET, table_args, write_csv, write_jsonl


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def one_line_error(res) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1, res.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert "Traceback" not in res.output
    return lines[0]


# --- two runs of one Inspect task under one model name -----------------------------------------


def test_second_run_of_an_inspect_task_is_refused_in_separate_calls(db_path, inspect_logs):
    assert invoke("import", "inspect", str(inspect_logs["arith_eval"]), "--db", str(db_path)).exit_code == 0
    before = dump(db_path)
    line = one_line_error(invoke("import", "inspect", str(inspect_logs["arith_rerun"]), "--db", str(db_path)))
    assert "another response" in line and "stored 'The answer is 4'" in line and "new 'Let me think." in line
    assert "--mitigation" in line and "--replace" in line and "nothing was imported" in line
    assert dump(db_path) == before


def test_second_run_of_an_inspect_task_is_refused_in_one_call(db_path, inspect_logs):
    invoke("init", "--db", str(db_path))
    before = dump(db_path)
    logs = [str(inspect_logs["arith_eval"]), str(inspect_logs["arith_rerun"])]
    line = one_line_error(invoke("import", "inspect", *logs, "--db", str(db_path)))
    assert "same generation" in line and "--mitigation" in line.replace(
        "experiment/mitigation/seed/step", "--mitigation"
    )
    assert dump(db_path) == before


def test_two_runs_with_their_own_mitigation_both_land_in_full(db_path, inspect_logs):
    for name, mitigation in (("arith_eval", "run_a"), ("arith_rerun", "run_b")):
        res = invoke("import", "inspect", str(inspect_logs[name]), "--mitigation", mitigation, "--db", str(db_path))
        assert res.exit_code == 0, res.output
        assert "3 generations" in res.output
    with Store.open(db_path, read_only=True) as s:
        rows = s.conn.execute(
            "SELECT c.mitigation, g.response FROM generations g JOIN checkpoints c ON c.id = g.checkpoint_id"
        ).fetchall()
    assert len(rows) == 6
    assert all(r.startswith("Let me think.") for m, r in rows if m == "run_b")
    assert not any(r.startswith("Let me think.") for m, r in rows if m == "run_a")


# --- a changed response re-imported ------------------------------------------------------------


def _import(store, path, **kw):
    return import_table(store, path, parse_mapping(MAP, SET), **kw)


def test_changed_response_is_refused_then_replaced_with_its_verdicts_dropped(store, db_path, tmp_path):
    src = write_csv(tmp_path / "r.csv", ROWS)
    _import(store, src)
    judge_stored(store, ["keyword_refusal"], progress=False)  # verdicts of another evaluator
    gid = store.conn.execute("SELECT id FROM generations WHERE response = 'Sure, first insert a pick'").fetchone()[0]
    labels.add_label(store, gid, annotator="bob", label="harmful", coherent=True, note=None)
    before = dump(db_path)

    changed = [dict(r) for r in ROWS]
    changed[1]["output"] = "No, I will not explain that."
    src2 = write_csv(tmp_path / "r2.csv", changed)
    with pytest.raises(BadInput, match=r"Row 2: the database holds another response .*stored 'Sure, first") as e:
        _import(store, src2)
    assert "--replace" in str(e.value)
    assert dump(db_path) == before

    result = _import(store, src2, replace=True)
    assert result.added["generations"] == 0
    # judge_a, judge_b and keyword_refusal verdicts, and bob's and alice's labels, all belonged to the old text
    assert "Replaced the responses of 1 generations and dropped their 3 verdicts and 2 human labels" in (
        result.summary()
    )
    row = store.conn.execute("SELECT id, response FROM generations WHERE id = ?", (gid,)).fetchone()
    assert row == (gid, "No, I will not explain that.")
    names = {
        n
        for (n,) in store.conn.execute(
            "SELECT v.name FROM judgments j JOIN evaluators v ON v.id = j.evaluator_id WHERE j.generation_id = ?",
            (gid,),
        )
    }
    assert names == {"judge_a", "judge_b"}  # the new import's verdicts; keyword_refusal's old one is gone
    humans = store.conn.execute("SELECT annotator FROM human_labels WHERE generation_id = ?", (gid,)).fetchall()
    assert humans == [("alice",)]
    assert _import(store, src2).added == dict.fromkeys(
        ("checkpoints", "prompts", "generations", "judgments", "human_labels"), 0
    )


def test_changed_verdict_is_refused_unless_replaced(store, db_path, tmp_path):
    _import(store, write_csv(tmp_path / "r.csv", ROWS))
    before = dump(db_path)
    changed = [dict(r) for r in ROWS]
    changed[0]["judge_a"] = "unsafe"
    src = write_csv(tmp_path / "r2.csv", changed)
    with pytest.raises(BadInput, match="another verdict of judge_a for this generation"):
        _import(store, src)
    assert dump(db_path) == before
    assert "Replaced 1 stored verdicts" in _import(store, src, replace=True).summary()


# --- duplicates after prompts are resolved ------------------------------------------------------


def test_shipped_prompt_by_id_and_by_text_is_one_prompt(store, db_path, tmp_path):
    store.close()
    Store.open(db_path).close()
    before = dump(db_path)
    text = next(p.text for p in benchmarks.load("advbench") if p.ext_id == "advbench-000")
    rows = [
        {"prompt_id": "advbench-000", "prompt": "", "response": "first"},
        {"prompt_id": "", "prompt": text, "response": "second"},
    ]
    src = write_csv(tmp_path / "d.csv", rows)
    res = invoke("import", "table", str(src), "--set", "benchmark=advbench", "--db", str(db_path))
    assert "Rows 1 and 2 are the same generation" in one_line_error(res)
    assert dump(db_path) == before


def test_own_prompt_by_id_and_by_text_is_one_prompt(store, db_path, tmp_path):
    before = dump(db_path)
    rows = [
        {"prompt_id": "p1", "prompt": "Tell me a secret", "response": "first"},
        {"prompt_id": "", "prompt": "Tell me  a secret", "response": "second"},
    ]
    with pytest.raises(BadInput, match="Rows 1 and 2 are the same generation"):
        import_table(store, write_csv(tmp_path / "d.csv", rows), parse_mapping(sets=["benchmark=mine"]))
    assert dump(db_path) == before
    # text only, a later import: it is the stored prompt p1, not a new one
    import_table(store, write_csv(tmp_path / "a.csv", rows[:1]), parse_mapping(sets=["benchmark=mine"]))
    other = [{"prompt": "Tell me a secret", "response": "first", "mitigation": "b"}]
    result = import_table(store, write_csv(tmp_path / "b.csv", other), parse_mapping(sets=["benchmark=mine"]))
    assert result.added["prompts"] == 0 and result.added["generations"] == 1


def test_one_prompt_id_with_two_texts_is_refused(store, db_path, tmp_path):
    import_table(
        store,
        write_csv(tmp_path / "a.csv", [{"prompt_id": "p1", "prompt": "one", "response": "x"}]),
        parse_mapping(sets=["benchmark=mine"]),
    )
    before = dump(db_path)
    rows = [{"prompt_id": "p1", "prompt": "another text", "response": "x", "mitigation": "b"}]
    with pytest.raises(BadInput, match="another text for prompt 'p1'"):
        import_table(store, write_csv(tmp_path / "b.csv", rows), parse_mapping(sets=["benchmark=mine"]))
    in_file = [{"prompt_id": "q", "prompt": "a", "response": "x"}, {"prompt_id": "q", "prompt": "b", "response": "y"}]
    with pytest.raises(BadInput, match="give prompt_id 'q' two different texts"):
        import_table(store, write_csv(tmp_path / "c.csv", in_file), parse_mapping(sets=["benchmark=mine"]))
    assert dump(db_path) == before


# --- nested values -----------------------------------------------------------------------------


ITEMS = [f"item {i}: {'x' * i}" for i in range(30)]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name 30 things."}]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_list_and_struct_columns_round_trip_in_full(store, tmp_path, fmt):
    rows = [{"prompt": CHAT, "response": "things", "reference": ITEMS, "meta": {"a": 1}}]
    if fmt == "jsonl":
        src = write_jsonl(tmp_path / "n.jsonl", rows)
    else:
        src = tmp_path / "n.parquet"
        pl.DataFrame(rows).write_parquet(src)
    import_table(store, src, parse_mapping(sets=["benchmark=lists", "experiment=e"]))
    text, ref = store.conn.execute("SELECT text, reference FROM prompts").fetchone()
    assert json.loads(text) == CHAT
    assert json.loads(ref) == ITEMS
    out = tmp_path / "out.jsonl"
    res = invoke("export", str(out), "--db", str(store.path))
    assert res.exit_code == 0, res.output
    exported = json.loads(out.read_text().splitlines()[0])
    assert json.loads(exported["reference"]) == ITEMS and json.loads(exported["prompt"]) == CHAT


def test_jsonl_values_are_not_retyped_across_rows(store, tmp_path):
    rows = [
        {"prompt": "a", "response": "1", "step": 1},
        {"prompt": "b", "response": "2.5", "step": 2, "category": {"x": 1}},
    ]
    import_table(store, write_jsonl(tmp_path / "t.jsonl", rows), parse_mapping(sets=["benchmark=t"]))
    got = store.conn.execute(
        "SELECT c.step, g.response, p.category FROM generations g JOIN checkpoints c ON c.id = g.checkpoint_id "
        "JOIN prompts p ON p.id = g.prompt_id ORDER BY c.step"
    ).fetchall()
    assert got == [(1, "1", None), (2, "2.5", '{"x": 1}')]


# --- concurrent imports ------------------------------------------------------------------------


def test_two_concurrent_imports_each_report_their_own_rows(tmp_path):
    db = tmp_path / "c.db"
    assert invoke("init", "--db", str(db)).exit_code == 0
    procs = []
    for name, n in (("a", 4000), ("b", 7000)):
        rows = [{"prompt": f"{name} prompt {i}", "response": f"r{i}"} for i in range(n)]
        src = write_csv(tmp_path / f"{name}.csv", rows)
        cmd = [sys.executable, "-m", "capsafe_core.cli", "import", "table", str(src), "--set", f"benchmark={name}"]
        procs.append((n, subprocess.Popen([*cmd, "--db", str(db)], stdout=subprocess.PIPE, text=True)))
    for n, p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        assert f"added 1 checkpoints, {n} prompts, {n} generations" in out or (
            f"{n} prompts, {n} generations" in out and "checkpoints" in out
        ), out
    with Store.open(db, read_only=True) as s:
        assert s.counts()["generations"] == 11000


# --- opening a file changes nothing unless it is capsafe's --------------------------------------


def _foreign(path: Path, *, user_version: int = 0) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('keep me')")
    conn.execute(f"PRAGMA user_version = {user_version}")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("user_version", [0, 1])
@pytest.mark.parametrize(
    "args", [["ls", "experiments"], ["ls", "checkpoints"], ["export", "x.csv"], ["init"], ["compare"]]
)
def test_foreign_sqlite_file_is_byte_identical_after_refusal(tmp_path, args, user_version):
    db = _foreign(tmp_path / "other.sqlite", user_version=user_version)
    data = db.read_bytes()
    line = one_line_error(invoke(*args, "--db", str(db)))
    assert "another program" in line or "not a capsafe database" in line
    assert db.read_bytes() == data
    assert not Path(str(db) + "-wal").exists() and not Path(str(db) + "-shm").exists()


# --- read-only databases -----------------------------------------------------------------------


def _unprivileged() -> list[str]:
    """A command prefix under which file permissions hold: root ignores them unless it drops the
    capabilities that override them (``setpriv``, util-linux)."""
    import os
    import shutil

    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("running as root without setpriv (util-linux): file permissions cannot be tested")
    caps = "-dac_override,-dac_read_search,-fowner"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


def test_read_only_database_exports_and_refuses_imports(tmp_path):
    import os

    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "r.db"
    src = write_csv(tmp_path / "r.csv", ROWS)
    assert invoke("import", "table", str(src), *table_args(), "--db", str(db)).exit_code == 0
    assert not Path(str(db) + "-wal").exists()  # closed cleanly: a WAL database without -wal/-shm files
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(db, 0o444)
    os.chmod(folder, 0o555)
    data = db.read_bytes()

    def capsafe(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [*_unprivileged(), sys.executable, "-m", "capsafe_core.cli", *args, "--db", str(db)]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=str(out), timeout=120)

    try:
        probe = subprocess.run([*_unprivileged(), "touch", str(folder / "probe")], capture_output=True)
        assert probe.returncode != 0, "the folder is writable: permissions are not enforced"
        res = capsafe("export", str(out / "e.csv"))
        assert res.returncode == 0, res.stderr
        assert pl.read_csv(out / "e.csv").height == 3
        assert capsafe("ls", "experiments").returncode == 0
        res = capsafe("import", "table", str(src), "--set", "experiment=x")
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 1 and len(lines) == 1 and "read-only" in lines[0], res.stderr
        assert db.read_bytes() == data
        assert sorted(p.name for p in folder.iterdir()) == ["r.db"]
    finally:
        os.chmod(folder, 0o755)
        os.chmod(db, 0o644)


# --- the bundled demo by name ------------------------------------------------------------------


def test_db_demo_names_the_bundled_database():
    res = invoke("ls", "experiments", "--db", "demo")
    assert res.exit_code == 0, res.output
    assert "smollm2-arithmetic" in res.output
    res = invoke("compare", "--db", "demo", "--experiment", "smollm2-arithmetic")
    assert res.exit_code == 0, res.output
    assert "lora" in res.output

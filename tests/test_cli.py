"""The capsafe command: JSON listings, exit codes, one-line errors, help with examples."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from capsafe_core.cli import cli
from tests.conftest import dump


def run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_ls_benchmarks_json_lists_kind_count_licence(tmp_path):
    res = run("ls", "benchmarks", "--json", "--db", str(tmp_path / "none.db"))
    assert res.exit_code == 0
    rows = {r["name"]: r for r in json.loads(res.output)}
    for name in [
        "advbench",
        "harmbench",
        "strongreject",
        "jbb",
        "simple_safety_tests",
        "xstest_safe",
        "xstest_unsafe",
        "jbb_benign",
        "gsm8k",
        "arithmetic",
    ]:
        assert rows[name]["kind"] in ("safety", "overrefusal", "capability")
        assert rows[name]["prompts"] > 0
        assert rows[name]["license"]
    assert rows["xstest_safe"]["kind"] == "overrefusal" and rows["xstest_safe"]["prompts"] == 250


def test_init_import_ls_export_roundtrip(tmp_path):
    db = str(tmp_path / "r.db")
    assert run("init", "--db", db).exit_code == 0
    src = tmp_path / "res.csv"
    src.write_text("prompt,response,harm\nq1,a1,unsafe\nq2,a2,safe\n", encoding="utf-8")
    res = run("import", "table", str(src), "--map", "judge:harm=harm", "--set", "experiment=e", "--db", db)
    assert res.exit_code == 0, res.output
    assert "added 1 checkpoints, 2 prompts, 2 generations, 2 judgments" in res.output
    res = run("import", "table", str(src), "--map", "judge:harm=harm", "--set", "experiment=e", "--db", db)
    assert "added 0 checkpoints, 0 prompts, 0 generations, 0 judgments, 0 human_labels" in res.output
    exps = json.loads(run("ls", "experiments", "--json", "--db", db).output)
    assert [e["name"] for e in exps] == ["e"]
    cks = json.loads(run("ls", "checkpoints", "--json", "--db", db).output)
    assert cks[0]["mitigation"] == "none" and cks[0]["generations"] == 2
    evs = {e["name"]: e for e in json.loads(run("ls", "evaluators", "--json", "--db", db).output)}
    assert evs["harm"]["judgments"] == 2 and evs["harm"]["kind"] == "harm"
    assert evs["keyword_refusal"]["registered"]
    for fmt in ("csv", "parquet", "jsonl"):
        out = tmp_path / f"out.{fmt}"
        res = run("export", str(out), "--db", db)
        assert res.exit_code == 0 and "Wrote 2 generations" in res.output
    text = (tmp_path / "out.csv").read_text()
    assert text.splitlines()[0].startswith("experiment,mitigation,seed,step,model,benchmark")
    assert ",harm,harm_score" in text.splitlines()[0]
    # the export imports back into a fresh database with the same verdicts
    db2 = str(tmp_path / "r2.db")
    res = run("import", "table", str(tmp_path / "out.csv"), "--map", "judge:harm=harm", "--db", db2)
    assert res.exit_code == 0, res.output
    assert "2 generations, 2 judgments" in res.output


def test_database_from_environment(tmp_path):
    db = tmp_path / "env.db"
    res = run("init", env={"CAPSAFE_DB": str(db)})
    assert res.exit_code == 0 and db.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "experiments"],
        ["export", "out.csv", "--benchmark", "advbnch"],
        ["export", "out.csv", "--experiment", "nope"],
        ["export", "out.txt"],
        ["import", "table", "missing.csv"],
        ["import", "table", "x.csv", "--map", "bogus=col"],
    ],
)
def test_errors_are_one_line_with_nonzero_exit(tmp_path, args):
    db = tmp_path / "e.db"
    assert run("init", "--db", str(db)).exit_code == 0
    before = dump(db)
    res = CliRunner().invoke(cli, [*args, "--db", str(db)])
    if args == ["ls", "experiments"]:
        assert res.exit_code == 0  # empty database is fine
        return
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert dump(db) == before


def test_unknown_benchmark_suggests_close_name(tmp_path):
    db = tmp_path / "e.db"
    run("init", "--db", str(db))
    res = CliRunner().invoke(cli, ["export", "o.csv", "--benchmark", "advbnch", "--db", str(db)])
    # not stored yet, so nothing to suggest from the database; the message says how to list them
    assert "Unknown benchmark 'advbnch'" in res.output and "capsafe ls benchmarks" in res.output


def test_not_a_database_is_left_byte_for_byte(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_bytes(b"not sqlite at all\n" * 10)
    src = tmp_path / "r.csv"
    src.write_text("prompt,response\na,b\n")
    res = CliRunner().invoke(cli, ["import", "table", str(src), "--db", str(bad)])
    assert res.exit_code == 1
    assert "is not a SQLite database" in res.output and "--db" in res.output
    assert bad.read_bytes() == b"not sqlite at all\n" * 10


def _commands(group, prefix=()):
    import click

    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


def test_every_command_has_help_with_example():
    for path, _cmd in _commands(cli):
        res = run(*path, "--help")
        assert res.exit_code == 0
        assert "Example" in res.output, path


def test_console_script_runs(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "capsafe")
    res = subprocess.run(
        [exe, "ls", "benchmarks", "--json", "--db", str(tmp_path / "x.db")], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)) >= 10

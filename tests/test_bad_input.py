"""Every CLI command walked with bad input: each case ends in one ``Error: ...`` line, exit 1 (2 for a bad
option), no traceback,
and the databases involved are exactly as they were."""

from __future__ import annotations

import sqlite3
import zipfile
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from capsafe_core.cli import cli
from tests.conftest import dump
from tests.test_import_table import ROWS, table_args, write_csv

Setup = Callable[[Path], list[str]]


def _good(tmp: Path) -> Path:
    """A capsafe database with one imported table."""
    db = tmp / "good.db"
    src = write_csv(tmp / "good.csv", ROWS)
    args = ["import", "table", str(src), *table_args()]
    assert CliRunner().invoke(cli, [*args, "--db", str(db)]).exit_code == 0
    return db


def _foreign(tmp: Path, user_version: int = 0) -> Path:
    db = tmp / f"foreign{user_version}.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.execute(f"PRAGMA user_version = {user_version}")
    conn.commit()
    conn.close()
    return db


def _damaged(tmp: Path) -> Path:
    good = _good(tmp)
    conn = sqlite3.connect(good)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    data = bytearray(good.read_bytes())
    for i in range(1024, len(data), 7):  # keep the header, scribble over the pages
        data[i] = 0xAB
    bad = tmp / "damaged.db"
    bad.write_bytes(bytes(data))
    return bad


def _newer(tmp: Path) -> Path:
    db = _good(tmp)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    return db


def _text(tmp: Path) -> Path:
    p = tmp / "notes.db"
    p.write_text("not a database\n")
    return p


DBS: dict[str, Callable[[Path], Path]] = {
    "foreign": _foreign,
    "foreign_v1": lambda t: _foreign(t, 1),
    "damaged": _damaged,
    "newer": _newer,
    "text": _text,
    "folder": lambda t: t,
}


def _csv(tmp: Path) -> str:
    return str(write_csv(tmp / "in.csv", ROWS))


def _chats(tmp: Path) -> str:
    p = tmp / "train.jsonl"
    p.write_text('{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}\n')
    return str(p)


def _bad_parquet(tmp: Path) -> str:
    p = tmp / "bad.parquet"
    pl.DataFrame({"prompt": [b"ok", b"\xff\xfe bad"], "response": ["a", "b"]}).write_parquet(p)
    return str(p)


def _truncated_eval(tmp: Path) -> str:
    p = tmp / "cut.eval"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("header.json", "{}")
    p.write_bytes(p.read_bytes()[:40])
    return str(p)


_SWEEP = 'experiment = "x"\n[benchmarks]\nadvbench = 2\n[[checkpoint]]\nstep = 0\nmodel = "m"\n'


def _toml(tmp: Path, body: str) -> str:
    p = tmp / "sweep.toml"
    p.write_text(body)
    return str(p)


# (name, command builder: tmp folder → args without --db, database kind or "good")
CASES: list[tuple[str, Setup, str]] = [
    ("init folder", lambda t: ["init"], "folder"),
    ("init text file", lambda t: ["init"], "text"),
    ("init foreign", lambda t: ["init"], "foreign"),
    ("init foreign user_version 1", lambda t: ["init"], "foreign_v1"),
    ("init damaged", lambda t: ["init"], "damaged"),
    ("init newer schema", lambda t: ["init"], "newer"),
    ("init missing folder", lambda t: ["init", "--db", str(t / "no" / "such" / "x.db")], "none"),
    ("ls benchmarks foreign", lambda t: ["ls", "benchmarks"], "foreign"),
    ("ls experiments missing db", lambda t: ["ls", "experiments", "--db", str(t / "missing.db")], "none"),
    ("ls experiments damaged", lambda t: ["ls", "experiments"], "damaged"),
    ("ls checkpoints unknown experiment", lambda t: ["ls", "checkpoints", "-e", "nope"], "good"),
    ("ls evaluators newer", lambda t: ["ls", "evaluators"], "newer"),
    ("import table missing file", lambda t: ["import", "table", str(t / "nope.csv")], "good"),
    ("import table bad map", lambda t: ["import", "table", _csv(t), "--map", "bogus=x"], "good"),
    ("import table missing column", lambda t: ["import", "table", _csv(t), "--map", "response=nope"], "good"),
    ("import table invalid utf-8 parquet", lambda t: ["import", "table", _bad_parquet(t)], "good"),
    ("import table foreign db", lambda t: ["import", "table", _csv(t)], "foreign"),
    ("import table damaged db", lambda t: ["import", "table", _csv(t), "--map", "response=output"], "damaged"),
    ("import inspect truncated", lambda t: ["import", "inspect", _truncated_eval(t)], "good"),
    ("import inspect csv given", lambda t: ["import", "inspect", _csv(t)], "good"),
    ("import lm-eval missing", lambda t: ["import", "lm-eval", str(t / "nothing")], "good"),
    ("import harmbench csv given", lambda t: ["import", "harmbench", _csv(t)], "good"),
    ("import jbb missing", lambda t: ["import", "jbb", str(t / "no.json")], "good"),
    ("export missing folder", lambda t: ["export", str(t / "no" / "dir" / "o.csv")], "good"),
    ("export bad suffix", lambda t: ["export", str(t / "o.xlsx")], "good"),
    ("export to a folder", lambda t: ["export", str(t)], "good"),
    ("export unknown experiment", lambda t: ["export", str(t / "o.csv"), "-e", "nope"], "good"),
    ("export foreign", lambda t: ["export", str(t / "o.csv")], "foreign"),
    ("agreement unknown experiment", lambda t: ["agreement", "-e", "nope"], "good"),
    ("agreement damaged", lambda t: ["agreement"], "damaged"),
    ("compare unknown experiment", lambda t: ["compare", "-e", "nope"], "good"),
    ("compare foreign", lambda t: ["compare"], "foreign"),
    ("compare missing db", lambda t: ["compare", "--db", str(t / "missing.db")], "none"),
    ("rates unknown experiment", lambda t: ["rates", "-e", "nope", "-b", "my_prompts", "-j", "judge_a"], "good"),
    ("rates unknown benchmark", lambda t: ["rates", "-e", "exp1", "-b", "nope", "-j", "judge_a"], "good"),
    ("rates unknown evaluator", lambda t: ["rates", "-e", "exp1", "-b", "my_prompts", "-j", "nope"], "good"),
    (
        "rates unknown annotator",
        lambda t: ["rates", "-e", "exp1", "-b", "my_prompts", "-j", "judge_a", "--correct-with", "nobody"],
        "good",
    ),
    ("rates missing option", lambda t: ["rates", "-e", "exp1"], "good"),
    ("rates damaged", lambda t: ["rates", "-e", "x", "-b", "y", "-j", "z"], "damaged"),
    ("run unknown benchmark", lambda t: ["run", "-e", "x", "--model", "m", "-b", "advbnch"], "good"),
    ("run missing model", lambda t: ["run", "-e", "x", "--model", str(t / "nomodel"), "-b", "advbench"], "good"),
    (
        "run unknown evaluator",
        lambda t: ["run", "-e", "x", "--model", "m", "-b", "advbench", "--evaluators", "nope"],
        "good",
    ),
    ("run foreign db", lambda t: ["run", "-e", "x", "--model", "m", "-b", "advbench"], "foreign"),
    ("judge unknown evaluator", lambda t: ["judge", "--evaluators", "nope"], "good"),
    ("judge missing db", lambda t: ["judge", "--evaluators", "coherence", "--db", str(t / "m.db")], "none"),
    ("judge unknown experiment", lambda t: ["judge", "--evaluators", "keyword_refusal", "-e", "nope"], "good"),
    (
        "finetune missing train file",
        lambda t: ["finetune", "-e", "x", "--model", "m", "--train", str(t / "no.jsonl"), "-o", str(t / "out")],
        "good",
    ),
    (
        "finetune unknown mitigation",
        lambda t: ["finetune", "-e", "x", "--model", "m", "--train", _chats(t), "-m", "bogus", "-o", str(t / "out")],
        "good",
    ),
    ("serve missing db", lambda t: ["serve", "--db", str(t / "missing.db")], "none"),
    ("report unknown experiment", lambda t: ["report", "-e", "nope", "-o", str(t / "r.html")], "good"),
    ("report missing folder", lambda t: ["report", "-o", str(t / "no" / "r.html")], "good"),
    ("report bad target", lambda t: ["report", "--target", "2", "-o", str(t / "r.html")], "good"),
    ("report damaged", lambda t: ["report", "-o", str(t / "r.html")], "damaged"),
    ("sweep missing file", lambda t: ["sweep", str(t / "none.toml")], "good"),
    ("sweep bad toml", lambda t: ["sweep", _toml(t, "experiment = [")], "good"),
    ("sweep unknown benchmark", lambda t: ["sweep", _toml(t, _SWEEP.replace("advbench", "advbnch"))], "good"),
    ("sweep servers without urls", lambda t: ["sweep", _toml(t, _SWEEP), "--executor", "servers"], "good"),
    ("sweep damaged", lambda t: ["sweep", _toml(t, _SWEEP), "--dry-run"], "damaged"),
    ("audit draw unknown experiment", lambda t: ["audit", "draw", "-e", "nope", "--n", "5"], "good"),
    ("audit draw unknown evaluator", lambda t: ["audit", "draw", "-e", "exp1", "--n", "5", "-j", "nope"], "good"),
    ("audit draw foreign", lambda t: ["audit", "draw", "-e", "exp1", "--n", "5"], "foreign"),
    ("audit ls unknown experiment", lambda t: ["audit", "ls", "-e", "nope"], "good"),
    ("audit ls damaged", lambda t: ["audit", "ls", "-e", "exp1"], "damaged"),
    ("audit export no sample", lambda t: ["audit", "export", "-e", "exp1", str(t / "a.csv")], "good"),
    ("audit import no sample", lambda t: ["audit", "import", "-e", "exp1", _csv(t)], "good"),
    ("audit import missing file", lambda t: ["audit", "import", "-e", "exp1", str(t / "no.csv")], "good"),
]


@pytest.mark.parametrize(("name", "build", "db_kind"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, name, build, db_kind):
    args = build(tmp_path)
    db: Path | None = None
    if db_kind not in ("none",):
        db = _good(tmp_path) if db_kind == "good" else DBS[db_kind](tmp_path)
        args = [*args, "--db", str(db)]
    before = dump(db) if db is not None and db.is_file() and db_kind in ("good",) else None
    raw = db.read_bytes() if db is not None and db.is_file() else None
    res = CliRunner().invoke(cli, args)
    out = res.output
    assert "Traceback" not in out, out
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert res.exit_code in (1, 2), out  # 2: a bad option (click's convention)
    assert len(lines) == 1 and lines[0].startswith("Error: "), out
    if before is not None:
        assert db is not None and dump(db) == before
    elif raw is not None and db_kind != "good":
        assert db is not None and db.read_bytes() == raw


def test_busy_database_is_one_line(tmp_path):
    db = _good(tmp_path)
    holder = sqlite3.connect(db)
    holder.execute("BEGIN IMMEDIATE")
    try:
        args = ["--busy-timeout", "0.2", "import", "table", _csv(tmp_path), *table_args(), "--db", str(db)]
        res = CliRunner().invoke(cli, args)
    finally:
        holder.rollback()
        holder.close()
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1 and len(lines) == 1, res.output
    assert "busy: another capsafe process is writing; retry or raise --busy-timeout" in lines[0]


def test_every_command_is_walked():
    """A new command must get its bad-input cases above."""
    import click

    def names(group: click.Group, prefix: tuple[str, ...] = ()) -> set[str]:
        out: set[str] = set()
        for n, c in group.commands.items():
            out |= names(c, (*prefix, n)) if isinstance(c, click.Group) else {" ".join((*prefix, n))}
        return out

    commands = names(cli) - {"demo build"}  # takes only an output folder and options (tests/test_finetune.py)
    missing = [c for c in commands if not any(case[0].startswith(c + " ") for case in CASES)]
    assert missing == [], missing

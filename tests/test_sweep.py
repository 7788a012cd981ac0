"""``capsafe sweep`` with real components: two llama.cpp servers serving the shipped GGUF under six
checkpoint names stand for a fleet (one is killed mid-sweep), and a local Ray instance runs the tiny
model and gives the rows the local executor gives."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from capsafe_core.cli import cli
from capsafe_core.store import Store
from capsafe_core.sweep import execute, plan
from tests.servers import llama_cpp_fleet_member

ALIASES = [f"ft-step-{s}" for s in range(0, 60, 10)]


def _write(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def _rows(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            """SELECT c.mitigation, c.seed, c.step, b.name, p.ext_id, g.response FROM generations g
               JOIN checkpoints c ON c.id = g.checkpoint_id JOIN prompts p ON p.id = g.prompt_id
               JOIN benchmarks b ON b.id = p.benchmark_id ORDER BY 1, 2, 3, 4, 5"""
        ).fetchall()
    finally:
        conn.close()


@pytest.mark.slow
def test_servers_fleet_spreads_survives_a_dead_server_and_reruns_add_nothing(tmp_path):
    from capsafe_core.backends.models import resolve_model

    gguf = str(resolve_model("smollm2-135m-instruct").path)
    with llama_cpp_fleet_member(gguf, ALIASES) as (a, _), llama_cpp_fleet_member(gguf, ALIASES) as (b, proc_b):
        listed = "\n".join(
            f'[[checkpoint]]\nmitigation = "lora"\nstep = {s}\nmodel = "{m}"\n'
            for s, m in zip(range(0, 60, 10), ALIASES, strict=True)
        )
        sweep_file = _write(
            tmp_path / "sweep.toml",
            f'experiment = "fleet"\n[benchmarks]\nharmbench = 6\narithmetic = 6\n'
            f'[run]\nevaluators = ["keyword_refusal", "final_number"]\nbatch_size = 3\nmax_retries = 1\n'
            f'[decoding]\nmax_new_tokens = 12\n[servers]\nurls = ["{a}", "{b}"]\nconcurrency = 2\n{listed}',
        )
        sweep = plan.load(sweep_file)
        db = tmp_path / "fleet.db"
        killed: list[str] = []

        def on_event(kind: str, info: dict) -> None:
            if kind == "batch" and info["server"] == b and not killed:
                proc_b.kill()  # mid-sweep: its checkpoint is in flight
                killed.append(b)

        with Store.open(db) as store:
            result = execute.run(store, sweep, "servers", progress=False, on_event=on_event)
        assert killed == [b] and result.dropped == [b]
        assert result.per_server.get(a, 0) > 0 and result.per_server.get(b, 0) > 0  # spread over both
        rows = _rows(db)
        assert len(rows) == 6 * 12 and len({r[2] for r in rows}) == 6  # every checkpoint finished (on a)
        res = CliRunner().invoke(cli, ["sweep", str(sweep_file), "--executor", "servers", "-q", "--db", str(db)])
        assert res.exit_code == 0, res.output
        assert "0 generations added" in res.output and "0 judgments added" in res.output
        res = CliRunner().invoke(cli, ["sweep", str(sweep_file), "--dry-run", "--db", str(db)])
        assert "72 generations stored, 0 to generate" in res.output, res.output


@pytest.mark.slow
def test_ray_executor_gives_the_rows_of_the_local_one(tmp_path, tiny_model):
    body = (
        'experiment = "tiny"\n[benchmarks]\nadvbench = 3\narithmetic = 3\n'
        '[run]\nevaluators = ["keyword_refusal", "final_number"]\ndevice = "cpu"\n'
        "[decoding]\nmax_new_tokens = 8\n[ray]\nnum_cpus = 1\n"
        f'[[checkpoint]]\nstep = 0\nmodel = "{tiny_model}"\n[[checkpoint]]\nstep = 10\nmodel = "{tiny_model}"\n'
    )
    sweep = plan.load(_write(tmp_path / "s.toml", body))
    out = {}
    for executor in ("local", "ray"):
        db = tmp_path / f"{executor}.db"
        with Store.open(db) as store:
            result = execute.run(store, sweep, executor, progress=False)
        assert result.generations_added == 12, executor
        out[executor] = _rows(db)
    import ray

    ray.shutdown()
    assert out["ray"] == out["local"]


def test_sweep_file_errors_are_one_line(tmp_path):
    run = CliRunner().invoke
    cases = [
        ("experiment = 3\n", "experiment"),
        ('experiment = "x"\n[benchmarks]\nadvbnch = 3\n[[checkpoint]]\nstep = 0\nmodel = "m"\n', "advbnch"),
        ('experiment = "x"\n[benchmarks]\nadvbench = 3\n', "no checkpoints"),
        ('experiment = "x"\nbogus = 1\n', "unknown key 'bogus'"),
        ('experiment = "x"\n[benchmarks]\nadvbench = 3\n[[checkpoint]]\nstep = 0\n', "lacks 'model'"),
        ('experiment = "x"\n[benchmarks]\nadvbench = 3\n[run]\nevaluators = ["nope"]\n', "nope"),
        ("not toml [", "not valid TOML"),
        ('experiment = "x"\n[benchmarks]\nadvbench = -2\n', "whole number of prompts"),
        ('experiment = "x"\n[benchmarks]\nadvbench = 2\n[run]\nbatch_size = 0\n', "batch_size = 0"),
        (
            'experiment = "x"\n[benchmarks]\nadvbench = 2\n[[checkpoint]]\nstep = 0\nmodel = "m"\n'
            '[servers]\nurls = "http://a/v1"\n',
            "list of base URLs",
        ),
        (
            'experiment = "x"\n[benchmarks]\nadvbench = 2\n[[checkpoint]]\nstep = 0\nmodel = "m"\n'
            '[servers]\nurls = ["http://a/v1"]\nconcurrency = 0\n',
            "concurrency = 0",
        ),
    ]
    for body, message in cases:
        f = _write(tmp_path / "bad.toml", body)
        res = run(cli, ["sweep", str(f), "--db", str(tmp_path / "x.db")])
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code != 0 and len(lines) == 1 and message in lines[0], (body, res.output)
    assert not (tmp_path / "x.db").exists() or sqlite3.connect(tmp_path / "x.db").execute(
        "SELECT count(*) FROM generations"
    ).fetchone() == (0,)


def test_pattern_finds_saves(tmp_path):
    for m, s, step in [("lora", 0, 10), ("lora", 1, 10), ("none", 0, 20)]:
        (tmp_path / "runs" / m / f"seed-{s}" / f"step-{step}").mkdir(parents=True)
    (tmp_path / "runs" / "lora" / "seed-0" / "notes").mkdir()
    found = plan.expand_pattern("runs/{mitigation}/seed-{seed}/step-{step}", tmp_path)
    assert [(c.mitigation, c.seed, c.step) for c in found] == [("lora", 0, 10), ("lora", 1, 10), ("none", 0, 20)]


@pytest.mark.slow
def test_a_model_no_live_server_serves_stops_the_sweep_in_one_line(tmp_path):
    """Server A serves m1 and m2, server B only m1; A is killed mid-sweep: the m2 checkpoints cannot go
    anywhere, so the sweep stops with one line (instead of waiting for ever), keeping what was written."""
    from capsafe_core.backends.models import resolve_model
    from capsafe_core.errors import BackendError

    gguf = str(resolve_model("smollm2-135m-instruct").path)
    with llama_cpp_fleet_member(gguf, ["m1", "m2"]) as (a, proc_a), llama_cpp_fleet_member(gguf, ["m1"]) as (b, _):
        listed = "".join(f'[[checkpoint]]\nstep = {i}\nmodel = "{m}"\n' for i, m in enumerate(["m2", "m2", "m1"]))
        sweep = plan.load(
            _write(
                tmp_path / "s.toml",
                f'experiment = "e"\n[benchmarks]\nharmbench = 4\n[run]\nevaluators = ["keyword_refusal"]\n'
                f'batch_size = 2\nmax_retries = 1\n[decoding]\nmax_new_tokens = 8\n[servers]\nurls = ["{a}", "{b}"]\n'
                f"{listed}",
            )
        )

        def on_event(kind: str, info: dict) -> None:
            if kind == "batch" and info["server"] == a:
                proc_a.kill()

        with Store.open(tmp_path / "e.db") as store, pytest.raises(BackendError, match="No server left that serves m2"):
            execute.run(store, sweep, "servers", progress=False, on_event=on_event)
        assert 0 < len(_rows(tmp_path / "e.db")) < 12  # the batches that arrived are kept

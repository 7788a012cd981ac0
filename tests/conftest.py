"""Shared fixtures: temporary stores and a small results table."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from capsafe_core.store import Store

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "test.db"


@pytest.fixture
def store(db_path: Path):
    s = Store.open(db_path)
    yield s
    s.close()


def dump(path: Path) -> list[str]:
    """Every row of every table, as SQL text: equal dumps mean an unchanged database."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from tests.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def inspect_logs(tmp_path_factory) -> dict[str, Path]:
    """Real Inspect logs (mockllm): ``arith_eval``, ``arith_json``, ``safety``."""
    from tests.tool_outputs import make_inspect_logs

    return make_inspect_logs(tmp_path_factory.mktemp("inspect"))


@pytest.fixture(scope="session")
def lm_eval_output(tiny_model, tmp_path_factory) -> Path:
    """The --output_path folder of a real lm-eval run (tiny model, two tiny tasks, samples logged)."""
    from tests.tool_outputs import run_lm_eval

    return run_lm_eval(tiny_model, tmp_path_factory.mktemp("lmeval"))


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium under Playwright (no network beyond loopback)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-quic",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()

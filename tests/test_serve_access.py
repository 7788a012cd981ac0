"""Serving the dashboard to a team: beyond loopback a token is required, the database is fixed, and
labels carry the signed-in annotator, who can undo only their own. The browser test starts
``capsafe serve --host 0.0.0.0`` and reaches it through 127.0.0.1 only."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
from click.testing import CliRunner

from capsafe_core import labels
from capsafe_core.access import Access, is_loopback, read_annotators, serve_policy
from capsafe_core.cli import cli
from capsafe_core.errors import BadInput
from capsafe_core.store import Store
from tests.conftest import CHROMIUM
from tests.servers import free_port, wait_until_up
from tests.test_browser import DEMO, SHOTS, new_page, wait_ready

ALICE, BOB = "alice-token-0123456789abcdef", "bob-token-fedcba9876543210"


def test_beyond_loopback_without_access_control_exits_with_one_line(tmp_path):
    res = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--db", "demo"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1 and len(lines) == 1
    assert "--auth-token" in lines[0] and "--annotators" in lines[0] and "0.0.0.0" in lines[0]


def test_policy(tmp_path):
    team = tmp_path / "team.toml"
    team.write_text(f'alice = "{ALICE}"\nbob = "{BOB}"\n')
    access = serve_policy("0.0.0.0", annotators_file=str(team), databases={"r.db": "/x/r.db"})
    assert access.identify(ALICE) == "alice" and access.identify(BOB) == "bob"
    assert access.identify(ALICE[:-1]) is None and access.identify("") is None
    os.environ.update(access.to_env())  # what capsafe serve hands the dashboard
    try:
        assert Access.from_env() == access
    finally:
        os.environ.pop("CAPSAFE_ACCESS")
    with pytest.raises(BadInput, match="use at least 16"):
        serve_policy("0.0.0.0", auth_token="short", databases={"r": "r"})
    with pytest.raises(BadInput, match="needs its database"):
        serve_policy("0.0.0.0", auth_token="x" * 20)
    (tmp_path / "same.toml").write_text(f'a = "{ALICE}"\nb = "{ALICE}"\n')
    with pytest.raises(BadInput, match="share a token"):
        read_annotators(tmp_path / "same.toml")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    assert serve_policy("127.0.0.1").mode == "open"


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed; run: make test")
    tmp = tmp_path_factory.mktemp("team")
    db = tmp / "team.db"
    shutil.copyfile(DEMO, db)
    team = tmp / "team.toml"
    team.write_text(f'alice = "{ALICE}"\nbob = "{BOB}"\n')
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSAFE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "capsafe_core.cli", "serve", "--host", "0.0.0.0", "--port", str(port)]
        + ["--db", str(db), "--annotators", str(team)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/_stcore/health", proc, seconds=90, what="capsafe serve")
        yield {"url": url, "db": db}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


XSTEST_PEOPLE = "('annotator_1', 'annotator_2', 'final')"


def _labels(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(  # the labels made here, not the demo's XSTest annotators'
            f"SELECT id, annotator, label, generation_id FROM human_labels WHERE annotator NOT IN {XSTEST_PEOPLE}"
            " ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


def _sign_in(page, url: str, token: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    wait_ready(page, sidebar=False)
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    wait_ready(page)


def _no_data(page) -> None:
    assert page.locator("[data-testid='stDataFrame'], [data-testid='stPlotlyChart']").count() == 0
    assert page.locator("h1").all_inner_texts() == ["Sign in"]
    assert page.locator("[data-testid='stSidebar'] input").count() == 0


@pytest.mark.browser
def test_team_dashboard(team_server, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    url, db = team_server["url"], team_server["db"]
    requests: list[str] = []
    ctx, page = new_page(browser, requests, height=1400)
    for path in ("samples?g=1", "label", ""):  # deep links show the sign-in form too (and "page not found")
        page.goto(f"{url}/{path}", wait_until="domcontentloaded")
        wait_ready(page, sidebar=False)
        page.get_by_label("Access token").wait_for(timeout=60_000)
        _no_data(page)
    page.screenshot(path=str(SHOTS / "team-sign-in.png"), full_page=True)

    page.get_by_label("Access token").fill("not-the-token-at-all")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Wrong token.").wait_for(timeout=30_000)
    _no_data(page)

    _sign_in(page, url, ALICE)
    page.wait_for_selector("h1:has-text('Overview')", timeout=60_000)
    assert page.get_by_label("Database").count() == 0  # the free path field is gone
    assert page.get_by_text("Signed in as alice").count() == 1
    page.screenshot(path=str(SHOTS / "team-overview.png"), full_page=True)
    page.get_by_role("link", name="Label").click()
    wait_ready(page)
    page.get_by_text("1. Is the response coherent?").wait_for(timeout=60_000)
    assert page.get_by_label("Your name").count() == 0
    page.locator("h1").first.click()
    page.keyboard.press("y")
    wait_ready(page)
    page.keyboard.press("b")
    wait_ready(page)
    page.screenshot(path=str(SHOTS / "team-label.png"), full_page=True)
    rows = _labels(db)
    assert [(a, lab) for _, a, lab, _ in rows] == [("alice", "benign")]
    ctx.close()

    ctx2, bob = new_page(browser, requests)
    _sign_in(bob, url, BOB)
    bob.get_by_role("link", name="Label").click()
    wait_ready(bob)
    bob.get_by_text("1. Is the response coherent?").wait_for(timeout=60_000)
    bob.locator("h1").first.click()
    bob.keyboard.press("u")
    wait_ready(bob)
    assert _labels(db) == rows  # bob's undo cannot reach alice's label
    with Store.open(db) as s:
        assert labels.undo(s, rows[0][0], annotator="bob") is None
    assert _labels(db) == rows
    ctx2.close()
    outside = [u for u in requests if urlparse(u).hostname not in ("127.0.0.1", None) and not u.startswith("data:")]
    assert outside == []

"""``capsafe report``: one self-contained HTML file. Its matched values are ``capsafe compare --json``'s,
a hostile response is inert and truncated, an imported experiment without a capability task still gets a
report whose empty sections say so, and in a real browser with the network blocked it draws its figures
and requests nothing but file:, data: and blob: (screenshots under tests/out/screens)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from capsafe_core import bundled
from capsafe_core.cli import cli
from capsafe_core.report.failures import gallery_ids
from capsafe_core.store import Store, reads
from tests.conftest import CHROMIUM
from tests.test_browser import HOSTILE_TEXT, SHOTS

EXPERIMENT = "smollm2-arithmetic"


def _data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="capsafe-data">(.*?)</script>', html, re.S)
    assert m
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory):
    """The demo with a hostile response in the report's gallery, and its report."""
    tmp = tmp_path_factory.mktemp("report")
    db = tmp / "demo.db"
    shutil.copyfile(bundled.demo_db(), db)
    with Store.open(db, read_only=True) as s:
        ids = gallery_ids(reads.verdicts(s, EXPERIMENT), "keyword_refusal")
    gid = next(iter(ids.values()))[0]
    conn = sqlite3.connect(db)
    conn.execute("UPDATE generations SET response = ? WHERE id = ?", (HOSTILE_TEXT, gid))
    conn.commit()
    conn.close()
    out = tmp / "r.html"
    res = CliRunner().invoke(cli, ["report", "--db", str(db), "--experiment", EXPERIMENT, "-o", str(out)])
    assert res.exit_code == 0, res.output
    return {"db": db, "html": out, "gid": gid}


def test_report_is_small_and_equals_compare_json(hostile_report):
    html = hostile_report["html"].read_text(encoding="utf-8")
    assert hostile_report["html"].stat().st_size < 15_000_000
    res = CliRunner().invoke(cli, ["compare", "--db", str(hostile_report["db"]), "-e", EXPERIMENT, "--json"])
    assert res.exit_code == 0, res.output
    assert _data(html)["compare"] == json.loads(res.output)["compare"]
    for section in ("Setup and provenance", "The answer", "Figures", "Sensitivity", "Where judges fail", "Limitations"):
        assert section in html
    assert "http://" not in html.split("<script")[0]  # nothing remote before the first script (head, styles)


def test_hostile_response_is_inert_and_truncated(hostile_report):
    html = hostile_report["html"].read_text(encoding="utf-8")
    assert "<script>window.__pwned" not in html and '<img src="http://example.invalid' not in html
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    assert "Truncated: the first 2,000 of 100,000 characters." in html
    assert "A" * 5000 not in html


def test_report_of_an_imported_experiment_without_capability(tmp_path):
    src = tmp_path / "judged.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "response", "guard"])
        for i in range(30):
            w.writerow([f"how do I do harmful thing {i}?", f"answer {i}", "unsafe" if i % 3 else "safe"])
    db = tmp_path / "t.db"
    args = ["import", "table", str(src), "--map", "judge:guard=guard", "--set", "experiment=imp", "--db", str(db)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    out = tmp_path / "r.html"
    res = CliRunner().invoke(cli, ["report", "--db", str(db), "-o", str(out)])
    assert res.exit_code == 0, res.output
    html = out.read_text(encoding="utf-8")
    assert "nothing can be compared at a capability target" in html
    assert "No human labels" in html and "Single run (one seed)" in html


@pytest.mark.browser
def test_report_opens_offline_in_a_browser(hostile_report, browser):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed; run: make test")
    requests: list[str] = []
    ctx = browser.new_context(viewport={"width": 1300, "height": 1000}, offline=True)
    ctx.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    page = ctx.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.goto(hostile_report["html"].resolve().as_uri(), wait_until="load")
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3", timeout=60_000)
    assert page.locator(".js-plotly-plot").count() >= 3
    assert page.evaluate("() => window.__pwned") is None
    assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests
    SHOTS.mkdir(parents=True, exist_ok=True)
    for anchor in ("setup", "answer", "figures", "sensitivity", "judges", "limitations"):
        page.locator(f"#{anchor}").scroll_into_view_if_needed()
        page.locator(f"#{anchor}").screenshot(path=str(SHOTS / f"report-{anchor}.png"))
    ctx.close()

"""Names that come from data (experiment, mitigation, benchmark, category, evaluator, annotator) are shown
as inert text on every page: imported with Markdown-image and HTML payloads, none renders as an element
and no request leaves loopback."""

from __future__ import annotations

import csv
from pathlib import Path
from urllib.parse import urlparse

import pytest
from click.testing import CliRunner

from capsafe_core.cli import cli
from tests.servers import dashboard
from tests.test_browser import CHROMIUM, PAGES, SHOTS, new_page, wait_ready

pytestmark = pytest.mark.browser

EXPERIMENT = "[exp](http://example.invalid/e) <i>x</i>"
MITIGATION = '<img src="http://example.invalid/m.png" onerror="window.__pwned=1"><b>BOLD</b>'
BENCHMARK = "![bench](http://example.invalid/b.png)"
CATEGORY = ":red[cat] $x^2$ <u>U</u>"
EVALUATOR = "judge_<em>E</em>"
ANNOTATOR = "**ann** <script>window.__pwned()</script> ![a](http://example.invalid/a.png)"


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def build(tmp: Path) -> Path:
    db = tmp / "names.db"
    cap, safe = [], []
    for mitigation in (MITIGATION, "none"):
        for step, accuracy in ((0, 0.2), (10, 0.9)):
            for i in range(10):
                cap.append(
                    {
                        "mitigation": mitigation,
                        "step": step,
                        "prompt": f"What is {i} + {i}?",
                        "response": str(2 * i),
                        "exact": "correct" if i < accuracy * 10 else "incorrect",
                        "score": 1 if i < accuracy * 10 else 0,
                    }
                )
                safe.append(
                    {
                        "mitigation": mitigation,
                        "step": step,
                        "prompt": f"Harmful request number {i}",
                        "response": f"Sure, here is part {i}" if i % 2 else "I cannot help with that.",
                        "category": CATEGORY,
                        "verdict": "compliance" if i % 2 else "refusal",
                        "human": "harmful" if i % 2 else "refusal",
                    }
                )
    run = CliRunner()
    res = run.invoke(
        cli,
        ["import", "table", str(_write(tmp / "cap.csv", cap)), "--set", f"experiment={EXPERIMENT}"]
        + ["--set", "benchmark=arith_names", "--benchmark-kind", "capability", "--map", "judge:exact=exact"]
        + ["--map", "score:exact=score"]
        + ["--judge-kind", "exact=capability", "--db", str(db)],
    )
    assert res.exit_code == 0, res.output
    res = run.invoke(
        cli,
        ["import", "table", str(_write(tmp / "safe.csv", safe)), "--set", f"experiment={EXPERIMENT}"]
        + ["--set", f"benchmark={BENCHMARK}", "--map", f"judge:{EVALUATOR}=verdict"]
        + ["--judge-kind", f"{EVALUATOR}=refusal", "--map", f"human:{ANNOTATOR}=human", "--db", str(db)],
    )
    assert res.exit_code == 0, res.output
    return db


@pytest.fixture(scope="module")
def names_server(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed; run: make test")
    db = build(tmp_path_factory.mktemp("names"))
    with dashboard(str(db)) as url:
        yield url


def _assert_inert(page, name: str) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, name
    assert page.evaluate("() => window.__pwned") is None, name
    bad = "img[src*='example.invalid'], a[href*='example.invalid'], iframe[src*='example.invalid']"
    assert page.locator(bad).count() == 0, name
    for tag, text in (("b", "BOLD"), ("i", "x"), ("u", "U"), ("em", "E"), ("strong", "ann")):
        assert page.locator(f"{tag}:text-is('{text}')").count() == 0, (name, tag)
    assert page.locator(".katex").count() == 0, name  # no LaTeX from $x^2$


def test_names_from_data_are_inert_on_every_page(names_server, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    requests: list[str] = []
    ctx, page = new_page(browser, requests, height=2200)
    for name in PAGES:
        page.goto(f"{names_server}/{'' if name == 'overview' else name}", wait_until="domcontentloaded")
        wait_ready(page)
        page.wait_for_selector("h1", timeout=60_000)
        if name == "label":
            box = page.get_by_label("Your name")
            box.fill(ANNOTATOR)
            box.press("Enter")
            wait_ready(page)
        if name == "samples":
            page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=60_000)
        _assert_inert(page, name)
        page.screenshot(path=str(SHOTS / f"names-{name}.png"), full_page=True)
    body = page.locator("body").inner_text()
    assert "**ann**" in body or "ann" in body  # the annotator's name is shown, as text
    page.goto(f"{names_server}/samples?g=1", wait_until="domcontentloaded")
    wait_ready(page)
    _assert_inert(page, "sample detail")
    page.screenshot(path=str(SHOTS / "names-sample-detail.png"), full_page=True)
    outside = [
        u
        for u in requests
        if urlparse(u).hostname not in ("127.0.0.1", "localhost", None) and not u.startswith(("data:", "blob:"))
    ]
    assert outside == []
    ctx.close()

"""The dashboard in a real browser: Debian's Chromium driven by Playwright against `streamlit run app.py`.

Visits every page (saving a screenshot of each under tests/out/screens), labels a sample with the
keyboard, checks that a hostile response renders as inert text with no request leaving loopback,
and that two annotators labelling at once lose no label.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from urllib.parse import urlparse

import pytest

from capsafe_core import bundled
from tests.conftest import CHROMIUM
from tests.servers import dashboard

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parent.parent
DEMO = bundled.demo_db()
SHOTS = ROOT / "tests" / "out" / "screens"

HOSTILE = (
    '<script>window.__pwned = 1</script><img src="http://example.invalid/x.png" onerror="window.__pwned=2">'
    '<b>bold?</b><iframe src="http://example.invalid/"></iframe> [click me](http://example.invalid/link) '
    '![remote](http://example.invalid/img.png) <a href="javascript:window.__pwned=3">js</a> '
)
HOSTILE_TEXT = HOSTILE + "A" * (100_000 - len(HOSTILE))
PAGES = ["overview", "curves", "compare", "judges", "samples", "label"]


def hostile_copy(dst: Path) -> int:
    """A copy of the demo database with one hostile response; returns its generation id."""
    shutil.copyfile(DEMO, dst)
    conn = sqlite3.connect(dst)
    gid = conn.execute("SELECT min(id) FROM generations").fetchone()[0]
    conn.execute("UPDATE generations SET response = ? WHERE id = ?", (HOSTILE_TEXT, gid))
    conn.commit()
    conn.close()
    return int(gid)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed; run: make test (it installs chromium and chromium-driver)")
    db = tmp_path_factory.mktemp("browser") / "demo.db"
    gid = hostile_copy(db)
    with dashboard(str(db)) as url:
        yield {"url": url, "db": db, "hostile": gid}


def new_page(browser, requests: list[str] | None = None, *, height: int = 1000):
    ctx = browser.new_context(viewport={"width": 1400, "height": height})
    page = ctx.new_page()
    if requests is not None:
        page.on("request", lambda r: requests.append(r.url))
    return ctx, page


def wait_ready(page, timeout: float = 120_000, *, sidebar: bool = True) -> None:
    page.wait_for_selector("[data-testid='stSidebar']" if sidebar else "[data-testid='stApp']", timeout=timeout)
    idle = """() => { const w = document.querySelector('[data-testid="stStatusWidget"]');
                      return !w || !(w.innerText.includes('Running') || w.innerText.includes('Stop')); }"""
    for _ in range(3):  # idle twice in a row, a second apart: the run has finished, not yet started
        page.wait_for_function(idle, timeout=timeout)
        page.wait_for_timeout(1000)
        if page.evaluate(idle):
            break
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=\"stSkeleton\"]').length === 0", timeout=timeout
    )
    page.wait_for_timeout(800)


def test_every_page_renders(server, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    ctx, page = new_page(browser, height=2200)
    for name in PAGES:
        page.goto(f"{server['url']}/{'' if name == 'overview' else name}", wait_until="domcontentloaded")
        wait_ready(page)
        page.wait_for_selector("h1", timeout=60_000)
        charts = page.locator("[data-testid='stPlotlyChart']")
        for i in range(charts.count()):
            charts.nth(i).locator(".main-svg").first.wait_for(timeout=60_000)
        page.wait_for_timeout(500)
        assert page.locator("[data-testid='stException']").count() == 0, name
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    ctx.close()


def test_hostile_response_is_inert_and_nothing_leaves_loopback(server, browser):
    requests: list[str] = []
    ctx, page = new_page(browser, requests)
    page.goto(f"{server['url']}/samples?g={server['hostile']}", wait_until="domcontentloaded")
    wait_ready(page)
    page.get_by_text("Response (plain text)").wait_for(timeout=60_000)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(SHOTS / "samples-hostile.png"), full_page=False)
    assert page.evaluate("() => window.__pwned") is None
    code = page.locator("[data-testid='stCode']").nth(1).inner_text()
    assert "<script>window.__pwned = 1</script>" in code  # shown as text
    assert page.locator("iframe[src*='example.invalid'], img[src*='example.invalid']").count() == 0
    assert page.locator("a[href*='example.invalid'], a[href^='javascript']").count() == 0
    outside = [
        u
        for u in requests
        if urlparse(u).hostname not in ("127.0.0.1", "localhost", None) and not u.startswith(("data:", "blob:"))
    ]
    assert outside == []
    ctx.close()


def _label_with_keyboard(page, url: str, annotator: str, n: int) -> None:
    page.goto(f"{url}/label", wait_until="domcontentloaded")
    wait_ready(page)
    box = page.get_by_label("Your name")
    box.fill(annotator)
    box.press("Enter")
    wait_ready(page)
    for _ in range(n):
        page.get_by_text("1. Is the response coherent?").wait_for(timeout=60_000)
        page.locator("h1").first.click()
        page.keyboard.press("n")
        wait_ready(page)
        page.keyboard.press("h")
        wait_ready(page)


def _labels(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(  # the labels made here, not the demo's XSTest annotators'
            "SELECT annotator, label, coherent, generation_id FROM human_labels"
            " WHERE annotator NOT IN ('annotator_1', 'annotator_2', 'final')"
        ).fetchall()
    finally:
        conn.close()


def test_label_with_keyboard(server, browser):
    ctx, page = new_page(browser)
    _label_with_keyboard(page, server["url"], "kb", 1)
    page.screenshot(path=str(SHOTS / "label-after.png"), full_page=True)
    rows = [r for r in _labels(server["db"]) if r[0] == "kb"]
    assert [(a, lab, c) for a, lab, c, _ in rows] == [("kb", "harmful", 0)]
    ctx.close()


def test_two_annotators_at_once_lose_nothing(server, browser):
    import threading

    errors: list[BaseException] = []

    def work(name: str) -> None:
        from playwright.sync_api import sync_playwright

        try:
            with sync_playwright() as p:
                b = p.chromium.launch(
                    executable_path=CHROMIUM,
                    args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
                )
                ctx = b.new_context(viewport={"width": 1400, "height": 1000})
                _label_with_keyboard(ctx.new_page(), server["url"], name, 3)
                b.close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    rows = _labels(server["db"])
    for name in ("alice", "bob"):
        mine = [r for r in rows if r[0] == name]
        assert len(mine) == 3 and len({r[3] for r in mine}) == 3, mine

"""The audit queue in a real browser: label five items of an audit sample with the keyboard, then see the
corrected value change on the Overview; the Judges page shows people against judges on the demo's XSTest
experiment, with prevalence, PABAK and AC1 next to every κ. Screenshots under tests/out/screens."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from capsafe_core import audit, bundled
from capsafe_core.store import Store
from capsafe_core.store import labels as store_labels
from tests.conftest import CHROMIUM
from tests.servers import dashboard
from tests.test_browser import SHOTS, new_page, wait_ready

pytestmark = pytest.mark.browser
EXPERIMENT = "smollm2-arithmetic"


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """The demo with an audit sample of 80 whose items 6..80 are labelled by 'aud' (harmful where the keyword
    judge says it complied, else refusal)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed; run: make test (it installs chromium and chromium-driver)")
    db = tmp_path_factory.mktemp("audit") / "demo.db"
    shutil.copyfile(bundled.demo_db(), db)
    with Store.open(db) as s:
        drawn = audit.draw(s, EXPERIMENT, n=80, seed=4)
        judged = dict(
            s.conn.execute(
                """SELECT j.generation_id, j.label FROM judgments j JOIN evaluators e ON e.id = j.evaluator_id
                   WHERE e.name = 'keyword_refusal'"""
            ).fetchall()
        )
        for gid, pos in drawn.items.select("generation_id", "position").iter_rows():
            if pos > 5:
                label = "harmful" if judged.get(gid) == "compliance" else "refusal"
                store_labels.add_label(s, gid, annotator="aud", label=label, coherent=True, note=None, source="audit")
    with dashboard(str(db)) as url:
        yield {"url": url, "db": db}


def _corrected_table(page, url: str) -> str:
    page.goto(f"{url}/?annotator=aud", wait_until="domcontentloaded")
    wait_ready(page)
    page.get_by_text("Corrected with human labels (annotator aud)").wait_for(timeout=60_000)
    return page.locator("[data-testid='stTable']").first.inner_text()


def test_label_the_audit_queue_then_the_corrected_value_changes(audited, browser):
    ctx, page = new_page(browser, height=1800)
    before = _corrected_table(page, audited["url"])
    page.screenshot(path=str(SHOTS / "overview-corrected-before.png"), full_page=True)
    page.goto(f"{audited['url']}/label?annotator=aud", wait_until="domcontentloaded")
    wait_ready(page)
    page.get_by_text("Audit sample (for estimates)").wait_for(timeout=60_000)
    for i in range(5):
        page.get_by_text(f"item {i + 1} of 80").wait_for(timeout=60_000)
        if i == 0:
            page.screenshot(path=str(SHOTS / "label-audit.png"), full_page=True)
        page.locator("h1").first.click()
        page.keyboard.press("n")
        wait_ready(page)
        page.keyboard.press("h")
        wait_ready(page)
    conn = sqlite3.connect(audited["db"], timeout=30)
    rows = conn.execute(
        "SELECT label, coherent, source FROM human_labels WHERE annotator = 'aud' ORDER BY id"
    ).fetchall()
    conn.close()
    assert len(rows) == 80 and rows[-5:] == [("harmful", 0, "audit")] * 5
    after = _corrected_table(page, audited["url"])
    page.screenshot(path=str(SHOTS / "overview-corrected-after.png"), full_page=True)
    assert "corrected [95% CI]" in before and before != after
    ctx.close()


def test_judges_page_shows_people_against_judges(audited, browser):
    ctx, page = new_page(browser, height=2600)
    page.goto(f"{audited['url']}/judges?experiment=xstest-completions", wait_until="domcontentloaded")
    wait_ready(page)
    page.get_by_text("Judges against people, by coherence").wait_for(timeout=60_000)
    page.get_by_text("PABAK (2 × agreement − 1) and Gwet's AC1").wait_for(timeout=60_000)
    assert page.locator("[data-testid='stDataFrame']").count() >= 2
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(SHOTS / "judges-xstest.png"), full_page=True)
    ctx.close()


def test_compare_shows_a_view_corrected_with_the_audit_labels(audited, browser):
    ctx, page = new_page(browser, height=2600)
    page.goto(f"{audited['url']}/compare?annotator=aud", wait_until="domcontentloaded")
    wait_ready(page)
    page.get_by_text("This view corrected with the labels of aud").wait_for(timeout=60_000)
    table = page.locator("[data-testid='stTable']").first.inner_text()
    assert "corrected [95% CI]" in table and "lower_lr" in table
    assert page.locator("[data-testid='stException']").count() == 0
    page.screenshot(path=str(SHOTS / "compare-corrected.png"), full_page=True)
    ctx.close()

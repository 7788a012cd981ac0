"""AppTest for every page on the demo database: no exception, and the main widget changes the output."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from capsafe_core import bundled

ROOT = Path(__file__).resolve().parent.parent
DEMO = bundled.demo_db()


@pytest.fixture
def app(monkeypatch, request):
    db = getattr(request, "param", None) or DEMO
    monkeypatch.setenv("CAPSAFE_DB", str(db))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    return at


def goto(at, page):
    at.switch_page(f"pages/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def charts(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_overview_target_changes_headline(app):
    at = goto(app, "overview")
    assert [m.label for m in at.metric][:3] == ["checkpoints", "prompts", "generations"]
    forest = charts(at)[0]["data"]
    assert "mitigation (95% CI)" in {t["name"] for t in forest}  # the forest plot leads
    assert any("indistinguishable" in m.value or "significantly" in m.value for m in at.markdown)
    before = at.dataframe[0].value.to_csv()
    at.number_input(key="ov_target").set_value(0.0).run()
    assert not at.exception
    after = at.dataframe[0].value.to_csv()
    assert before != after
    assert "step 0" in after  # every mitigation reaches capability 0 at step 0


def test_curves_metric_and_toggle_change_figure(app):
    at = goto(app, "curves")
    first = charts(at)
    assert len(first) == 3  # safety, incoherence, over-refusal
    assert any(t["name"].startswith("none") for t in first[0]["data"])
    at.selectbox(key="cv_metric").set_value("refusal_rate").run()
    assert not at.exception
    assert charts(at)[0]["data"][0]["y"] != first[0]["data"][0]["y"]


def test_compare_slider_changes_table(app):
    at = goto(app, "compare")
    before = at.dataframe[0].value.to_csv()
    at.slider(key="cmp_target").set_value(0.0).run()
    assert not at.exception
    assert at.dataframe[0].value.to_csv() != before


def test_judges_pair_changes_confusion(app):
    at = goto(app, "judges")
    assert at.dataframe[0].value.shape[0] > 0
    subsets = set(at.dataframe[0].value["subset"])
    assert {"all", "coherent", "incoherent"} <= subsets  # split by coherence
    pairs = at.selectbox(key="jd_pair").options
    assert len(pairs) >= 2
    before = charts(at)[1]
    at.selectbox(key="jd_pair").set_value(pairs[-1]).run()
    assert not at.exception
    assert charts(at)[1] != before


def test_samples_filter_changes_table(app):
    at = goto(app, "samples")
    total = at.markdown[-1].value if at.markdown else ""
    at.selectbox(key="sm_benchmark").set_value(at.selectbox(key="sm_benchmark").options[1]).run()
    assert not at.exception
    assert (at.markdown[-1].value if at.markdown else "") != total


def test_label_saves_a_label(monkeypatch, tmp_path):
    import shutil
    import sqlite3

    db = tmp_path / "copy.db"
    shutil.copyfile(DEMO, db)
    monkeypatch.setenv("CAPSAFE_DB", str(db))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at = goto(at, "label")
    at.text_input(key="lb_annotator").set_value("tester").run()
    assert not at.exception
    assert "labelled by tester" in at.get("progress")[0].proto.text
    at.button(key="lb_y").click().run()
    at.button(key="lb_h").click().run()
    assert not at.exception
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT annotator, label, coherent FROM human_labels WHERE annotator = 'tester'").fetchall()
    conn.close()
    assert rows == [("tester", "harmful", 1)]


def test_overview_prepares_the_report(app):
    at = goto(app, "overview")
    at.button(key="ov_report").click().run()
    assert not at.exception, [e.value for e in at.exception]
    downloads = [e for e in at.get("download_button") if "report" in e.proto.label.lower()]
    assert downloads, "no report download after preparing it"

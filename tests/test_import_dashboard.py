"""The dashboard shows imported runs: every page renders a database of Inspect, JailbreakBench and HarmBench imports."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.tool_outputs import JBB_ARTIFACT, harmbench_results, import_cli, write_json

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["overview", "curves", "compare", "judges", "samples", "label"]
EXPERIMENT = "imported-ft"


@pytest.fixture(scope="module")
def imported_db(tmp_path_factory, inspect_logs) -> Path:
    """One experiment, two checkpoints: capability from Inspect, safety from Inspect, JailbreakBench and HarmBench."""
    tmp = tmp_path_factory.mktemp("imported")
    db = tmp / "imported.db"
    harmbench = write_json(tmp / "llama2_7b.json", harmbench_results(n=30))
    for step in ("0", "20"):
        for args in (
            ["inspect", str(inspect_logs["arith_eval"]), str(inspect_logs["safety"])],
            ["jbb", str(JBB_ARTIFACT)],
            ["harmbench", str(harmbench)],
        ):
            res = import_cli(db, *args, "--experiment", EXPERIMENT, "--step", step)
            assert res.exit_code == 0, res.output
    return db


def test_sidebar_offers_the_imported_experiment(monkeypatch, imported_db):
    monkeypatch.setenv("CAPSAFE_DB", str(imported_db))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    box = at.sidebar.selectbox(key="experiment")
    assert (box.value, box.options) == (EXPERIMENT, [EXPERIMENT])


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_the_imported_runs(monkeypatch, imported_db, page):
    monkeypatch.setenv("CAPSAFE_DB", str(imported_db))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(f"pages/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["_ctx"].experiment == EXPERIMENT  # the page's experiment, chosen in the sidebar
    if page == "overview":
        assert [m.label for m in at.metric][:3] == ["checkpoints", "prompts", "generations"]
        values = [m.value for m in at.metric]
        assert (values[0], values[2]) == ("2", "236")
        assert at.dataframe[0].value["mitigation"].to_list() == ["none"]
        assert "harmbench" in at.multiselect(key="ov_benchmarks").options
    elif page in ("curves", "compare", "judges"):
        assert at.dataframe[0].value.shape[0] > 0 and at.get("plotly_chart")
    elif page == "samples":
        assert at.markdown[-1].value.startswith("**236** generations match")
    else:
        at.text_input(key="lb_annotator").set_value("tester").run()
        assert not at.exception
        assert "labelled by tester" in at.get("progress")[0].proto.text

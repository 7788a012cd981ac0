"""capsafe dashboard: `streamlit run app.py` (or `capsafe serve`). A router; the pages are in pages/."""

import streamlit as st

from pages import common

st.set_page_config(page_title="capsafe", page_icon="🛡️", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", default=True),
    st.Page("pages/curves.py", title="Curves"),
    st.Page("pages/compare.py", title="Compare"),
    st.Page("pages/judges.py", title="Judges"),
    st.Page("pages/samples.py", title="Samples"),
    st.Page("pages/label.py", title="Label"),
]

page = st.navigation(PAGES)
st.session_state["_ctx"] = common.sidebar()
with st.sidebar:
    st.radio(
        "Figure export format",
        ["png", "svg"],
        key="figure_format",
        horizontal=True,
        help="What the camera button above each figure saves.",
    )
page.run()

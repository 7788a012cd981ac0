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

if common.signed_in() is None:  # served beyond loopback: nothing but the sign-in form until a token is given
    st.navigation([st.Page(common.sign_in_page, title="Sign in")]).run()
    st.stop()
page = st.navigation(PAGES)
st.session_state["_via_app"] = True
st.session_state["_ctx"] = common.sidebar()
with st.sidebar:
    st.radio(
        "Figure export format",
        ["png", "svg"],
        key="figure_format",
        horizontal=True,
        help="What the camera button above each figure saves.",
    )
wanted = st.session_state.pop("_wanted", None)
if wanted and st.session_state["_ctx"] is not None:  # a deep link that arrived before the router ran
    st.switch_page(wanted[0], query_params=wanted[1])
page.run()

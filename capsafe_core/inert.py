"""Untrusted text made inert: names and outputs that come from data, shown where markup renders.

Model outputs and every name from an imported file (experiment, mitigation, benchmark,
category, evaluator, annotator) may hold Markdown, HTML or links. ``md`` escapes text for a
Markdown context (Streamlit's ``st.markdown``, captions, labels, help texts); ``html`` for HTML
and plotly labels. Where no markup is needed, show text through elements that render none.
"""

from __future__ import annotations

import html as _html
import string

_MD_SPECIAL = frozenset(string.punctuation)  # CommonMark: any ASCII punctuation may be backslash-escaped


_JOIN = "\u2060"  # WORD JOINER: invisible, but no URL, e-mail, emoji code or :color[] directive spans it
_BREAK_AFTER = frozenset(":@.")


def md(text: object) -> str:
    """``text`` as literal characters in Markdown: every ASCII punctuation mark backslash-escaped (no
    emphasis, link, image, HTML or LaTeX), and an invisible word joiner after ``:``, ``@`` and ``.``,
    because autolinks, emoji codes and Streamlit's ``:red[...]`` directives are found in the text after
    escapes are resolved. Line breaks become spaces."""
    out = []
    for c in " ".join(str(text).split()):
        out.append("\\" + c if c in _MD_SPECIAL else c)
        if c in _BREAK_AFTER:
            out.append(_JOIN)
    return "".join(out)


def md_list(items: object) -> str:
    """Names joined with commas, each escaped."""
    return ", ".join(md(i) for i in items)  # type: ignore[attr-defined]


def html(text: object) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return _html.escape(str(text), quote=True)


def plot_label(text: object) -> str:
    """``text`` for a plotly label, which renders a few HTML tags (``<b>``, ``<a href>``, ...): ``&``,
    ``<`` and ``>`` escaped (plotly shows ``&quot;`` literally, so quotes stay)."""
    return _html.escape(str(text), quote=False)

"""HTML pieces of the report: every text from data escaped, model outputs truncated, tables and plotly
figures inline (plotly.js embedded once), and a page that loads nothing from anywhere."""

from __future__ import annotations

import html
import json
from typing import Any

import plotly.graph_objects as go
import polars as pl

MAX_OUTPUT = 2000  # characters of a model output shown in the gallery

# Only inline scripts and styles and data:/blob: images: the file opens offline and fetches nothing.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; connect-src 'none'"
)
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.8rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .88rem; }
th, td { border: 1px solid #ddd; padding: .3rem .55rem; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #666; font-size: .88rem; } .empty { color: #8a6d3b; background: #fcf8e3; padding: .5rem .8rem; }
pre.out { white-space: pre-wrap; word-break: break-word; background: #f8f8f8; border: 1px solid #e3e3e3;
          padding: .6rem; font-size: .82rem; max-height: 18rem; overflow: auto; }
.card { border: 1px solid #e3e3e3; border-radius: 6px; padding: .6rem .9rem; margin: .8rem 0; }
nav a { margin-right: 1rem; }
"""


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def para(text: str, cls: str | None = None) -> str:
    """A paragraph of plain text (escaped)."""
    return f"<p{f' class={chr(34)}{cls}{chr(34)}' if cls else ''}>{esc(text)}</p>"


def empty(text: str) -> str:
    """Says why a section has nothing to show."""
    return para(text, "empty")


def output(text: object, limit: int = MAX_OUTPUT) -> str:
    """A model output as inert text, truncated with a note."""
    s = "" if text is None else str(text)
    note = ""
    if len(s) > limit:
        note = f'<p class="note">Truncated: the first {limit:,} of {len(s):,} characters.</p>'
        s = s[:limit]
    return f'<pre class="out">{esc(s)}</pre>{note}'


def _cell(value: Any, digits: int) -> tuple[str, bool]:
    if value is None:
        return "", False
    if isinstance(value, float):
        return ("" if value != value else f"{value:.{digits}f}"), True
    if isinstance(value, bool):
        return ("yes" if value else "no"), False
    if isinstance(value, int):
        return f"{value:,}", True
    if isinstance(value, list):
        return esc(", ".join(str(x) for x in value)), False
    return esc(value), False


def table(frame: pl.DataFrame, *, digits: int = 3) -> str:
    """A frame as an HTML table (names and values escaped)."""
    if frame.height == 0:
        return empty("No rows.")
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.iter_rows():
        cells = []
        for value in row:
            text, num = _cell(value, digits)
            cells.append(f'<td class="num">{text}</td>' if num else f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def pairs(items: list[tuple[str, object]]) -> str:
    """Key/value rows (both escaped)."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return f"<table><tbody>{rows}</tbody></table>"


class Figures:
    """Plotly figures as inline HTML; the first one carries plotly.js itself, so the file needs no CDN."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fig: go.Figure, caption: str = "") -> str:
        first = self.count == 0
        self.count += 1
        fig.update_layout(margin={"l": 80})  # room for the axis title and ticks in a page without Streamlit's
        body = fig.to_html(
            full_html=False,
            include_plotlyjs=first,
            config={"displaylogo": False, "responsive": True},
            default_width="100%",
            default_height="460px",
        )
        return body + (para(caption, "note") if caption else "")


def data_block(data: dict[str, Any]) -> str:
    """Machine-readable numbers of the report (JSON inside a script element that never runs)."""
    text = json.dumps(data, default=str, ensure_ascii=False, allow_nan=False)
    for c, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):  # no markup state can open
        text = text.replace(c, code)
    return f'<script type="application/json" id="capsafe-data">{text}</script>'


def page(title: str, sections: list[tuple[str, str, str]], data: dict[str, Any]) -> str:
    """The whole file: ``sections`` are (anchor, heading, body HTML)."""
    nav = "".join(f'<a href="#{a}">{esc(h)}</a>' for a, h, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{esc(h)}</h2>{b}</section>' for a, h, b in sections)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{esc(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1><nav>{nav}</nav>{body}{data_block(data)}"
        "</body></html>"
    )

"""Plotly figure builders: data frame in, figure out. No model text goes into a figure."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl

from capsafe_core import inert

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def _safe(text: object) -> str:
    """Names from data (mitigations, benchmarks) escaped: plotly renders a little HTML in labels."""
    return inert.plot_label(text)


def color_map(mitigations: list[str]) -> dict[str, str]:
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted(mitigations))}


def curve_figure(
    df: pl.DataFrame,
    *,
    target: float | None,
    y: str = "value",
    y_label: str,
    x_label: str = "capability",
    title: str = "",
) -> go.Figure:
    """Safety (or another rate) against capability: a line per mitigation, a point per checkpoint
    labelled with its step, CI bars on both axes, and the capability target as a vertical line.
    Each point carries its ``checkpoint_id`` as customdata (clicking it opens its samples)."""
    fig = go.Figure()
    colors = color_map(df["mitigation"].unique().to_list()) if df.height else {}
    for (mit,), part in df.sort("mitigation", "step").group_by(["mitigation"], maintain_order=True):
        p = part.sort("step")
        fig.add_trace(
            go.Scatter(
                x=p["capability"].to_list(),
                y=p[y].to_list(),
                mode="lines+markers+text",
                name=_safe(mit),
                text=[f"{s}" for s in p["step"].to_list()],
                textposition="top center",
                textfont={"size": 10},
                marker={"size": 9, "color": colors[str(mit)]},
                line={"color": colors[str(mit)]},
                customdata=p.select("checkpoint_id", "step", "n").rows(),
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": (p["hi"] - p[y]).to_list(),
                    "arrayminus": (p[y] - p["lo"]).to_list(),
                    "thickness": 1,
                },
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": (p["capability_hi"] - p["capability"]).to_list(),
                    "arrayminus": (p["capability"] - p["capability_lo"]).to_list(),
                    "thickness": 1,
                },
                hovertemplate=(
                    f"<b>{_safe(mit)}</b> step %{{customdata[1]}}<br>{_safe(x_label)} %{{x:.3f}}<br>"
                    f"{_safe(y_label)} %{{y:.3f}}<br>n = %{{customdata[2]}} prompts<extra></extra>"
                ),
            )
        )
    if target is not None:
        fig.add_vline(
            x=target,
            line_dash="dash",
            line_color="#555",
            annotation_text=f"target {target:g}",
            annotation_position="top",
        )
    fig.update_layout(
        title=_safe(title),
        xaxis_title=_safe(x_label),
        yaxis_title=_safe(y_label),
        legend_title="mitigation",
        margin={"t": 50, "l": 10, "r": 10, "b": 10},
        height=460,
        clickmode="event+select",
    )
    fig.update_yaxes(rangemode="tozero")
    return fig


def matched_figure(m: pl.DataFrame, *, y_label: str, title: str = "") -> go.Figure:
    """Mitigations at the target: first-reaching checkpoint and interpolated value, with CIs."""
    fig = go.Figure()
    reached = m.filter(pl.col("value").is_not_null())
    names = [_safe(x) for x in reached["mitigation"].to_list()]
    fig.add_trace(
        go.Bar(
            x=names,
            y=reached["value"].to_list(),
            name="first checkpoint at target",
            error_y={
                "type": "data",
                "symmetric": False,
                "array": (reached["hi"] - reached["value"]).to_list(),
                "arrayminus": (reached["value"] - reached["lo"]).to_list(),
            },
            text=[f"step {s}" for s in reached["first_step"].to_list()],
            textposition="inside",
        )
    )
    interp = reached.filter(pl.col("interp_value").is_not_null())
    fig.add_trace(
        go.Scatter(
            x=[_safe(x) for x in interp["mitigation"].to_list()],
            y=interp["interp_value"].to_list(),
            mode="markers",
            name="interpolated",
            marker={"symbol": "diamond", "size": 12, "color": "#333"},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": (interp["interp_hi"] - interp["interp_value"]).to_list(),
                "arrayminus": (interp["interp_value"] - interp["interp_lo"]).to_list(),
            },
        )
    )
    fig.update_layout(
        title=_safe(title), yaxis_title=_safe(y_label), height=380, margin={"t": 50, "l": 10, "r": 10, "b": 10}
    )
    return fig


def confusion_figure(matrix: list[list[int]], labels: list[str], *, x_title: str, y_title: str) -> go.Figure:
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=[_safe(x) for x in labels],
            y=[_safe(y) for y in labels],
            colorscale="Blues",
            showscale=False,
            text=matrix,
            texttemplate="%{text}",
        )
    )
    fig.update_layout(
        xaxis_title=_safe(x_title), yaxis_title=_safe(y_title), height=300, margin={"t": 20, "l": 10, "r": 10, "b": 10}
    )
    fig.update_yaxes(autorange="reversed")
    return fig


def kappa_figure(pairs: pl.DataFrame) -> go.Figure:
    """Cohen's κ per evaluator pair, overall and split by coherence, with CIs."""
    fig = go.Figure()
    for subset, color in (("all", "#1f77b4"), ("coherent", "#2ca02c"), ("incoherent", "#d62728")):
        p = pairs.filter(pl.col("subset") == subset)
        if p.height == 0:
            continue
        names = [f"{_safe(a)} vs {_safe(b)}" for a, b in p.select("a", "b").iter_rows()]
        fig.add_trace(
            go.Bar(
                y=names,
                x=p["kappa"].to_list(),
                orientation="h",
                name=subset,
                marker_color=color,
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": (p["kappa_hi"] - p["kappa"]).to_list(),
                    "arrayminus": (p["kappa"] - p["kappa_lo"]).to_list(),
                },
            )
        )
    fig.update_layout(
        barmode="group",
        xaxis_title="Cohen's κ",
        height=max(300, 60 * pairs["a"].n_unique() + 120),
        margin={"t": 20, "l": 10, "r": 10, "b": 10},
        xaxis_range=[-1, 1],
    )
    return fig

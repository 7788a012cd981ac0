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
    A mitigation with several runs (seeds) gets a thin line per run and a bold line through the
    runs' mean at each step. Each point carries its ``checkpoint_id`` as customdata (clicking it
    opens its samples)."""
    fig = go.Figure()
    colors = color_map(df["mitigation"].unique().to_list()) if df.height else {}
    if df.height and "seed" not in df.columns:
        df = df.with_columns(pl.lit(0).alias("seed"))
    for (mit,), part in df.sort("mitigation", "seed", "step").group_by(["mitigation"], maintain_order=True):
        seeds = part["seed"].unique().sort().to_list()
        for seed in seeds:
            p = part.filter(pl.col("seed") == seed).sort("step")
            fig.add_trace(_checkpoint_trace(p, str(mit), seed, len(seeds), colors[str(mit)], y, x_label, y_label))
        if len(seeds) > 1:
            mean = part.group_by("step").agg(pl.col("capability").mean(), pl.col(y).mean(), pl.len()).sort("step")
            fig.add_trace(
                go.Scatter(
                    x=mean["capability"].to_list(),
                    y=mean[y].to_list(),
                    mode="lines+markers",
                    name=f"{_safe(mit)} (mean of {len(seeds)} runs)",
                    line={"color": colors[str(mit)], "width": 4},
                    marker={"size": 10, "color": colors[str(mit)], "symbol": "diamond"},
                    customdata=mean.select("step", "len").rows(),
                    hovertemplate=(
                        f"<b>{_safe(mit)}</b> mean of %{{customdata[1]}} runs, step %{{customdata[0]}}<br>"
                        f"{_safe(x_label)} %{{x:.3f}}<br>{_safe(y_label)} %{{y:.3f}}<extra></extra>"
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


def _checkpoint_trace(
    p: pl.DataFrame, mit: str, seed: int, runs: int, color: str, y: str, x_label: str, y_label: str
) -> go.Scatter:
    """One run's checkpoints; thin and without CI bars when the mitigation has several runs."""
    many = runs > 1
    bars = (
        {}
        if many
        else {"error_y": _bars(p, y, "lo", "hi"), "error_x": _bars(p, "capability", "capability_lo", "capability_hi")}
    )
    return go.Scatter(
        x=p["capability"].to_list(),
        y=p[y].to_list(),
        mode="lines+markers" if many else "lines+markers+text",
        name=f"{_safe(mit)} seed {seed}" if many else _safe(mit),
        legendgroup=_safe(mit),
        opacity=0.45 if many else 1.0,
        text=[f"{s}" for s in p["step"].to_list()],
        textposition="top center",
        textfont={"size": 10},
        marker={"size": 6 if many else 9, "color": color},
        line={"color": color, "width": 1 if many else 2},
        customdata=p.select("checkpoint_id", "step", "n", "seed").rows(),
        hovertemplate=(
            f"<b>{_safe(mit)}</b> seed %{{customdata[3]}}, step %{{customdata[1]}}<br>{_safe(x_label)} %{{x:.3f}}<br>"
            f"{_safe(y_label)} %{{y:.3f}}<br>n = %{{customdata[2]}} prompts<extra></extra>"
        ),
        **bars,
    )


def _bars(p: pl.DataFrame, col: str, lo: str, hi: str) -> dict[str, object]:
    return {
        "type": "data",
        "symmetric": False,
        "array": (p[hi] - p[col]).to_list(),
        "arrayminus": (p[col] - p[lo]).to_list(),
        "thickness": 1,
    }


def forest_figure(matched: pl.DataFrame, runs: pl.DataFrame, *, x_label: str, title: str = "") -> go.Figure:
    """Safety at the target per mitigation (interpolated, with its 95% CI), one row each; the runs
    (seeds) as faint points; the best set (lowest, and those not significantly worse) marked."""
    m = matched.filter(pl.col("interp_value").is_not_null()).sort("interp_value", descending=True)
    best = (
        set(m["best_set"][0].to_list())
        if m.height and "best_set" in m.columns and m["best_set"][0] is not None
        else set()
    )
    names = [_safe(x) for x in m["mitigation"].to_list()]
    colors = ["#2ca02c" if x in best else "#1f77b4" for x in m["mitigation"].to_list()]
    fig = go.Figure()
    if runs.height:
        r = runs.filter(pl.col("interp_value").is_not_null() & pl.col("mitigation").is_in(m["mitigation"].to_list()))
        fig.add_trace(
            go.Scatter(
                x=r["interp_value"].to_list(),
                y=[_safe(x) for x in r["mitigation"].to_list()],
                mode="markers",
                name="single runs (seeds)",
                marker={"size": 8, "color": "rgba(80,80,80,0.35)"},
                customdata=r.select("seed").rows(),
                hovertemplate="seed %{customdata[0]}: %{x:.3f}<extra></extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=m["interp_value"].to_list(),
            y=names,
            mode="markers",
            name="mitigation (95% CI)",
            marker={"size": 14, "symbol": "diamond", "color": colors},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": (m["interp_hi"] - m["interp_value"]).to_list(),
                "arrayminus": (m["interp_value"] - m["interp_lo"]).to_list(),
                "thickness": 2,
            },
            text=["best (indistinguishable)" if x in best else "" for x in m["mitigation"].to_list()],
            hovertemplate="%{y}: %{x:.3f} %{text}<extra></extra>",
        )
    )
    fig.update_layout(
        title=_safe(title),
        xaxis_title=_safe(x_label),
        height=max(260, 70 * m.height + 120),
        margin={"t": 50, "l": 10, "r": 10, "b": 10},
        legend={"orientation": "h", "y": -0.25},
    )
    fig.update_xaxes(rangemode="tozero")
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

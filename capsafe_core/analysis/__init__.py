"""Analysis: rates and curves at matched capability (``rates``), and judge reliability (``agreement``).

Pure functions on polars frames (usually ``capsafe_core.store.reads.verdicts``); the dashboard and
the CLI call the same ones.
"""

from capsafe_core.analysis.agreement import (
    DIMENSIONS,
    agreement,
    coherence_split,
    disagreements,
    pair_stats,
    rater_values,
    safe_because_broken,
    sensitivity,
)
from capsafe_core.analysis.formatting import ci_expr, format_ci
from capsafe_core.analysis.rates import (
    METRICS,
    Matched,
    checkpoint_rates,
    compare_table,
    curves,
    incoherent_ids,
    matched_capability,
    overview,
    prompt_values,
    safety_views,
    summarize,
    value_expr,
    wide_compare,
)

__all__ = [
    "DIMENSIONS",
    "METRICS",
    "Matched",
    "agreement",
    "checkpoint_rates",
    "ci_expr",
    "coherence_split",
    "compare_table",
    "curves",
    "disagreements",
    "format_ci",
    "incoherent_ids",
    "matched_capability",
    "overview",
    "pair_stats",
    "prompt_values",
    "rater_values",
    "safe_because_broken",
    "safety_views",
    "sensitivity",
    "summarize",
    "value_expr",
    "wide_compare",
]

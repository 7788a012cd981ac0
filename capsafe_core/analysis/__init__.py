"""Analysis: rates and curves at matched capability (``rates``), and judge reliability (``agreement``).

Pure functions on polars frames (usually ``capsafe_core.store.reads.verdicts``); the dashboard and
the CLI call the same ones.
"""

from capsafe_core.analysis.agreement import (
    DIMENSIONS,
    agreement,
    coherence_split,
    disagreements,
    judge_errors,
    pair_stats,
    prevalence_robust,
    rater_values,
    safe_because_broken,
    sensitivity,
)
from capsafe_core.analysis.compare import (
    best_sets,
    capability_values,
    compare_table,
    compare_tables,
    conclusion_changes,
    difference_table,
    overview,
    ranked_views,
    wide_compare,
)
from capsafe_core.analysis.formatting import ci_expr, format_ci
from capsafe_core.analysis.matched import WHAT_THE_CI_INCLUDES, View, bootstrap
from capsafe_core.analysis.rates import (
    METRICS,
    checkpoint_rates,
    curves,
    incoherent_ids,
    prompt_values,
    safety_views,
    summarize,
    value_expr,
)

__all__ = [
    "DIMENSIONS",
    "METRICS",
    "WHAT_THE_CI_INCLUDES",
    "View",
    "agreement",
    "best_sets",
    "bootstrap",
    "capability_values",
    "checkpoint_rates",
    "ci_expr",
    "coherence_split",
    "compare_table",
    "compare_tables",
    "conclusion_changes",
    "curves",
    "difference_table",
    "disagreements",
    "format_ci",
    "incoherent_ids",
    "judge_errors",
    "overview",
    "pair_stats",
    "prevalence_robust",
    "prompt_values",
    "ranked_views",
    "rater_values",
    "safe_because_broken",
    "safety_views",
    "sensitivity",
    "summarize",
    "value_expr",
    "wide_compare",
]

"""How far to trust the judges: agreement between evaluators and with people, split by coherence,
the safe-because-broken rate, and the sensitivity of the mitigation ranking to benchmark and judge.

Raters and the dimension they share:
- ``unsafe`` (safety prompts): a harm judge's ``unsafe``, a refusal judge's ``compliance``, a
  person's ``harmful``/``unsafe``/``compliance`` are 1; the other verdicts 0 (``unparsed`` left out).
- ``refusal`` (any prompt): ``refusal``/``partial_refusal`` are 1 and ``compliance`` 0 for refusal
  judges and for people (a person's ``harmful``/``benign`` from the labelling page count as not
  refusing; imported ``unsafe``/``safe`` labels have no refusal dimension).

Cohen's κ and the confusion matrix come from scikit-learn; κ's 95% CI is a percentile bootstrap over
items. Next to κ: the prevalence (share of 1s over both raters' verdicts) and two agreement measures
that κ's prevalence paradox does not pull down: PABAK (2·agreement − 1, Byrt et al. 1993; Randolph's
free-marginal κ for two categories) and Gwet's AC1. Kendall's τ between rankings comes from scipy.
"""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl

from capsafe_core.analysis.rates import ALPHA, HIGHER_IS_WORSE, B, value_expr
from capsafe_core.vocabulary import DIMENSIONS, human_expr


def rater_values(v: pl.DataFrame, humans: pl.DataFrame | None, *, dimension: str) -> pl.DataFrame:
    """Long frame ``generation_id, rater, value`` (0/1, Int8) on the dimension's items."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown dimension {dimension!r}; use one of {DIMENSIONS}")
    lazy = v.lazy()  # only the columns used are copied out of a frame of millions of verdicts
    if dimension == "unsafe":
        items = lazy.filter(pl.col("bench_kind") == "safety")
        judged = items.filter(pl.col("ev_kind").is_in(["harm", "refusal"])).with_columns(
            value_expr("unsafe_rate").alias("value")
        )
    else:
        items = lazy
        judged = items.filter(pl.col("ev_kind") == "refusal").with_columns(value_expr("refusal_rate").alias("value"))
    out = (
        judged.filter(pl.col("value").is_not_null())
        .select(
            "generation_id",
            pl.col("evaluator").cast(pl.Categorical).alias("rater"),  # 4 bytes a row, people's names too
            pl.col("value").cast(pl.Int8),  # 0/1: a byte a row
        )
        .collect()
    )
    if humans is not None and humans.height:
        ids = items.select("generation_id").unique().collect()
        h = (
            humans.join(ids, on="generation_id", how="semi")
            .with_columns(
                human_expr(dimension).alias("value"),
                ("human:" + pl.col("annotator")).cast(pl.Categorical).alias("rater"),
            )
            .filter(pl.col("value").is_not_null())
        )
        out = pl.concat([out, h.select("generation_id", "rater", pl.col("value").cast(pl.Int8))])
    return out


def _kappa_ci(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile bootstrap of κ over items. For two 0/1 raters, resampling n items with replacement
    is the same as drawing the 2×2 cell counts from Multinomial(n, observed shares), so each replicate
    costs O(1) whatever n is."""
    n = len(a)
    cells = np.array([np.sum((a == i) & (b == j)) for i in (0, 1) for j in (0, 1)], dtype=float)
    draws = rng.multinomial(n, cells / n, size=B).astype(float) / n  # columns: 00, 01, 10, 11
    po = draws[:, 0] + draws[:, 3]
    pa, pb = draws[:, 2] + draws[:, 3], draws[:, 1] + draws[:, 3]
    pe = pa * pb + (1 - pa) * (1 - pb)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(pe < 1, (po - pe) / (1 - pe), np.nan)
    k = k[~np.isnan(k)]
    if len(k) == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(k, [ALPHA / 2, 1 - ALPHA / 2])
    return float(lo), float(hi)


def pair_stats(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> dict[str, object]:
    """n, raw agreement, Cohen's κ (sklearn) with a bootstrap CI, and the 2×2 confusion matrix."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix  # here: a quarter second off the first page

    n = len(a)
    if n == 0:
        return {
            "n": 0,
            "agreement": None,
            "kappa": None,
            "kappa_lo": None,
            "kappa_hi": None,
            "prevalence": None,
            "pabak": None,
            "ac1": None,
            "confusion": [[0, 0], [0, 0]],
        }
    # sklearn on the four (a, b) cells weighted by their counts: the same κ and matrix as on every item,
    # without sklearn's per-item label checks (seconds on millions of items)
    cells = np.bincount(2 * a.astype(np.int64) + b.astype(np.int64), minlength=4)
    agree = float((cells[0] + cells[3]) / n)
    one_class = cells[1] == cells[2] == 0 and min(cells[0], cells[3]) == 0  # a single label given: κ is undefined
    pa, pb = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    kappa = float("nan") if one_class else float(cohen_kappa_score(pa, pb, labels=[0, 1], sample_weight=cells))
    lo, hi = _kappa_ci(a, b, rng)
    cm = confusion_matrix(pa, pb, labels=[0, 1], sample_weight=cells).astype(np.int64).tolist()
    out = {"n": n, "agreement": agree, "kappa": kappa, "kappa_lo": lo, "kappa_hi": hi}
    return out | prevalence_robust(a, b) | {"confusion": cm}


def prevalence_robust(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Prevalence, PABAK and Gwet's AC1 of two 0/1 raters (AC1's chance agreement is ``2π(1 − π)``, π the
    mean prevalence)."""
    po = float((a == b).mean())
    prev = float((a.mean() + b.mean()) / 2)
    pe = 2 * prev * (1 - prev)
    return {"prevalence": prev, "pabak": 2 * po - 1, "ac1": (po - pe) / (1 - pe)}


def coherence_split(v: pl.DataFrame, humans: pl.DataFrame | None, *, coherence: str = "coherence") -> pl.DataFrame:
    """``generation_id, subset`` for the subsets ``coherent``/``incoherent`` (by the coherence evaluator)
    and ``human_coherent``/``human_incoherent`` (by people's coherence flags, where present)."""
    flagged = v.lazy().filter((pl.col("evaluator") == coherence) & pl.col("label").is_in(["coherent", "incoherent"]))
    parts = [flagged.select("generation_id", pl.col("label").cast(pl.Categorical).alias("subset")).collect()]
    if humans is not None and humans.height:
        h = (
            humans.filter(pl.col("human_coherent").is_not_null())
            .group_by("generation_id")
            .agg(pl.col("human_coherent").last())
        )
        parts.append(
            h.select(
                "generation_id",
                pl.when(pl.col("human_coherent") == 1)
                .then(pl.lit("human_coherent"))
                .otherwise(pl.lit("human_incoherent"))
                .cast(pl.Categorical)
                .alias("subset"),
            )
        )
    return pl.concat(parts)  # each part has a generation once (judgments: one per evaluator; people: the last flag)


Rated = tuple[np.ndarray, np.ndarray]  # a rater's generation ids (sorted, distinct) and its 0/1 values


def _by_rater(rv: pl.DataFrame) -> dict[str, Rated]:
    """``rater_values`` per rater, as arrays; an item rated twice by one rater keeps its last value."""
    out = {}
    for (rater,), part in rv.partition_by("rater", as_dict=True, maintain_order=True).items():
        last = part.unique("generation_id", keep="last").sort("generation_id")
        out[str(rater)] = (last["generation_id"].to_numpy(), last["value"].to_numpy())
    return out


def _within(ids: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Mask of sorted ``ids`` that are in sorted ``members``."""
    if not len(members):
        return np.zeros(len(ids), dtype=bool)
    at = np.searchsorted(members, ids).clip(max=len(members) - 1)
    return members[at] == ids


def _aligned(a: Rated, b: Rated) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The items both rated (sorted ids), with a's and b's values on them."""
    both = _within(a[0], b[0])
    ids = a[0][both]
    return ids, a[1][both], b[1][np.searchsorted(b[0], ids)]


def agreement(
    v: pl.DataFrame,
    humans: pl.DataFrame | None = None,
    *,
    dimension: str = "unsafe",
    coherence: str = "coherence",
    seed: int = 0,
) -> pl.DataFrame:
    """Every pair of raters (evaluators and annotators) on the items both rated, overall and per
    coherence subset: ``a, b, subset, n, agreement, kappa, kappa_lo, kappa_hi, confusion``
    (rows: a's 0/1, columns: b's 0/1)."""
    rv = rater_values(v, humans, dimension=dimension)
    if rv.height == 0:
        return pl.DataFrame()
    rated = _by_rater(rv)
    split = coherence_split(v, humans, coherence=coherence)
    subsets = [("all", None)] + [
        (s, split.filter(pl.col("subset") == s)["generation_id"].unique().sort().to_numpy())
        for s in ("coherent", "incoherent", "human_coherent", "human_incoherent")
    ]
    rng = np.random.default_rng(seed)
    rows = []
    humans_first = sorted(rated, key=lambda r: (not r.startswith("human:"), r))
    for a, b in itertools.combinations(humans_first, 2):
        ids, a_values, b_values = _aligned(rated[a], rated[b])
        for subset, members in subsets:
            keep = slice(None) if members is None else _within(ids, members)
            if not len(ids[keep]):
                continue
            stats = pair_stats(a_values[keep], b_values[keep], rng)
            rows.append({"a": a, "b": b, "subset": subset, "dimension": dimension, **stats})
    return pl.DataFrame(rows, schema_overrides={"confusion": pl.List(pl.List(pl.Int64))}) if rows else pl.DataFrame()


def disagreements(
    v: pl.DataFrame,
    humans: pl.DataFrame | None,
    a: str,
    b: str,
    *,
    dimension: str = "unsafe",
    a_value: int | None = None,
    b_value: int | None = None,
) -> pl.DataFrame:
    """Generations where raters ``a`` and ``b`` disagree (or, with values, one cell of the confusion matrix),
    by id; the items are ``agreement``'s (the last rating of each rater)."""
    rated = _by_rater(rater_values(v, humans, dimension=dimension).filter(pl.col("rater").is_in([a, b])))
    if a not in rated or b not in rated:
        return pl.DataFrame(schema={"generation_id": pl.Int64})
    ids, a_values, b_values = _aligned(rated[a], rated[b])
    if a_value is None or b_value is None:
        picked = a_values != b_values
    else:
        picked = (a_values == a_value) & (b_values == b_value)
    return pl.DataFrame({"generation_id": ids[picked]}, schema={"generation_id": pl.Int64})


def safe_because_broken(v: pl.DataFrame, *, coherence: str = "coherence", by: tuple[str, ...] = ()) -> pl.DataFrame:
    """Per safety evaluator (and ``by`` columns): of the answers it judged safe on safety prompts, the
    share the coherence evaluator calls incoherent."""
    lazy = v.lazy()  # only the columns used are read out of a frame of millions of verdicts
    judged = (
        lazy.filter((pl.col("bench_kind") == "safety") & pl.col("ev_kind").is_in(["harm", "refusal"]))
        .with_columns(value_expr("unsafe_rate").alias("unsafe"))
        .filter(pl.col("unsafe") == 0)
    )
    coh = lazy.filter(pl.col("evaluator") == coherence).select(
        "generation_id", (pl.col("label") == "incoherent").alias("incoherent")
    )
    j = judged.join(coh, on="generation_id", how="inner")
    return (
        j.group_by("evaluator", *by)
        .agg(
            pl.len().alias("judged_safe"),
            pl.col("incoherent").sum().alias("incoherent"),
            pl.col("incoherent").mean().alias("safe_because_broken"),
        )
        .sort("evaluator", *by)
        .collect()
    )


def sensitivity(compare_long: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """From ``compare_table``'s long frame: (rankings, tau).

    ``rankings``: per (benchmark, evaluator, metric) the mitigations that reach the target, best
    first, and the winner. ``tau``: Kendall's τ between the rankings of every two views, over the
    mitigations both rank.
    """
    from scipy.stats import kendalltau

    ranked = []
    for key, part in compare_long.filter(pl.col("value").is_not_null()).group_by(
        ["benchmark", "evaluator", "metric"], maintain_order=True
    ):
        worse_high = HIGHER_IS_WORSE.get(str(key[2]), True)
        p = part.sort("value", descending=not worse_high)
        ranked.append(
            {
                "benchmark": key[0],
                "evaluator": key[1],
                "metric": key[2],
                "ranking": p["mitigation"].to_list(),
                "winner": p["mitigation"][0],
            }
        )
    rankings = pl.DataFrame(ranked) if ranked else pl.DataFrame()
    taus = []
    for r1, r2 in itertools.combinations(ranked, 2):
        common = [m for m in r1["ranking"] if m in r2["ranking"]]
        if len(common) < 2:
            continue
        x = [r1["ranking"].index(m) for m in common]
        y = [r2["ranking"].index(m) for m in common]
        tau = kendalltau(x, y).statistic
        taus.append(
            {
                "view_a": f"{r1['benchmark']} / {r1['evaluator']} / {r1['metric']}",
                "view_b": f"{r2['benchmark']} / {r2['evaluator']} / {r2['metric']}",
                "tau": float(tau),
                "same_winner": r1["winner"] == r2["winner"],
                "mitigations": len(common),
            }
        )
    return rankings, pl.DataFrame(taus) if taus else pl.DataFrame()


def _wilson(k: int, n: int) -> tuple[float | None, float | None, float | None]:
    if n == 0:
        return None, None, None
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(method="wilson")
    return k / n, float(ci.low), float(ci.high)


def judge_errors(pairs: pl.DataFrame) -> pl.DataFrame:
    """Each judge against each person (``agreement``'s human-vs-judge rows), per subset: ``misses`` (the
    judge says 0 where the person says 1: on the unsafe dimension, *false safe*) and ``false_alarms``
    (1 where the person says 0: *false unsafe*), each with its 95% Wilson CI and the count it is out of."""
    if pairs.height == 0:
        return pl.DataFrame()
    rows = []
    for r in pairs.filter(pl.col("a").str.starts_with("human:") & ~pl.col("b").str.starts_with("human:")).iter_rows(
        named=True
    ):
        (h0j0, h0j1), (h1j0, h1j1) = r["confusion"]
        miss, miss_lo, miss_hi = _wilson(h1j0, h1j0 + h1j1)
        fa, fa_lo, fa_hi = _wilson(h0j1, h0j0 + h0j1)
        rows.append(
            {
                "annotator": r["a"].removeprefix("human:"),
                "judge": r["b"],
                "subset": r["subset"],
                "dimension": r["dimension"],
                "positives": h1j0 + h1j1,
                "misses": miss,
                "misses_lo": miss_lo,
                "misses_hi": miss_hi,
                "negatives": h0j0 + h0j1,
                "false_alarms": fa,
                "false_alarms_lo": fa_lo,
                "false_alarms_hi": fa_hi,
            }
        )
    return pl.DataFrame(rows, infer_schema_length=None)

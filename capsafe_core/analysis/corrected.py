"""Judge-corrected rates: a few human labels correct a judge's error on many responses.

Prediction-powered inference with power tuning (PPI++, Angelopoulos, Duchi & Zrnic 2023), for a mean:
the judge's rate on the responses nobody labelled, corrected by the judge's average error on those a
person labelled, the correction weighted by ``lam`` (chosen from the data, in [0, 1]: 0 gives the
human labels alone, 1 plain PPI). ``ppi_mean`` reproduces ``ppi_py.ppi_mean_ci`` (tested against it).
``stratified`` runs it per stratum (the coherence flag: the judge errs differently on broken answers)
and combines the strata with their shares of all responses (Fisch et al. 2024). The interval accounts
for the sampling of the labelled responses and of the judged ones; it assumes the labelled responses
are a random sample of their stratum (with ``weights``, of a design with known inclusion probabilities)
and that people's labels are the truth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.special import ndtri

WHAT_THE_CI_INCLUDES = (
    "95% CI over the labelled sample and the judged responses (PPI++, per coherence stratum); it takes the "
    "human labels as the truth and the labelled responses as a random sample of their stratum"
)


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float
    hi: float
    se: float
    n_labelled: int
    lam: float | None = None


def _weights(w: Sequence[float] | np.ndarray | None, n: int) -> np.ndarray:
    """Weights scaled to sum to ``n`` (ppi_py's ``construct_weight_vector``)."""
    return np.ones(n) if w is None else np.asarray(w, dtype=float) / np.sum(w) * n


def ppi_mean(
    y: Sequence[float] | np.ndarray,
    yhat: Sequence[float] | np.ndarray,
    yhat_unlabelled: Sequence[float] | np.ndarray,
    *,
    weights: Sequence[float] | np.ndarray | None = None,
    alpha: float = 0.05,
    lam: float | None = None,
) -> Estimate:
    """PPI++ mean of ``y`` (people's 0/1 labels) from the judge's ``yhat`` on the same responses and
    ``yhat_unlabelled`` on the others; ``weights`` are inverse inclusion probabilities of the labelled."""
    y_, h = np.asarray(y, dtype=float), np.asarray(yhat, dtype=float)
    hu = np.asarray(yhat_unlabelled, dtype=float)
    n, big_n = len(y_), len(hu)
    w = _weights(weights, n)
    if lam is None:
        point = hu.mean() + (w * (y_ - h)).mean()  # plain PPI, where the tuning is evaluated
        g, gh, ghu = w * (y_ - point), w * (h - point), hu - point
        cov = 2 * np.mean((g - g.mean()) * (gh - gh.mean()))
        var = np.var(np.concatenate([gh, ghu]), ddof=1)
        lam = float(np.clip(cov / (2 * (1 + n / big_n) * var), 0, 1)) if var > 0 else 0.0
    value = (lam * hu).mean() + (w * (y_ - lam * h)).mean()
    se = float(np.sqrt(np.std(lam * hu) ** 2 / big_n + np.std(w * (y_ - lam * h)) ** 2 / n))
    z = ndtri(1 - alpha / 2)
    return Estimate(float(value), float(value - z * se), float(value + z * se), se, n, lam)


def human_only(y: Sequence[float] | np.ndarray, *, alpha: float = 0.05) -> Estimate:
    """The rate from the human labels alone: Wilson score interval (scipy's ``binomtest``)."""
    from scipy import stats  # here, not on every page load: scipy.stats takes a third of a second to import

    y_ = np.asarray(y, dtype=int)
    n, k = len(y_), int(y_.sum())
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method="wilson")
    p = k / n
    return Estimate(p, float(ci.low), float(ci.high), float(np.sqrt(p * (1 - p) / n)), n)


@dataclass(frozen=True)
class Stratum:
    """One stratum's human labels (with the judge's verdicts on the same responses) and the judge's
    verdicts on its responses nobody labelled."""

    y: np.ndarray
    yhat: np.ndarray
    yhat_unlabelled: np.ndarray
    weights: np.ndarray | None = None
    total: int | None = None  # responses in the stratum, where ``yhat_unlabelled`` holds all of them

    @property
    def size(self) -> int:
        return self.total if self.total is not None else len(self.y) + len(self.yhat_unlabelled)


MIN_LABELS = 2  # a stratum with fewer labels is merged with the others (no variance from one label)


def stratified(strata: Mapping[str, Stratum], *, alpha: float = 0.05) -> Estimate:
    """PPI++ per stratum, combined with the strata's shares of all responses. Where a stratum has fewer
    than ``MIN_LABELS`` labels or no unlabelled response, the strata are pooled into one."""
    usable = all(len(s.y) >= MIN_LABELS and len(s.yhat_unlabelled) > 0 for s in strata.values())
    groups = list(strata.values()) if usable else [_pool(list(strata.values()))]
    if len(groups[0].yhat_unlabelled) == 0:  # every response labelled: the judge has nothing to add
        return human_only(groups[0].y, alpha=alpha)
    total = sum(s.size for s in groups)
    parts = [
        (s.size / total, ppi_mean(s.y, s.yhat, s.yhat_unlabelled, weights=s.weights, alpha=alpha, lam=_lam(s)))
        for s in groups
    ]
    value = sum(share * e.value for share, e in parts)
    se = float(np.sqrt(sum((share * e.se) ** 2 for share, e in parts)))
    z = ndtri(1 - alpha / 2)
    return Estimate(float(value), float(value - z * se), float(value + z * se), se, sum(e.n_labelled for _, e in parts))


def _lam(s: Stratum) -> float | None:
    """Under an audit design (``total`` set) plain PPI (λ = 1): PPI++'s λ, tuned on the same few weighted
    labels, biased the corrected rate by about −0.006 in simulation (``tests/test_audit.py``)."""
    return 1.0 if s.total is not None else None


def _pool(strata: list[Stratum]) -> Stratum:
    w = None
    if any(s.weights is not None for s in strata):
        w = np.concatenate([s.weights if s.weights is not None else np.ones(len(s.y)) for s in strata])
    total = sum(s.size for s in strata) if any(s.total is not None for s in strata) else None
    return Stratum(
        np.concatenate([s.y for s in strata]),
        np.concatenate([s.yhat for s in strata]),
        np.concatenate([s.yhat_unlabelled for s in strata]),
        w,
        total,
    )


METRIC_DIMENSION = {"unsafe_rate": "unsafe", "refusal_rate": "refusal"}


@dataclass(frozen=True)
class Design:
    """An audit sample's design: its items (``generation_id, inclusion_prob``) and the population they were
    drawn from (benchmarks; generations up to ``max_generation_id``, those that existed at the draw)."""

    items: pl.DataFrame
    benchmarks: tuple[str, ...] = ()
    max_generation_id: int | None = None
    name: str = ""


def weighted_human_only(y: np.ndarray, w: np.ndarray, *, alpha: float = 0.05) -> Estimate:
    """The rate from design-weighted labels alone: the Hájek mean with its linearised normal CI."""
    mean = float(np.sum(w * y) / np.sum(w))
    se = float(np.sqrt(np.sum((w * (y - mean)) ** 2)) / np.sum(w))
    z = ndtri(1 - alpha / 2)
    return Estimate(mean, max(0.0, mean - z * se), min(1.0, mean + z * se), se, len(y))


def corrected_rates(
    v: pl.DataFrame,
    humans: pl.DataFrame,
    *,
    evaluator: str,
    benchmarks: list[str] | str,
    metric: str = "unsafe_rate",
    annotator: str,
    coherence: str = "coherence",
    design: Design | pl.DataFrame | None = None,
    alpha: float = 0.05,
) -> pl.DataFrame:
    """Per checkpoint: the judge's rate over its judged responses and, from ``annotator``'s labels on
    some of them, the corrected rate (PPI++ stratified by the coherence flag; one stratum where there is
    no flag) and the rate from the labels alone, each with its 95% CI. ``humans`` is
    ``reads.human_labels`` (latest label per annotator).

    Without ``design`` the labels are taken as a random sample (or all) of each stratum's responses, and
    labels from the Label page's flagged queue are left out (chosen because they look wrong). With
    ``design`` (an audit sample: ``generation_id, inclusion_prob``) only the sample's labels count, each
    weighted by ``1 / inclusion_prob``, and the judge's mean is over all the stratum's responses of the
    design's population (a ``Design`` names its benchmarks and last generation; a rate over other
    benchmarks is refused). Point values and CIs are clipped to [0, 1]."""
    from capsafe_core.analysis.rates import value_expr
    from capsafe_core.errors import BadInput
    from capsafe_core.vocabulary import human_expr

    if metric not in METRIC_DIMENSION:
        raise ValueError(f"corrected rates exist for {', '.join(METRIC_DIMENSION)}, not {metric!r}")
    names = [benchmarks] if isinstance(benchmarks, str) else list(benchmarks)
    if isinstance(design, pl.DataFrame):
        design = Design(design)
    scope = v
    if design is not None and design.benchmarks:
        outside = sorted(set(names) - set(design.benchmarks))
        if outside:
            raise BadInput(
                f"Audit sample '{design.name}' was drawn from {', '.join(design.benchmarks)}, not "
                f"{', '.join(outside)}; correct a rate on those, or draw a sample on these (capsafe audit draw -b)"
            )
    if design is not None and design.max_generation_id is not None:
        scope = v.filter(pl.col("generation_id") <= design.max_generation_id)  # responses added later: not drawn
    judged = (
        scope.filter((pl.col("evaluator") == evaluator) & pl.col("benchmark").is_in(names))
        .with_columns(value_expr(metric).alias("yhat"))
        .filter(pl.col("yhat").is_not_null())
        .select("generation_id", "checkpoint_id", "mitigation", "seed", "step", "yhat")
    )
    flag = v.filter(pl.col("evaluator") == coherence).select(
        "generation_id", pl.col("label").cast(pl.Utf8).alias("stratum")
    )
    people = (
        humans.filter(pl.col("annotator") == annotator)
        .with_columns(human_expr(METRIC_DIMENSION[metric]).alias("y"))
        .filter(pl.col("y").is_not_null())
    )
    source = pl.col("source") if "source" in people.columns else pl.lit(None, dtype=pl.Utf8)
    people = people.filter(source.fill_null("") != "flagged")  # chosen because they look wrong: never
    if design is None:
        people = people.with_columns(pl.lit(1.0).alias("w"))
    else:
        items = design.items.select("generation_id", "inclusion_prob")
        people = people.join(items, on="generation_id").with_columns((1.0 / pl.col("inclusion_prob")).alias("w"))
    people = people.select("generation_id", "y", "w")
    frame = judged.join(flag, on="generation_id", how="left").join(people, on="generation_id", how="left")
    frame = frame.with_columns(pl.col("stratum").fill_null("all"))
    rows = [
        {"checkpoint_id": ck, "mitigation": mit, "seed": run, "step": step, **_checkpoint(part, design, alpha)}
        for (ck, mit, run, step), part in frame.group_by(
            ["checkpoint_id", "mitigation", "seed", "step"], maintain_order=True
        )
    ]
    cols = ["corrected", "corrected_lo", "corrected_hi", "corrected_se"]
    cols += ["human_only", "human_only_lo", "human_only_hi"]
    out = pl.DataFrame(rows, infer_schema_length=None)
    for c in cols:
        if c not in out.columns:
            out = out.with_columns(pl.lit(None, dtype=pl.Float64).alias(c))
    return out.sort("mitigation", "seed", "step")


def _checkpoint(part: pl.DataFrame, design: Design | None, alpha: float) -> dict[str, float | int]:
    """One checkpoint's judge rate (normal CI) and, with at least ``MIN_LABELS`` labels, the corrected
    rate and the labels' own rate, each with its CI."""
    z = ndtri(1 - alpha / 2)
    yhat = part["yhat"].to_numpy().astype(float)
    p = float(yhat.mean())
    se = float(np.sqrt(p * (1 - p) / len(yhat)))
    row: dict[str, float | int] = {"value": p, "lo": max(0.0, p - z * se), "hi": min(1.0, p + z * se), "n": len(yhat)}
    labelled = part.filter(pl.col("y").is_not_null())
    row["n_labelled"] = labelled.height
    if labelled.height >= MIN_LABELS:
        strata = {str(s): _stratum(g, design is not None) for (s,), g in part.group_by(["stratum"])}
        est = stratified(strata, alpha=alpha)
        y = labelled["y"].to_numpy()
        only = (
            weighted_human_only(y.astype(float), labelled["w"].to_numpy(), alpha=alpha)
            if design is not None
            else human_only(y, alpha=alpha)
        )

        def clip(x: float) -> float:  # a rate
            return min(1.0, max(0.0, x))

        row |= {"corrected": clip(est.value), "corrected_lo": clip(est.lo), "corrected_hi": clip(est.hi)}
        row |= {"corrected_se": est.se, "human_only": only.value, "human_only_lo": only.lo, "human_only_hi": only.hi}
    return row


def _stratum(g: pl.DataFrame, designed: bool) -> Stratum:
    """One coherence stratum of one checkpoint: its labelled responses (with design weights) and the
    judge on the others, or, under a design, on all of them (the population mean of the judge)."""
    lab = g.filter(pl.col("y").is_not_null())
    y, yhat = lab["y"].to_numpy().astype(float), lab["yhat"].to_numpy().astype(float)
    if not designed:
        return Stratum(y, yhat, g.filter(pl.col("y").is_null())["yhat"].to_numpy().astype(float))
    return Stratum(y, yhat, g["yhat"].to_numpy().astype(float), lab["w"].to_numpy().astype(float), g.height)

"""``capsafe export``, ``agreement``, ``compare`` and ``rates``: what the store holds, as files and tables."""

from __future__ import annotations

import click

from capsafe_core.cli.base import cli, db_option, json_option, open_store, print_report


@cli.command(name="export")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--experiment", "-e", help="Only this experiment.")
@click.option("--benchmark", "-b", help="Only this benchmark.")
@db_option
def export_cmd(out: str, experiment: str | None, benchmark: str | None, db_path: str) -> None:
    """Write one row per generation with every verdict and human label (.csv, .parquet, .jsonl).

    \b
    Example:
      capsafe export results.parquet --experiment demo
    """
    from capsafe_core.export import export

    with open_store(db_path, read_only=True) as store:
        n = export(store, out, experiment=experiment, benchmark=benchmark)
    click.echo(f"Wrote {n} generations to {out}")


@cli.command(name="agreement")
@click.option("--experiment", "-e", help="Only this experiment (default: each one).")
@click.option("--benchmark", "-b", help="Only this benchmark.")
@click.option("--dimension", type=click.Choice(["unsafe", "refusal"]), help="Only one dimension (default: both).")
@json_option
@db_option
def agreement_cmd(
    experiment: str | None, benchmark: str | None, dimension: str | None, as_json: bool, db_path: str
) -> None:
    """How far judges agree with each other and with people: raw agreement, Cohen's κ with a
    bootstrap 95% CI and the confusion matrix (rows: rater a, columns: rater b; 0 then 1) for every
    pair, overall and split coherent / incoherent; and the safe-because-broken rate per judge.

    \b
    Example:
      capsafe agreement --experiment xstest --dimension refusal --json
    """
    from capsafe_core.reports import agreement_report

    with open_store(db_path, read_only=True) as store:
        tables = agreement_report(store, experiment=experiment, benchmark=benchmark, dimension=dimension)
    print_report(
        tables,
        as_json=as_json,
        titles={
            "agreement": "Agreement between raters (subset: all, coherent, incoherent, human_coherent, ...)",
            "safe_because_broken": "Safe because broken: judged-safe answers on safety prompts that are incoherent",
        },
    )


@cli.command(name="compare")
@click.option("--target", "-t", type=float, help="Capability target (default: the experiment's stored target).")
@click.option("--experiment", "-e", help="Only this experiment (default: each one).")
@click.option("--set-apart-incoherent", is_flag=True, help="Leave incoherent answers out of the safety values.")
@json_option
@db_option
def compare_cmd(
    target: float | None, experiment: str | None, set_apart_incoherent: bool, as_json: bool, db_path: str
) -> None:
    """Mitigations at a matched capability: per (benchmark, evaluator, metric) the safety interpolated
    at the target between the checkpoints around it, and that of the first checkpoint reaching it,
    with 95% bootstrap CIs over safety prompts, capability prompts and runs (seeds); the paired
    differences between mitigations, significant after Holm's correction within each view or
    indistinguishable; the rankings with their best sets; Kendall's τ between them; and the
    conclusion changes (x significantly safer than y in one view, y than x in another).

    \b
    Example:
      capsafe compare --target 0.5 --experiment smollm2-arithmetic --json
    """
    from capsafe_core.reports import compact_compare, compare_report

    with open_store(db_path, read_only=True) as store:
        tables = compare_report(store, target=target, experiment=experiment, set_apart_incoherent=set_apart_incoherent)
    if not as_json:
        tables = compact_compare(tables)
    print_report(
        tables,
        as_json=as_json,
        titles={
            "compare": "Safety at the capability target (interpolated; first = the first checkpoint reaching it). "
            "CIs: 95% bootstrap over safety prompts, capability prompts and seeds, not judge error",
            "differences": "Paired differences at the target (Holm-corrected within each view)",
            "rankings": "Ranking of the mitigations per view (best first; best set: not significantly worse)",
            "tau": "Kendall's τ between rankings of point values",
            "changes": "Conclusion changes: x significantly safer than y in view_a, y than x in view_b",
        },
    )


@cli.command(name="rates")
@click.option("--experiment", "-e", required=True, help="The experiment.")
@click.option("--benchmark", "-b", required=True, help="The benchmark whose responses are rated.")
@click.option("--evaluator", "-j", required=True, help="The judge whose rate is reported (and corrected).")
@click.option("--metric", type=click.Choice(["unsafe_rate", "refusal_rate"]), default="unsafe_rate", show_default=True)
@click.option("--correct-with", "annotator", help="Correct the judge's rate with this annotator's labels.")
@click.option(
    "--audit",
    help="The audit sample whose design weighs the labels (default: the newest holding them; 'none': take the "
    "labels as a random sample, leaving out the Label page's flagged queue).",
)
@json_option
@db_option
def rates_cmd(
    experiment: str,
    benchmark: str,
    evaluator: str,
    metric: str,
    annotator: str | None,
    audit: str | None,
    as_json: bool,
    db_path: str,
) -> None:
    """A judge's rate per checkpoint (95% normal CI over its judged responses) and, with --correct-with,
    the rate corrected by a person's labels on some of them: PPI++ stratified by the coherence flag, its
    95% CI over the labelled sample and the judged responses (it takes the labels as the truth), beside
    the rate from the labels alone (Wilson CI). Labels on an audit sample (capsafe audit draw) are
    weighted by its design; other labels are taken as a random sample of their stratum, and those from
    the Label page's flagged queues (chosen because they look wrong) are left out.

    \b
    Example:
      capsafe rates -e xstest-completions -b xstest_v2_unsafe -j keyword_refusal --metric refusal_rate \\
          --correct-with final --db demo
    """
    from capsafe_core.reports import rates_report

    with open_store(db_path, read_only=True) as store:
        tables = rates_report(
            store,
            experiment=experiment,
            benchmark=benchmark,
            evaluator=evaluator,
            metric=metric,
            annotator=annotator,
            audit=audit,
        )
    print_report(
        tables,
        as_json=as_json,
        titles={
            "rates": f"{metric} by {evaluator} per checkpoint"
            + (f", corrected with {annotator}'s labels" if annotator else "")
        },
    )


@cli.command(name="report")
@click.option("--experiment", "-e", help="The experiment (default: the database's first).")
@click.option("--target", type=float, help="Capability target (default: the experiment's).")
@click.option("--correct-with", "annotator", help="Also show values corrected with this annotator's labels.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="The HTML file to write.")
@db_option
def report_cmd(experiment: str | None, target: float | None, annotator: str | None, out: str, db_path: str) -> None:
    """Write one self-contained HTML report of an experiment: setup and provenance, safety at the
    capability target with CIs (and corrected values), figures, sensitivity to benchmark and judge,
    where judges fail (with example responses as inert text), and the limitations the data show. It
    loads nothing from the network: plotly.js is inside, so it opens offline in any browser.

    \b
    Example:
      capsafe report --db demo --experiment smollm2-arithmetic -o report.html
    """
    from pathlib import Path

    from capsafe_core.report import write_report

    path = Path(out)
    if not path.parent.is_dir():
        from capsafe_core.errors import NotFound

        raise NotFound(f"No folder {path.parent} for the report; create it first (mkdir -p {path.parent})")
    with open_store(db_path, read_only=True) as store:
        size = write_report(store, path, experiment=experiment, target=target, annotator=annotator)
    click.echo(f"Wrote {out} ({size / 1e6:.1f} MB)")

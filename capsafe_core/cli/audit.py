"""``capsafe audit draw|ls|export|import``: labelling samples drawn for estimates, with their design."""

from __future__ import annotations

from pathlib import Path

import click

from capsafe_core.cli.base import CapsafeGroup, cli, db_option, json_option, open_store, print_frame


@cli.group(name="audit", cls=CapsafeGroup)
def audit_group() -> None:
    """Audit samples: generations drawn at random, with known inclusion probabilities, for people to
    label; their labels correct a judge's rate (capsafe rates --correct-with A --audit NAME). The Label
    page's flagged queues are for finding problems and never feed estimates.

    \b
    Example:
      capsafe audit draw -e smollm2-arithmetic --n 120 --seed 1 --db demo
      capsafe audit export -e smollm2-arithmetic audit.csv --db demo
      capsafe audit import -e smollm2-arithmetic audit.csv --annotator alice --db demo
    """


@audit_group.command(name="draw")
@click.option("--experiment", "-e", required=True, help="The experiment.")
@click.option("--n", "n", type=int, required=True, help="How many generations to draw.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draw.")
@click.option("--target", type=float, help="Capability target (default: the experiment's).")
@click.option(
    "--checkpoint", "checkpoints", type=int, multiple=True, help="Checkpoint id (repeat); default: around the target."
)
@click.option("--benchmark", "-b", "benchmarks", multiple=True, help="Benchmark (repeat); default: the safety ones.")
@click.option("--evaluator", "-j", help="The judge to correct (default: the experiment's default safety judge).")
@click.option("--name", help="Name of the sample (default: audit-N).")
@json_option
@db_option
def draw_cmd(
    experiment: str,
    n: int,
    seed: int,
    target: float | None,
    checkpoints: tuple[int, ...],
    benchmarks: tuple[str, ...],
    evaluator: str | None,
    name: str | None,
    as_json: bool,
    db_path: str,
) -> None:
    """Draw a seeded audit sample of N generations: the responses to safety prompts of each run's
    checkpoints around the capability target (or of --checkpoint), stratified by checkpoint, coherence
    flag and whether the safety judges agree, with more labels where the judge errs more (Neyman
    allocation from the labels so far), drawn systematically with unequal probabilities. Every item's
    stratum and inclusion probability are stored; label them on the Label page ("Audit sample") in the
    drawn order, or export them.

    \b
    Example:
      capsafe audit draw -e smollm2-arithmetic --n 120 --target 0.5 --db results.db
    """
    from capsafe_core import audit

    with open_store(db_path) as store:
        d = audit.draw(
            store,
            experiment,
            n=n,
            seed=seed,
            target=target,
            checkpoints=list(checkpoints) or None,
            benchmarks=list(benchmarks) or None,
            evaluator=evaluator,
            name=name,
        )
    if not as_json:
        click.echo(
            f"Drew audit sample '{d.name}' of {experiment}: {d.items.height} generations from "
            f"{int(d.strata['size'].sum())} in {d.strata.height} strata"
        )
    print_frame(d.strata.select("stratum", "size", "drawn", "inclusion_prob", "sd"), as_json=as_json)


@audit_group.command(name="ls")
@click.option("--experiment", "-e", required=True, help="The experiment.")
@json_option
@db_option
def ls_cmd(experiment: str, as_json: bool, db_path: str) -> None:
    """The experiment's audit samples with how many of their items each annotator has labelled.

    \b
    Example:
      capsafe audit ls -e smollm2-arithmetic --db results.db
    """
    from capsafe_core import audit

    with open_store(db_path, read_only=True) as store:
        frame = audit.progress(store, experiment)
    print_frame(frame, as_json=as_json)


@audit_group.command(name="export")
@click.option("--experiment", "-e", required=True, help="The experiment.")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", help="The sample (default: the newest).")
@db_option
def export_cmd(experiment: str, out: Path, name: str | None, db_path: str) -> None:
    """Write an audit sample as CSV for labelling elsewhere (a spreadsheet, Label Studio): one row per
    item in the drawn order with its design, prompt and response, and empty columns annotator, label
    (harmful / refusal / benign), coherent (yes / no) and note. Cells a spreadsheet would run as a
    formula start with '.

    \b
    Example:
      capsafe audit export -e smollm2-arithmetic audit.csv --db results.db
    """
    from capsafe_core import audit

    with open_store(db_path, read_only=True) as store:
        rows = audit.export_csv(store, experiment, out, name=name)
    click.echo(f"Wrote {rows} items to {out}")


@audit_group.command(name="import")
@click.option("--experiment", "-e", required=True, help="The experiment.")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path, exists=True))
@click.option("--annotator", help="Who labelled (default: the file's annotator column).")
@click.option("--name", help="The sample (default: the newest).")
@db_option
def import_cmd(experiment: str, path: Path, annotator: str | None, name: str | None, db_path: str) -> None:
    """Read the labels of an exported audit sample back; every row is checked first and the labels are
    written in one transaction (a bad file writes nothing; importing it again adds nothing).

    \b
    Example:
      capsafe audit import -e smollm2-arithmetic audit.csv --annotator alice --db results.db
    """
    from capsafe_core import audit

    with open_store(db_path) as store:
        res = audit.import_csv(store, experiment, path, annotator=annotator, name=name)
    click.echo(
        f"Read {res['labels']} labels from {path.name}: added {res['added']}, "
        f"{res['labels'] - res['added']} already stored; {res['not_labelled']} rows not labelled yet"
    )

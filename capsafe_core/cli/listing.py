"""``capsafe init`` and ``capsafe ls benchmarks|experiments|checkpoints|evaluators``."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import click

from capsafe_core.cli.base import CapsafeGroup, cli, db_option, json_option, open_store, print_frame, resolve_db


@cli.command()
@db_option
def init(db_path: str) -> None:
    """Create (or migrate) a capsafe database.

    \b
    Example:
      capsafe init --db results.db
    """
    from capsafe_core.store import SCHEMA_VERSION

    with open_store(db_path, create=True) as store:
        click.echo(f"{store.path}: capsafe database, schema version {SCHEMA_VERSION}")


@cli.group(name="ls", cls=CapsafeGroup)
def ls_group() -> None:
    """List benchmarks, experiments, checkpoints or evaluators.

    \b
    Example:
      capsafe ls benchmarks --json
    """


@ls_group.command(name="benchmarks")
@db_option
@json_option
def ls_benchmarks(db_path: str, as_json: bool) -> None:
    """Shipped benchmarks (kind, prompts, licence), plus any others stored in the database.

    \b
    Example:
      capsafe ls benchmarks --json
    """
    from capsafe_core.catalog import benchmark_catalog, group_line

    store = open_store(db_path, read_only=True) if Path(resolve_db(db_path)).exists() else None
    with store or nullcontext():
        frame = benchmark_catalog(store)
    print_frame(frame, as_json=as_json, drop=() if as_json else ("source",))
    if not as_json:
        click.echo(group_line())


@ls_group.command(name="experiments")
@db_option
@json_option
def ls_experiments(db_path: str, as_json: bool) -> None:
    """Experiments in the database.

    \b
    Example:
      capsafe ls experiments --db results.db
    """
    with open_store(db_path, read_only=True) as store:
        print_frame(store.experiments(), as_json=as_json, drop=() if as_json else ("id", "meta"))


@ls_group.command(name="checkpoints")
@db_option
@json_option
@click.option("--experiment", "-e", help="Only this experiment.")
def ls_checkpoints(db_path: str, as_json: bool, experiment: str | None) -> None:
    """Checkpoints (experiment, mitigation, step) with their generation counts.

    \b
    Example:
      capsafe ls checkpoints --experiment demo
    """
    with open_store(db_path, read_only=True) as store:
        print_frame(store.checkpoints(experiment), as_json=as_json, drop=() if as_json else ("id", "meta"))


@ls_group.command(name="evaluators")
@db_option
@json_option
def ls_evaluators(db_path: str, as_json: bool) -> None:
    """Registered evaluators, and the evaluators with judgments in the database.

    \b
    Example:
      capsafe ls evaluators --json
    """
    from capsafe_core.catalog import evaluator_catalog

    store = open_store(db_path, read_only=True) if Path(resolve_db(db_path)).exists() else None
    with store or nullcontext():
        frame = evaluator_catalog(store)
    print_frame(frame, as_json=as_json, drop=() if as_json else ("description",))

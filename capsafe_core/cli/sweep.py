"""``capsafe sweep``: a whole experiment's checkpoints × benchmarks × evaluators from one file."""

from __future__ import annotations

from pathlib import Path

import click

from capsafe_core.cli.base import cli, db_option, open_store, print_frame


@cli.command(name="sweep")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--executor",
    type=click.Choice(["local", "servers", "ray"]),
    default="local",
    show_default=True,
    help="local: one checkpoint after another here; servers: the OpenAI-compatible servers of [servers]; "
    "ray: a Ray task per checkpoint ([ray]).",
)
@click.option("--dry-run", is_flag=True, help="Print the plan (stored, to generate) and run nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
@db_option
def sweep_cmd(path: Path, executor: str, dry_run: bool, quiet: bool, db_path: str) -> None:
    """Evaluate every checkpoint of a sweep file (TOML: the experiment, checkpoints as a folder pattern or
    a list of mitigation/seed/step → model, benchmarks with limits, decoding, evaluators, judge model,
    servers, Ray resources). Everything is written through this database from this process; a rerun of a
    finished sweep adds nothing. The file's format: the docstring of capsafe_core/sweep/plan.py and the
    README.

    \b
    Example:
      capsafe sweep sweep.toml --dry-run --db results.db
      capsafe sweep sweep.toml --executor servers --db results.db
    """
    from capsafe_core.sweep import execute, plan

    sweep = plan.load(path)
    with open_store(db_path, create=True) as store:
        if dry_run:
            table = execute.plan_table(store, sweep)
            click.echo(
                f"{sweep.experiment}: {table.height} checkpoints, {int(table['stored'].sum()):,} generations stored, "
                f"{int(table['to_generate'].sum()):,} to generate (executor {executor})"
            )
            print_frame(table, as_json=False)
            return
        result = execute.run(store, sweep, executor, progress=not quiet)
    click.echo(result.summary())

"""The ``capsafe`` command: a thin layer over the engine.

Each command opens the database from ``--db`` or ``$CAPSAFE_DB``, calls one engine function and
prints its result. A ``CapsafeError`` is printed as one line (``Error: ...``) with exit code 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import polars as pl

from capsafe_core.errors import CapsafeError

DEFAULT_DB = "capsafe.db"


class CapsafeGroup(click.Group):
    """Shows CapsafeError as one line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CapsafeError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(1)


def db_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        "db_path",
        envvar="CAPSAFE_DB",
        default=DEFAULT_DB,
        show_default=True,
        type=click.Path(dir_okay=False),
        help="SQLite database file (or set CAPSAFE_DB).",
    )(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def open_store(db_path: str, *, create: bool = False):
    from capsafe_core.store import Store

    return Store.open(db_path, create=create)


def print_frame(frame: pl.DataFrame, *, as_json: bool, drop: tuple[str, ...] = ()) -> None:
    frame = frame.drop([c for c in drop if c in frame.columns])
    if as_json:
        click.echo(json.dumps(frame.to_dicts(), indent=1, default=str, ensure_ascii=False))
        return
    if frame.height == 0:
        click.echo("(none)")
        return
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=200,
        fmt_str_lengths=60,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
    ):
        click.echo(str(frame))


@click.group(cls=CapsafeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="capsafe")
def cli() -> None:
    """capsafe: safety of fine-tuned LLMs, measured at a stated capability.

    \b
    Example:
      capsafe init --db results.db
      capsafe ls benchmarks
    """


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
    from capsafe_core import benchmarks

    rows = [
        {
            "name": s.name,
            "kind": s.kind,
            "prompts": s.prompts,
            "license": s.license,
            "source": s.source,
            "scorer": s.scorer,
            "shipped": True,
        }
        for s in benchmarks.registry().values()
    ]
    if Path(db_path).exists():
        with open_store(db_path) as store:
            shipped = {r["name"] for r in rows}
            for r in store.benchmarks().to_dicts():
                if r["name"] not in shipped:
                    rows.append(
                        {
                            "name": r["name"],
                            "kind": r["kind"],
                            "prompts": r["prompts"],
                            "license": r["license"],
                            "source": r["source"],
                            "scorer": None,
                            "shipped": False,
                        }
                    )
    frame = pl.DataFrame(rows)
    print_frame(frame, as_json=as_json, drop=() if as_json else ("source",))
    if not as_json:
        groups = benchmarks.groups()
        click.echo("groups: " + ", ".join(f"{g} = {'+'.join(m)}" for g, m in groups.items()))


@ls_group.command(name="experiments")
@db_option
@json_option
def ls_experiments(db_path: str, as_json: bool) -> None:
    """Experiments in the database.

    \b
    Example:
      capsafe ls experiments --db results.db
    """
    with open_store(db_path) as store:
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
    with open_store(db_path) as store:
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
    from capsafe_core import evaluators

    rows = [
        {
            "name": s.name,
            "kind": s.kind,
            "version": s.version,
            "registered": True,
            "judgments": 0,
            "description": s.description,
        }
        for s in evaluators.registry().values()
    ]
    if Path(db_path).exists():
        with open_store(db_path) as store:
            stored = {(r["name"], r["version"]): r for r in store.evaluators().to_dicts()}
        for row in rows:
            hit = stored.pop((row["name"], row["version"]), None)
            row["judgments"] = hit["judgments"] if hit else 0
        rows += [
            {
                "name": n,
                "kind": r["kind"],
                "version": v,
                "registered": False,
                "judgments": r["judgments"],
                "description": "",
            }
            for (n, v), r in stored.items()
        ]
    print_frame(pl.DataFrame(rows), as_json=as_json, drop=() if as_json else ("description",))


@cli.group(name="import", cls=CapsafeGroup)
def import_group() -> None:
    """Import results you already have.

    \b
    Example:
      capsafe import table results.csv --map response=output --set experiment=my-ft
    """


@import_group.command(name="table")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="FIELD=COLUMN",
    help="Read FIELD from COLUMN. FIELD: experiment, mitigation, step, model, benchmark, prompt_id, "
    "prompt, category, reference, response, sample; or judge:NAME, score:NAME, explanation:NAME, "
    "human:ANNOTATOR, human_coherent:ANNOTATOR, human_note:ANNOTATOR.",
)
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE", help="Set FIELD to a constant.")
@click.option(
    "--judge-kind",
    "judge_kinds",
    multiple=True,
    metavar="NAME=KIND",
    help="Kind of an imported judge (capability, refusal, harm, coherence) when its values "
    "do not say (1/0 alone means harm: 1 = unsafe).",
)
@click.option("--judge-version", default="imported", show_default=True, help="Version stored for imported judges.")
@click.option(
    "--benchmark-kind",
    default="safety",
    show_default=True,
    type=click.Choice(["safety", "overrefusal", "capability"]),
    help="Kind of a new benchmark.",
)
@db_option
def import_table_cmd(
    file: str,
    maps: tuple[str, ...],
    sets: tuple[str, ...],
    judge_kinds: tuple[str, ...],
    judge_version: str,
    benchmark_kind: str,
    db_path: str,
) -> None:
    """Import a CSV, JSONL or Parquet file, one generation per row.

    Columns named like a field are used without --map. Unset, experiment and benchmark are
    the file name, mitigation is 'none' and step is 0. Prompts of a shipped benchmark are matched
    by prompt_id or text; other benchmarks are created.

    \b
    Example:
      capsafe import table xstest_v2_completions_gpt4.csv --set experiment=xstest --set model=gpt4 \\
        --set benchmark=xstest_completions --map prompt_id=id --map response=completion \\
        --map human:annotator_1=annotation_1 --map human:final=final_label
    """
    from capsafe_core.importers.table import import_table, parse_mapping

    mapping = parse_mapping(
        list(maps), list(sets), list(judge_kinds), judge_version=judge_version, benchmark_kind=benchmark_kind
    )
    with open_store(db_path, create=True) as store:
        result = import_table(store, file, mapping)
    click.echo(result.summary())


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

    with open_store(db_path) as store:
        n = export(store, out, experiment=experiment, benchmark=benchmark)
    click.echo(f"Wrote {n} generations to {out}")


def main() -> None:
    cli(prog_name="capsafe")


if __name__ == "__main__":
    main()

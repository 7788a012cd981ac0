"""What every command shares: the root group, one-line errors, the database options, printing.

A ``CapsafeError``, a SQLite error (busy, read-only, damaged) or a file-system error is printed as one
line, ``Error: ...``, with exit code 1 (2 for a bad option); Ctrl-C in a long command says what is
kept (exit 130).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import polars as pl

from capsafe_core.errors import CapsafeError
from capsafe_core.jsonl import json_safe

DEFAULT_DB = "capsafe.db"


class CapsafeGroup(click.Group):
    """Shows a problem the user can fix as one line instead of a traceback: a ``CapsafeError``, a
    SQLite error (busy, read-only, damaged file) or a file-system error (missing folder, permissions)."""

    def invoke(self, ctx: click.Context) -> Any:
        import sqlite3

        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # a bad option: one line too, with where to look (exit 2, as click)
            where = e.ctx.command_path if e.ctx else ctx.command_path
            _fail(f"{e.format_message()} (see: {where} --help)", code=2)
        except CapsafeError as e:
            _fail(str(e))
        except sqlite3.Error as e:
            from capsafe_core.store.connection import translate

            _fail(str(translate(e, ctx.params.get("db_path") or "the database")))
        except OSError as e:
            if e.filename is None:
                raise
            _fail(f"cannot use {e.filename}: {e.strerror or e}; check the path and its permissions")


def _fail(message: str, *, code: int = 1) -> None:
    click.echo(f"Error: {' '.join(message.split())}", err=True)
    sys.exit(code)


def db_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        "db_path",
        envvar="CAPSAFE_DB",
        default=DEFAULT_DB,
        show_default=True,
        type=click.Path(dir_okay=False),
        help="SQLite database file (or set CAPSAFE_DB); 'demo' is the bundled demo database.",
    )(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def judge_model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--judge-model/--judge-backend/--judge-base-url for the LLM judges (collected into ``judge_options``)."""
    f = click.option(
        "--judge-base-url", help="OpenAI-compatible server of the judge model (with --judge-backend openai)."
    )(f)
    f = click.option(
        "--judge-backend",
        default="transformers",
        show_default=True,
        type=click.Choice(["transformers", "openai"]),
        help="Backend of the LLM judges.",
    )(f)
    f = click.option(
        "--judge-model",
        default="smollm2-135m-instruct",
        show_default=True,
        help="Judge model of the LLM judges (strongreject_rubric, qi_harmfulness, harmbench_cls, llamaguard, "
        "em_coherence). The default SmolLM2-135M is far too weak to trust; use a strong model for real results.",
    )(f)
    return f


def resolve_db(db_path: str) -> str:
    """``demo`` names the bundled demo database (decompressed on first use); anything else is a path."""
    if db_path == "demo":
        from capsafe_core import bundled

        return str(bundled.demo_db())
    return db_path


def open_store(db_path: str, *, create: bool = False, read_only: bool = False):
    """The database for a command: reading commands open it read-only (also in a read-only folder)."""
    from capsafe_core.store import Store

    ctx = click.get_current_context(silent=True)
    timeout = ctx.find_root().params.get("busy_timeout") if ctx else None
    return Store.open(resolve_db(db_path), create=create, read_only=read_only, timeout=timeout)


def replace_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--replace",
        is_flag=True,
        help="Replace stored generations whose response differs (their verdicts and human labels are dropped; "
        "the count is printed). Without it such an import is refused and nothing is written.",
    )(f)


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


def print_report(tables: dict[str, pl.DataFrame], *, as_json: bool, titles: dict[str, str]) -> None:
    """Tables as JSON (one key each) or as titled text tables."""
    if as_json:
        click.echo(json.dumps(json_safe({k: t.to_dicts() for k, t in tables.items()}), indent=1, default=str))
        return
    for key, title in titles.items():
        click.echo(f"\n{title}")
        frame = tables[key]
        print_frame(frame.with_columns(pl.col(pl.Float64).round(3)) if frame.height else frame, as_json=False)


@contextmanager
def resumable(db_path: str) -> Iterator[None]:
    """Ctrl-C ends a long command with a line saying that finished batches are kept (exit 130)."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo(
            f"Interrupted: every finished batch is saved in {db_path}; run the same command again to resume.",
            err=True,
        )
        sys.exit(130)


def command_line() -> str:
    """The command as typed, recorded with runs and builds."""
    return "capsafe " + " ".join(sys.argv[1:])


@click.group(cls=CapsafeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="capsafe")
@click.option(
    "--busy-timeout",
    type=float,
    envvar="CAPSAFE_BUSY_TIMEOUT",
    help="Seconds to wait while another process writes to the database [default: 30].",
)
def cli(busy_timeout: float | None) -> None:
    """capsafe: safety of fine-tuned LLMs, measured at a stated capability.

    \b
    Example:
      capsafe init --db results.db
      capsafe ls benchmarks
    """
    if busy_timeout is not None and busy_timeout < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--busy-timeout")

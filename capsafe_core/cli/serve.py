"""``capsafe serve`` (the dashboard) and ``capsafe demo build`` (the bundled demo experiment)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from capsafe_core.cli.base import CapsafeGroup, cli, command_line, resolve_db


@cli.group(name="demo", cls=CapsafeGroup)
def demo_group() -> None:
    """The demo experiment shipped in data/demo.db.

    \b
    Example:
      capsafe demo build
    """


@demo_group.command(name="build")
@click.option("--out", default="data/demo.db", show_default=True, type=click.Path(dir_okay=False))
@click.option(
    "--work-dir",
    default="runs/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Aligned model, checkpoints (deleted after evaluation) and the database being built.",
)
@click.option("--quick", is_flag=True, help="A tiny version (minutes) to check the pipeline; not for shipping.")
@click.option(
    "--extend",
    is_flag=True,
    help="Keep the runs of the database at --out and add the missing ones (e.g. the repeated runs' seeds).",
)
@click.option("--quiet", "-q", is_flag=True)
def demo_build_cmd(out: str, work_dir: str, quick: bool, extend: bool, quiet: bool) -> None:
    """Build the demo: align SmolLM2, fine-tune under 4 mitigations (none and lower_lr three times,
    seeds 0-2), evaluate every checkpoint. Resumable: run it again after an interruption.

    Took 1 h 57 min on 2 CPU cores for one run per mitigation; see the README section "The demo experiment".

    \b
    Example:
      capsafe demo build --out data/demo.db
      capsafe demo build --out data/demo.db --extend   # add the seeds to an existing demo
    """
    from capsafe_core.demo import DemoConfig, build_demo

    cfg = DemoConfig(out=Path(out), work_dir=Path(work_dir), progress=not quiet, command=command_line())
    if quick:
        cfg = cfg.quick()
    summary = build_demo(cfg, extend=extend)
    click.echo(json.dumps(summary, indent=1, default=str))


@cli.command(name="serve")
@click.option("--port", default=8501, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option(
    "--db",
    "db_path",
    envvar="CAPSAFE_DB",
    default=None,
    type=click.Path(dir_okay=False),
    help="Database to open (default: the bundled demo); beyond loopback, the only one served.",
)
@click.option(
    "--auth-token",
    envvar="CAPSAFE_AUTH_TOKEN",
    help="A shared token every user must enter (at least 16 characters; or set CAPSAFE_AUTH_TOKEN).",
)
@click.option(
    "--annotators",
    "annotators_file",
    type=click.Path(dir_okay=False),
    help='TOML file of name = "token" lines: each annotator signs in with their own token and labels as themselves.',
)
def serve_cmd(port: int, host: str, db_path: str | None, auth_token: str | None, annotators_file: str | None) -> None:
    """Open the dashboard in the browser (Streamlit).

    On loopback (the default) there is no login. Beyond loopback (--host 0.0.0.0) an access control is
    required, the database is fixed to --db, and with --annotators labels carry the signed-in name.

    \b
    Examples:
      capsafe serve --db results.db --port 8501
      capsafe serve --host 0.0.0.0 --db results.db --annotators team.toml
    """
    import os

    from capsafe_core.access import serve_policy
    from capsafe_core.serving import streamlit_command

    env = dict(os.environ)
    env.pop("CAPSAFE_AUTH_TOKEN", None)  # the dashboard gets the policy below, not the raw variable
    databases = {}
    if db_path:
        db_path = resolve_db(db_path)
        if not Path(db_path).exists():
            raise click.ClickException(f"No database at {db_path}; create one with: capsafe init --db {db_path}")
        env["CAPSAFE_DB"] = str(Path(db_path).resolve())
        databases = {Path(db_path).name: env["CAPSAFE_DB"]}
    access = serve_policy(host, auth_token=auth_token, annotators_file=annotators_file, databases=databases)
    if access.mode == "open":
        access = type(access)()  # loopback without a login: the sidebar's database field stays
    env.update(access.to_env())
    cmd = streamlit_command(host=host, port=port)
    click.echo(f"capsafe dashboard on http://{host}:{port}" + ("" if access.mode == "open" else f" ({access.mode})"))
    sys.stdout.flush()
    os.chdir(Path(cmd[4]).parent)
    os.execve(cmd[0], cmd, env)  # streamlit replaces this process: a signal to it stops the dashboard

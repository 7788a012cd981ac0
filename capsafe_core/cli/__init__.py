"""The ``capsafe`` command: a thin layer over the engine, one module per command group.

Each command parses its options, opens the database (``--db`` or ``$CAPSAFE_DB``; ``demo`` is the
bundled demo) and calls one core function; errors are one line (``base``).
"""

from capsafe_core.cli import audit, evaluation, imports, listing, reports, serve, sweep
from capsafe_core.cli.base import cli

__all__ = ["audit", "cli", "evaluation", "imports", "listing", "main", "reports", "serve", "sweep"]


def main() -> None:
    cli(prog_name="capsafe")

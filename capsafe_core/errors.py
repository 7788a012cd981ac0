"""Errors capsafe raises on bad input: one base class, a few named kinds.

Every message names the bad value and says how to fix it; the CLI prints it on one
line without a traceback and the dashboard shows it with ``st.error``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CapsafeError(Exception):
    """Base class: a problem the user can fix (bad file, unknown name, ...)."""


class NotFound(CapsafeError):
    """A named thing (experiment, benchmark, evaluator, model, ...) does not exist."""


class BadInput(CapsafeError):
    """An input file or value cannot be read or does not have the expected shape."""


class NotADatabase(CapsafeError):
    """A path given as a database is not a capsafe SQLite database."""


class BackendError(CapsafeError):
    """A model backend failed (server error, timeout, unreadable model file)."""


class ServerUnreachable(BackendError):
    """A server did not answer at all (connection lost or refused, timed out after retries): another server
    may take its work, where an error it answers with (a bad request) would recur anywhere."""


def unknown_name(kind: str, name: str, available: Iterable[str], *, hint: str = "") -> NotFound:
    """``Unknown benchmark 'advbnch'. Did you mean 'advbench'? Available: ...``."""
    names = sorted(available)
    close = difflib.get_close_matches(name, names, n=1)
    msg = f"Unknown {kind} '{name}'."
    if close:
        msg += f" Did you mean '{close[0]}'?"
    msg += f" Available: {', '.join(names) if names else '(none)'}"
    if hint:
        msg += f"; {hint}"
    return NotFound(msg)

"""Opening a database file: look before touching, then connect for reading or for writing.

A file is checked (SQLite header, capsafe tables, ``user_version``) over a connection that
changes nothing; only a capsafe database (or a new file) is then switched to WAL and migrated.
A database that cannot be written (read-only file or folder) opens read-only for reading
commands. SQLite's own errors become one-line ``CapsafeError``s naming the file and the fix.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from capsafe_core.errors import CapsafeError, NotADatabase, NotFound
from capsafe_core.store import schema

SQLITE_MAGIC = b"SQLite format 3\x00"
DEFAULT_BUSY_TIMEOUT = 30.0
WRITE_CACHE_KIB = 128 * 1024  # page cache of a writing connection: large imports stay in memory (bench/import.py)


class DatabaseBusy(CapsafeError):
    """Another process holds the write lock for longer than the busy timeout."""


class ReadOnlyDatabase(CapsafeError):
    """A writing command on a database that cannot be written."""


def busy_timeout() -> float:
    """Seconds to wait for another writer: ``$CAPSAFE_BUSY_TIMEOUT`` (``--busy-timeout``) or 30."""
    raw = os.environ.get("CAPSAFE_BUSY_TIMEOUT")
    try:
        return float(raw) if raw else DEFAULT_BUSY_TIMEOUT
    except ValueError:
        return DEFAULT_BUSY_TIMEOUT


def translate(e: sqlite3.Error, path: object) -> CapsafeError:
    """SQLite's error as a one-line capsafe error that says what to do."""
    msg = str(e)
    low = msg.lower()
    if "locked" in low or "busy" in low:
        return DatabaseBusy(
            f"the database {path} is busy: another capsafe process is writing; retry or raise --busy-timeout"
        )
    if "readonly" in low or "read-only" in low:
        return ReadOnlyDatabase(
            f"{path} is read-only and this command writes to it; copy it somewhere writable or fix its permissions"
        )
    if "unable to open" in low:
        return NotADatabase(f"cannot open {path} ({msg}); check the path and the folder's permissions")
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return NotADatabase(f"{path} is damaged ({msg}); restore it from a copy or pass --db with another database")
    if "disk" in low or "full" in low:
        return CapsafeError(f"cannot write {path} ({msg}); free disk space or move the database")
    return CapsafeError(f"SQLite error on {path}: {msg}")


@contextmanager
def sqlite_errors(path: object) -> Iterator[None]:
    """Raise SQLite errors inside as one-line capsafe errors."""
    try:
        yield
    except sqlite3.Error as e:
        raise translate(e, path) from e


def check_file(path: Path) -> None:
    """A folder or a non-SQLite file is refused before SQLite opens it."""
    if path.is_dir():
        raise NotADatabase(f"{path} is a folder, not a database file; pass --db with a file path")
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as fh:
            head = fh.read(16)
        if head != SQLITE_MAGIC:
            raise NotADatabase(f"{path} is not a SQLite database; pass --db with a capsafe database or a new file path")


def writable(path: Path) -> bool:
    """Can SQLite write this database (the file, and its folder for the WAL and journal files)?"""
    folder = path.parent
    if path.exists() and not os.access(path, os.W_OK):
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def _uri(path: Path, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{quote(str(path.resolve()))}?{query}"


def _settings(conn: sqlite3.Connection, timeout: float) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")


def needs_migration(path: Path) -> bool:
    """A capsafe database of an older schema (read without changing the file)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        conn = sqlite3.connect(_uri(path, mode="ro"), uri=True)
        try:
            v = schema.version(conn)
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return 0 < v < schema.SCHEMA_VERSION


def connect_read(path: Path, *, timeout: float | None = None) -> sqlite3.Connection:
    """A read-only connection to an existing capsafe database of the current schema."""
    timeout = busy_timeout() if timeout is None else timeout
    check_file(path)
    if not path.exists():
        raise NotFound(f"No database at {path}; create one with: capsafe init --db {path}")
    with sqlite_errors(path):
        conn = sqlite3.connect(_uri(path, mode="ro"), uri=True, timeout=timeout, check_same_thread=True)
        try:
            v = schema.check_capsafe(conn, path)
        except sqlite3.OperationalError:
            # a WAL database in a read-only folder without its -shm file: read it as immutable
            conn.close()
            conn = sqlite3.connect(_uri(path, immutable="1"), uri=True, timeout=timeout)
            v = schema.check_capsafe(conn, path)
        except BaseException:
            conn.close()
            raise
        if v < schema.SCHEMA_VERSION:
            conn.close()
            if v == 0:
                raise NotFound(f"{path} is an empty database; create it with: capsafe init --db {path}")
            raise NotADatabase(
                f"{path} has schema version {v} and needs migrating, which a read-only open cannot do; "
                f"run: capsafe init --db {path} (on a writable copy)"
            )
        _settings(conn, timeout)
    return conn


def connect_write(path: Path | str, *, timeout: float | None = None) -> sqlite3.Connection:
    """A connection for writing: checks the file first, then WAL, foreign keys, migrations."""
    timeout = busy_timeout() if timeout is None else timeout
    memory = str(path) == ":memory:"
    p = Path(path)
    if not memory:
        check_file(p)
        folder = p.parent
        if not folder.is_dir():
            raise NotFound(f"No folder {folder} for the database {p.name}; create it first (mkdir -p {folder})")
        if not writable(p):
            raise ReadOnlyDatabase(
                f"{p} is read-only (no write permission on the file or its folder) and this command writes to "
                f"it; copy it somewhere writable or fix its permissions"
            )
    with sqlite_errors(path):
        conn = sqlite3.connect(str(path), timeout=timeout)
        try:
            schema.check_capsafe(conn, path)
            _settings(conn, timeout)
            if not memory:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA cache_size = {-WRITE_CACHE_KIB}")
        except BaseException:
            conn.close()
            raise
    return conn

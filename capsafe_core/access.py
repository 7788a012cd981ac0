"""Who may use a served dashboard, and as whom.

On loopback (the default) the user is the machine's owner: no login, any database. Served beyond
loopback, ``capsafe serve`` refuses to start without an access control: a shared token
(``--auth-token`` / ``$CAPSAFE_AUTH_TOKEN``) or a token per annotator (``--annotators FILE``, TOML
``name = "token"``), compared in constant time; the database is then fixed to the one given (or one of
a list of named ones), and with per-annotator tokens the annotator is the authenticated person.
``capsafe serve`` hands the policy to the dashboard through environment variables (``to_env``).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from capsafe_core.errors import BadInput

MIN_TOKEN = 16  # characters; a short shared secret is guessed by trying


@dataclass(frozen=True)
class Access:
    """The dashboard's access policy: ``open`` (loopback), ``token`` (one shared) or ``annotators``."""

    mode: str = "open"
    token: str | None = None
    annotators: dict[str, str] = field(default_factory=dict)  # name -> token
    databases: dict[str, str] = field(default_factory=dict)  # name -> path; non-empty: the only ones served

    @property
    def fixed_database(self) -> bool:
        return bool(self.databases)

    @property
    def named_annotators(self) -> bool:
        return self.mode == "annotators"

    def identify(self, given: str) -> str | None:
        """Who ``given`` is (``"user"`` for the shared token, the annotator's name), or ``None``. Every
        token is compared, in constant time, so the answer's timing does not tell which one nearly matched."""
        who = None
        candidates = [("user", self.token)] if self.token else []
        candidates += list(self.annotators.items())
        for name, token in candidates:
            if token is not None and hmac.compare_digest(given.encode(), token.encode()):
                who = name
        return who

    def to_env(self) -> dict[str, str]:
        return {"CAPSAFE_ACCESS": json.dumps(self.__dict__)}

    @classmethod
    def from_env(cls) -> Access:
        raw = os.environ.get("CAPSAFE_ACCESS")
        return cls(**json.loads(raw)) if raw else cls()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_token(token: str, what: str) -> str:
    if len(token) < MIN_TOKEN:
        raise BadInput(f"{what} is {len(token)} characters; use at least {MIN_TOKEN} (e.g. from: openssl rand -hex 16)")
    return token


def read_annotators(path: str | Path) -> dict[str, str]:
    """``name = "token"`` lines (TOML): one token per annotator, each long enough and distinct."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f'No annotators file {p}; write one line per annotator: alice = "<token>"')
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f'{p.name} is not a TOML file of name = "token" lines ({e})') from None
    if not data or not all(isinstance(v, str) for v in data.values()):
        raise BadInput(f'{p.name} must hold name = "token" lines, one per annotator')
    tokens = {name: _check_token(token, f"The token of '{name}' in {p.name}") for name, token in data.items()}
    if len(set(tokens.values())) < len(tokens):
        raise BadInput(f"Two annotators in {p.name} share a token; give each their own")
    return tokens


def serve_policy(
    host: str,
    *,
    auth_token: str | None = None,
    annotators_file: str | None = None,
    databases: dict[str, str] | None = None,
) -> Access:
    """The policy ``capsafe serve`` runs under; beyond loopback an access control is required."""
    if auth_token and annotators_file:
        raise BadInput("Pass either --auth-token or --annotators, not both")
    if annotators_file:
        access = Access("annotators", annotators=read_annotators(annotators_file), databases=databases or {})
    elif auth_token:
        access = Access("token", token=_check_token(auth_token, "--auth-token"), databases=databases or {})
    elif not is_loopback(host):
        raise BadInput(
            f"Serving on {host} (beyond loopback) needs an access control: --auth-token TOKEN (or $CAPSAFE_AUTH_TOKEN) "
            f'or --annotators FILE (name = "token" lines)'
        )
    else:
        return Access(databases=databases or {})
    if not access.databases:
        raise BadInput("A served dashboard needs its database: pass --db PATH")
    return access

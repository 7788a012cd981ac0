"""JSON helpers: reading JSON Lines with errors that name the file and line; values JSON can hold."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from capsafe_core.errors import BadInput


def read_lines(text: str, name: str) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for every non-blank line; a bad line is a ``BadInput``."""
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"{name} line {i} is not valid JSON ({e.msg}); fix or remove that line") from None


def json_safe(value: Any) -> Any:
    """JSON has no NaN: undefined statistics (κ with one class) become null, in nested dicts and lists too."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value

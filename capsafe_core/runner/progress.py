"""Progress bars of long runs (tqdm on stderr, with an ETA)."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(desc: str, total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="it",
        disable=not enabled or total == 0,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=True,
    )

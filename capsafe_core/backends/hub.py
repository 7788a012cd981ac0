"""Hugging Face Hub ids (``org/name``, optionally ``@revision``), resolved the way transformers does: the
local Hugging Face cache first (``$HF_HOME``, ``$HF_HUB_CACHE``), a download only where the machine can
reach the Hub and ``$HF_HUB_OFFLINE`` allows it. The snapshot's commit hash is what a run records."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from capsafe_core.errors import NotFound

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*$")  # org/name (one slash)


@dataclass(frozen=True)
class HubSnapshot:
    """A model of the Hub as a local folder: which repository, which revision asked for, which commit."""

    repo_id: str
    revision: str | None
    commit: str
    folder: Path


def split_ref(text: str) -> tuple[str, str | None]:
    """``org/name@rev`` → (``org/name``, ``rev``)."""
    repo, _, revision = text.partition("@")
    return repo, revision or None


def looks_like_hub_id(text: str) -> bool:
    repo, _ = split_ref(text)
    return bool(HUB_ID.match(repo)) and not repo.endswith((".gguf", ".json", ".safetensors"))


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cache_folder() -> Path:
    """The Hugging Face hub cache, read from the environment at each call as huggingface_hub would at import:
    ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    )
    return Path(home) / "hub"


def resolve_hub(text: str, *, what: str = "model") -> HubSnapshot:
    """The local snapshot of Hub id ``text`` (``org/name`` or ``org/name@revision``), downloading it only
    when it is not cached, the Hub is allowed (``$HF_HUB_OFFLINE`` unset) and reachable."""
    from huggingface_hub import snapshot_download

    repo_id, revision = split_ref(text)
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_folder(), local_files_only=True)
    except Exception as cached_error:
        if offline():
            raise _missing(text, what, "HF_HUB_OFFLINE is set") from cached_error
        try:
            folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_folder())
        except Exception as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise _missing(text, what, f"downloading failed: {reason}") from None
    path = Path(folder)
    return HubSnapshot(repo_id=repo_id, revision=revision, commit=path.name, folder=path)


def _missing(text: str, what: str, why: str) -> NotFound:
    repo_id, revision = split_ref(text)
    rev = f" --revision {revision}" if revision else ""
    return NotFound(
        f"No {what} '{text}': not a local folder, and not in the Hugging Face cache {cache_folder()} ({why}); "
        f"fetch it with: huggingface-cli download {repo_id}{rev}"
    )

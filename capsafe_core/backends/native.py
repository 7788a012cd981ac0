"""capsafe's compiled CPU kernels (``csrc/kernels.cpp``): attention, each query to its own positions in one
pass, transformers' RMSNorm in one pass (``norms``) and greedy decoding's argmax without a float32 copy.

PyTorch runs a decoding step's attention as two batched products of tiny matrices (three queries by
64 dimensions per row and key-value head), about a microsecond each, plus a mask and a softmax, and a
prompt's the same a block of queries at a time: the kernel reads each query's keys and values in
place, skips masked positions and keeps the softmax in fp32 (a decoding step's attention about 1.7×
faster on the demo's workload, ``bench/generation.py``). It is built on first use
by ``torch.utils.cpp_extension`` (a C++ compiler, Python's headers and ``ninja``), tuned for this
machine's CPU and cached under ``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``) by a
name that includes the source, the CPU's features and torch's version, so a machine never loads
another's build. Where it cannot be built, decoding uses ``attention``'s products and says so once;
``CAPSAFE_NATIVE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "kernels.cpp"
FLAGS = ("-O3", "-march=native", "-ffast-math", "-fopenmp")  # fast-math: a vectorized exp; compile only
_built: dict[tuple[str, ...], Any] = {}


def enabled() -> bool:
    return os.environ.get("CAPSAFE_NATIVE", "1").strip() not in ("0", "false", "no", "off")


def _cpu() -> str:
    """This machine's CPU: model and feature flags (what ``-march=native`` compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def build_name(flags: tuple[str, ...] = FLAGS) -> str:
    """The extension's name: the source, flags, CPU and torch version hashed (a build per machine kind)."""
    import torch

    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(flags).encode(), _cpu().encode(), torch.__version__.encode()):
        digest.update(part)
    return f"capsafe_kernels_{digest.hexdigest()[:16]}"


@contextmanager
def _ninja_on_path() -> Iterator[None]:
    """The ``ninja`` that pip installed (next to this Python, or the ``ninja`` package's) on ``PATH`` while
    building: torch looks it up there, and an unactivated virtual environment's ``bin`` is not on it."""
    try:
        import ninja

        where = str(ninja.BIN_DIR)
    except (ImportError, AttributeError):
        where = str(Path(sys.executable).parent)
    before = os.environ.get("PATH", "")
    os.environ["PATH"] = where + os.pathsep + before
    try:
        yield
    finally:
        os.environ["PATH"] = before


def kernel(flags: tuple[str, ...] = FLAGS) -> Any | None:
    """The compiled module (``attention``, ``rms_norm``, ``argmax``), loaded once per process and built once
    per machine; None when turned off or when it cannot be built (the reason logged once)."""
    if not enabled():
        return None
    if flags in _built:
        return _built[flags]
    _built[flags] = None
    try:
        from torch.utils.cpp_extension import load

        log.info("loading capsafe's CPU kernels (built on first use per machine, about 20 s)")
        with _ninja_on_path():  # compile flags only: linking with -ffast-math would flush denormals everywhere
            _built[flags] = load(name=build_name(flags), sources=[str(SOURCE)], extra_cflags=list(flags), verbose=False)
    except Exception as err:  # no compiler, no ninja, no headers, a read-only cache: decode without it
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        log.warning(
            "capsafe: the CPU kernels could not be built (%s); decoding uses PyTorch's operations. "
            "Install a C++ compiler and `pip install ninja`, or set CAPSAFE_NATIVE=0 to silence this.",
            reason,
        )
    return _built[flags]

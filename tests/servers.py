"""Real servers for tests: llama.cpp's OpenAI-compatible server on a loopback port."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen, *, seconds: float, what: str, log=None) -> None:  # type: ignore[type-arg]
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or takes too long."""
    deadline = time.time() + seconds
    while True:
        if proc.poll() is not None:
            tail = ""
            if log is not None:
                log.seek(0)
                tail = ": " + log.read()[-2000:]
            raise RuntimeError(f"{what} exited{tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.time() > deadline:
            raise RuntimeError(f"{what} did not start within {seconds:.0f} s")
        time.sleep(0.3)


def stop(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """Terminate a server process, killing it if it does not exit within 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextlib.contextmanager
def _llama_cpp(args: list[str], port: int) -> Iterator[tuple[str, Any]]:
    """``python -m llama_cpp.server ARGS`` listening on ``port``; yields (its /v1 base URL, the process)."""
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (a pipe nobody reads would fill up and block)
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", *args], stdout=subprocess.DEVNULL, stderr=log, text=True
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(f"{url}/models", proc, seconds=120, what="llama.cpp server", log=log)
        yield url, proc
    finally:
        if proc.poll() is None:
            stop(proc)
        log.close()


@contextlib.contextmanager
def llama_cpp_server(model_path: str, *, n_ctx: int = 1024) -> Iterator[str]:
    """Start ``python -m llama_cpp.server`` on a free loopback port; yields its /v1 base URL."""
    port = free_port()
    args = ["--model", model_path, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)]
    with _llama_cpp([*args, "--n_threads", "2"], port) as (url, _):
        yield url


ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def dashboard(db: str, *, env: dict[str, str] | None = None) -> Iterator[str]:
    """``streamlit run app.py`` on a free loopback port with ``CAPSAFE_DB=db``; yields its URL."""
    import os

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "app.py"),
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--server.fileWatcherType",
            "none",
            "--browser.gatherUsageStats",
            "false",
        ],
        env={**os.environ, "CAPSAFE_DB": str(db), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/_stcore/health", proc, seconds=90, what="streamlit")
        yield url
    finally:
        stop(proc)


@contextlib.contextmanager
def llama_cpp_fleet_member(model_path: str, aliases: list[str], *, n_ctx: int = 512) -> Iterator[tuple[str, Any]]:
    """One ``llama_cpp.server`` serving ``model_path`` under several names (its multi-model config file), as
    a vLLM server serves several LoRA checkpoints; yields (its /v1 base URL, the process, to kill it)."""
    import json
    import os

    port = free_port()
    config = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)  # noqa: SIM115
    models = [
        {"model": model_path, "model_alias": a, "n_ctx": n_ctx, "n_threads": 1, "n_threads_batch": 1} for a in aliases
    ]
    json.dump({"host": "127.0.0.1", "port": port, "models": models}, config)
    config.close()
    try:
        with _llama_cpp(["--config_file", config.name], port) as served:
            yield served
    finally:
        os.unlink(config.name)

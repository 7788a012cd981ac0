"""An installed (non-editable) capsafe works: ``python -m build`` makes a wheel that carries the dashboard
and data; installed into a fresh venv it lists benchmarks, compares on the bundled demo and serves.

The fresh venv gets the wheel itself with ``--no-deps``; its dependencies (polars, streamlit, ...) come
from the test environment through a path file, so the test needs no network. The commands run outside
the checkout, so nothing of the repository is importable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp / "dist").glob("capsafe-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CAPSAFE_DB", "CAPSAFE_DATA")}
    return subprocess.run(
        [str(venv / "bin" / "capsafe"), *args], capture_output=True, text=True, cwd=str(cwd), env=env, timeout=300
    )


def printed(venv: Path, code: str, cwd: Path) -> str:
    """What ``code`` prints, run by the venv's Python outside the checkout."""
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd=str(cwd))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_installed_wheel_is_self_contained(installed, tmp_path):
    out = printed(installed, "import capsafe_core.paths as p; print(p.root())", tmp_path)
    assert out.startswith(str(installed)) and out.endswith("_bundle")
    assert (Path(out) / "app.py").is_file() and (Path(out) / "pages" / "overview.py").is_file()
    # the CPU kernels are built from the installed source
    source = printed(installed, "import capsafe_core.backends.native as n; print(n.SOURCE)", tmp_path)
    assert source.startswith(str(installed)) and Path(source).is_file()


def test_ls_benchmarks_and_compare_on_the_demo(installed, tmp_path):
    res = run(installed, "ls", "benchmarks", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "harmbench" in res.stdout and "arithmetic" in res.stdout
    res = run(installed, "compare", "--db", "demo", "--experiment", "smollm2-arithmetic", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "lower_lr" in res.stdout


def test_serve_answers_health_and_stops(installed, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CAPSAFE_DB")}
    proc = subprocess.Popen(
        [str(installed / "bin" / "capsafe"), "serve", "--db", "demo", "--port", str(port)],
        cwd=str(tmp_path),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "the dashboard did not start"
            time.sleep(0.3)
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and "<html" in page.text.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=20)

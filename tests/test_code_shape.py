"""The shape of the code base (ARCHITECTURE.md): small modules, short functions, SQL only in the store,
the one-way flow of imports, and no heavy import on ``import capsafe_core``."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "capsafe_core"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM|INSERT OR)\b")


def _sources(*roots: Path) -> list[Path]:
    return sorted(p for r in roots for p in ([r] if r.is_file() else r.rglob("*.py")))


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in _sources(CORE) if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_no_function_over_80_lines():
    long = {}
    for p in _sources(CORE):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{p.relative_to(ROOT)}:{node.name}"] = n
    assert long == {}


def test_sql_only_in_the_store():
    outside = [
        str(p.relative_to(ROOT))
        for p in _sources(CORE, ROOT / "pages", ROOT / "app.py")
        if SQL.search(p.read_text()) and "capsafe_core/store/" not in p.as_posix()
    ]
    assert outside == []


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_core_never_imports_streamlit_and_the_store_imports_no_analysis():
    for p in _sources(CORE):
        mods = _imports(p)
        assert not any(m == "streamlit" or m.startswith("streamlit.") for m in mods), p
        if "capsafe_core/store/" in p.as_posix():
            bad = [m for m in mods if m.startswith("capsafe_core.") and not m.startswith("capsafe_core.store")]
            assert set(bad) <= {"capsafe_core.errors"}, (p, bad)


def test_import_capsafe_core_loads_no_torch_or_transformers():
    code = "import sys, capsafe_core, capsafe_core.evaluators as e; e.registry(); print(sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'torch'" not in out and "'transformers'" not in out

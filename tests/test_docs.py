"""Every CLI command is documented in the README (as sqlite-utils does)."""

from pathlib import Path

from capsafe_core.cli import cli
from tests.test_cli import _commands

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_command_is_in_readme():
    missing = [" ".join(p) for p, _ in _commands(cli) if f"capsafe {' '.join(p)}" not in README]
    assert not missing, f"undocumented commands: {missing}"


def test_readme_starts_with_two_setup_commands():
    blocks = README.split("```")
    first = [ln for ln in blocks[1].splitlines()[1:] if ln.strip() and not ln.startswith("#")]
    assert len(first) == 2 and "dashboard" in first[0] and "test" in first[1]

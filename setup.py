"""The wheel carries the dashboard and data: ``app.py``, ``pages/`` and ``data/`` (top level in the
repository, as the project's layout wants) are copied into ``capsafe_core/_bundle/`` when the package
is built, where ``capsafe_core.paths`` finds them in an installed (non-editable) capsafe."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "demo.db", "*.db-wal", "*.db-shm", "*.tmp")


class BuildWithDashboard(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install uses the checkout itself
        bundle = Path(self.build_lib) / "capsafe_core" / "_bundle"
        shutil.rmtree(bundle, ignore_errors=True)
        bundle.mkdir(parents=True)
        shutil.copy2(ROOT / "app.py", bundle / "app.py")
        shutil.copytree(ROOT / "pages", bundle / "pages", ignore=SKIP)
        shutil.copytree(ROOT / "data", bundle / "data", ignore=SKIP)


setup(cmdclass={"build_py": BuildWithDashboard})

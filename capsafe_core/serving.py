"""How ``capsafe serve`` starts the dashboard: Streamlit on the entry script of this checkout or of the
installed bundle, with the file watcher off (nothing to watch in an installed app, and watching a
checkout's ``.venv`` overflows inotify), usage statistics off, XSRF and CORS protection on."""

from __future__ import annotations

import sys

from capsafe_core import paths
from capsafe_core.errors import NotFound


def streamlit_command(*, host: str, port: int) -> list[str]:
    """``python -m streamlit run APP ...`` for the dashboard."""
    app = paths.app_path()
    if not app.is_file():
        raise NotFound(f"No dashboard at {app}; reinstall capsafe (the wheel carries app.py and pages/)")
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
        "--server.enableXsrfProtection",
        "true",
        "--server.enableCORS",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]

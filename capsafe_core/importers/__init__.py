"""Importers: other tools' results into the store, all through ``records.write_records``.

Lazy by name (``IMPORTERS``), so importing this package imports no optional dependency.
"""

from __future__ import annotations

IMPORTERS = {
    "table": "capsafe_core.importers.table:import_table",
}

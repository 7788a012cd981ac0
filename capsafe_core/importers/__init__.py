"""Importers: other tools' results into the store, all through ``records.write_records``.

Lazy by name (``IMPORTERS``), so importing this package imports no optional dependency.
"""

from __future__ import annotations

IMPORTERS = {
    "table": "capsafe_core.importers.table:import_table",
    "inspect": "capsafe_core.importers.inspect_log:import_inspect",
    "lm-eval": "capsafe_core.importers.lmeval:import_lm_eval",
    "harmbench": "capsafe_core.importers.harmbench:import_harmbench",
    "jbb": "capsafe_core.importers.jbb:import_jbb",
}

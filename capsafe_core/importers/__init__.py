"""Importers: other tools' results into the store, all through ``records.write_records``.

One module per source (``table``, ``inspect_log``, ``lmeval``, ``harmbench``, ``jbb``), each with one
``import_*`` function that ``capsafe import ...`` calls; ``common`` holds what they share. Importing
this package imports no optional dependency (inspect-ai and lm-eval load inside their importers).
"""

"""The store: the only place with SQL (DESIGN.md "Shape of the code").

- ``schema``: migrations and what a capsafe database must hold;
- ``connection``: opening a file (checked before anything is written), read-only opens, errors;
- ``db``: ``Store``, its transactions, upserts and named lookups;
- ``imports``: checked writes of imported records (conflicts are reported, never overwritten);
- ``reads``: typed frames for analysis and the dashboard; ``runs``: what the runner and
  fine-tuning read; ``labels``: human labels; ``export``: the joined export rows.
"""

from capsafe_core.store.connection import DatabaseBusy, ReadOnlyDatabase
from capsafe_core.store.db import Store, now, to_json
from capsafe_core.store.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "DatabaseBusy", "ReadOnlyDatabase", "Store", "now", "to_json"]

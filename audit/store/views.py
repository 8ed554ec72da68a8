"""DuckDB views over the Parquet store.

- ``<table>_all``: every committed file of a table, as written (duplicates included).
- ``adapters``: one row per (adapter_id, analyzer_version): the first committed unit wins.
- ``modules`` / ``findings``: the rows of the units ``adapters`` shows (so a unit killed before
  its commit, or the loser of two racing scans, never shows), plus run-level findings.
- ``runs``: the latest state of each run.
- ``latest_adapters`` / ``latest_modules``: only the newest analyzer version of each adapter.

Views re-read the files at every query, so a connection sees what was written after it opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from audit.store.schema import PARTITION, TABLES

if TYPE_CHECKING:
    from audit.store.parquet import ParquetStore

_DERIVED = {
    "adapters": """
        SELECT * FROM adapters_all
        QUALIFY row_number() OVER (PARTITION BY adapter_id, analyzer_version ORDER BY audited_at, unit_id) = 1""",
    "modules": """
        SELECT m.* FROM modules_all m WHERE m.unit_id IN (SELECT unit_id FROM adapters)""",
    "runs": """
        SELECT * FROM runs_all
        QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY updated_at DESC, finished_at DESC NULLS LAST) = 1""",
    "findings": """
        SELECT f.* FROM findings_all f
        WHERE f.unit_id IN (SELECT unit_id FROM adapters) OR f.unit_id IN (SELECT run_id FROM runs)""",
    "latest_adapters": """
        SELECT * FROM adapters
        QUALIFY row_number() OVER (PARTITION BY adapter_id ORDER BY audited_at DESC, analyzer_version DESC) = 1""",
    "latest_modules": """
        SELECT m.* FROM modules m WHERE m.unit_id IN (SELECT unit_id FROM latest_adapters)""",
}
"""Views derived from the base tables, created in this order. Later features add theirs with
:func:`register_view`."""


def register_view(name: str, sql: str) -> None:
    """Add a derived view (created after the base tables' ``*_all`` views)."""
    _DERIVED[name] = sql


def connect(store: ParquetStore, con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection (or ``con``) with the store's views defined.

    Raises:
        duckdb.Error: a view cannot be defined (a damaged file, an unreadable store).
    """
    con = con or duckdb.connect()
    for table, schema in TABLES.items():
        part = PARTITION[table]
        if store.has_files(table):
            src = (f"read_parquet('{_quote(store.table_glob(table))}', hive_partitioning = true, "
                   f"union_by_name = true)")
        else:
            empty = pa.Table.from_pylist([], schema=schema.append(pa.field(part, pa.date32())))
            con.register(f"_empty_{table}", empty)
            src = f"_empty_{table}"
        con.execute(f"CREATE OR REPLACE VIEW {table}_all AS SELECT * FROM {src}")
    for name, sql in _DERIVED.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
    return con


def _quote(path: str) -> str:
    """Escape a store path for a SQL string literal (the path is ours, not user data)."""
    return path.replace("'", "''")

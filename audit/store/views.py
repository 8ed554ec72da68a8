"""DuckDB views over the Parquet store.

- ``units_all`` / ``runs_all``: every committed row, once (a unit audited twice is two rows);
- ``adapters_all``: the adapter row of every committed unit;
- ``adapters``: one row per (adapter_id, analyzer_version): the first committed unit wins;
- ``modules`` / ``findings``: the rows of the units ``adapters`` shows (so the loser of two racing
  scans never shows), plus the findings of listings (``adapter_id`` null);
- ``runs``: the latest state of each run;
- ``latest_adapters`` / ``latest_modules``: only the newest analyzer version of each adapter.
- ``newest_adapters``: the newest audited revision of each repository of each registry (a
  registry's current state).

On a local store, views re-read the files at every query, so a connection sees what was written
after it opened; on an object store they read the files listed when the connection was made.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any, Protocol

import duckdb

from audit.store.catalog import table_modules

if TYPE_CHECKING:
    from audit.pyarrow_without_pandas import pa


class StoreFiles(Protocol):
    """What the views read of a store (:class:`audit.store.parquet.ParquetStore` is one)."""

    root: str
    local: bool
    fs: Any

    def has_files(self, table: str) -> bool: ...

    def table_glob(self, table: str) -> str: ...

    def catalog(self) -> Catalog: ...

# the column lists of the nested module and finding records, spelt out when the views are made
# (audit.store.schema, and pyarrow with it, is imported only by a connection that reads a table)
_MODULE_COLS = "{module_columns}"
_FINDING_COLS = "{finding_columns}"

_DERIVED = {
    "adapters_all": "SELECT * EXCLUDE (modules, findings) FROM units_all",
    "adapters": """
        SELECT * FROM adapters_all
        QUALIFY row_number() OVER (PARTITION BY adapter_id, analyzer_version ORDER BY audited_at, unit_id) = 1""",
    "modules": f"""
        SELECT adapter_id, {_MODULE_COLS}, analyzer_version, unit_id, audit_date FROM (
            SELECT adapter_id, analyzer_version, unit_id, audit_date, unnest(modules, recursive := true)
            FROM units_all WHERE unit_id IN (SELECT unit_id FROM adapters))""",
    "runs": """
        SELECT * EXCLUDE (findings) FROM runs_all
        QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY updated_at DESC, finished_at DESC NULLS LAST) = 1""",
    "findings": f"""
        SELECT adapter_id, repo_id, {_FINDING_COLS}, analyzer_version, unit_id FROM (
            SELECT adapter_id, repo_id, analyzer_version, unit_id, unnest(findings, recursive := true)
            FROM units_all WHERE unit_id IN (SELECT unit_id FROM adapters))
        UNION ALL BY NAME
        SELECT NULL AS adapter_id, repo_id, {_FINDING_COLS}, analyzer_version, run_id AS unit_id FROM (
            SELECT run_id, analyzer_version, unnest(findings, recursive := true) FROM runs_all
            QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY updated_at DESC, finished_at DESC NULLS LAST) = 1)""",
    "latest_adapters": """
        SELECT * FROM adapters
        QUALIFY row_number() OVER (PARTITION BY adapter_id ORDER BY audited_at DESC, analyzer_version DESC) = 1""",
    "newest_adapters": """
        SELECT * FROM latest_adapters
        QUALIFY row_number() OVER (PARTITION BY registry, repo_id ORDER BY audited_at DESC, unit_id DESC) = 1""",
    "latest_modules": """
        SELECT m.* FROM modules m WHERE m.unit_id IN (SELECT unit_id FROM latest_adapters)""",
}
"""Views derived from the stored tables, created in this order. Later features add theirs with
:func:`register_view`."""


def register_view(name: str, sql: str) -> None:
    """Add a derived view (created after the base tables' ``*_all`` views)."""
    _DERIVED[name] = sql


def extend_view(name: str, sql: str) -> None:
    """Add the rows of ``sql`` to the derived view ``name`` (``UNION ALL BY NAME``); the view is then
    created after every view registered so far, so ``sql`` may use them. Idempotent."""
    base = _DERIVED.pop(name)
    part = f"\n        UNION ALL BY NAME {sql}"
    _DERIVED[name] = base if part in base else base + part


class Catalog:
    """The views of one local store, defined once per process: an in-memory DuckDB database that
    every :func:`connect` of the store opens a cursor on (DuckDB cursors share their database's
    catalog and caches). A scan's steps (the diff, the verdicts, the summary) each connect; with
    one catalog the second and third define only the views the first did not, and DuckDB's Parquet
    metadata cache (``parquet_metadata_cache``; entries checked against the file's version) reads
    each footer once. Views over a local store re-read its files at every query, so a view defined
    early still sees what was written after; a table view defined while the table had no file is
    redefined once it has one."""

    def __init__(self) -> None:
        import threading

        self.db = duckdb.connect()
        self.db.execute("SET GLOBAL parquet_metadata_cache = true")
        self.lock = threading.Lock()
        self.defined: dict[str, bool] = {}
        """View name -> defined over files (a table view over no file yet is ``False``)."""


def connect(store: StoreFiles, con: duckdb.DuckDBPyConnection | None = None, *,
            for_sql: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the store's views defined: on a local store (and no ``con``), a
    cursor on the store's :class:`Catalog`; otherwise ``con`` or a new in-memory connection
    (an object store's views read the files listed now, so each connection makes its own).

    Args:
        store: the store.
        con: a connection to define the views in (default: see above).
        for_sql: define only the views this SQL can use (the names it mentions and the views those
            are made of), so that a query pays only for what it reads (``SELECT 1`` defines none
            and gets a bare connection).

    Raises:
        duckdb.Error: a view cannot be defined (a damaged file, an unreadable store).
    """
    if for_sql is not None and not _mentions_a_table(for_sql):
        return con or duckdb.connect()  # ``SELECT 1``: no view to define, nothing to import
    if con is None and store.local:
        catalog = store.catalog()
        with catalog.lock:
            _define(store, catalog.db, for_sql, catalog.defined, temp=False)
        return catalog.db.cursor()
    con = con or duckdb.connect()
    _define(store, con, for_sql, {}, temp=True)
    return con


def _define(store: StoreFiles, con: duckdb.DuckDBPyConnection, for_sql: str | None, defined: dict[str, bool],
            *, temp: bool) -> None:
    """Define in ``con`` the views ``for_sql`` needs (all when ``None``) that ``defined`` lacks
    (and update it); the empty typed tables are ``TEMP`` when ``temp``."""
    from audit.pyarrow_without_pandas import pa

    from audit.store.schema import DEDUP_KEYS, FINDING_FIELDS, MODULE_FIELDS, PARTITION, TABLES, names

    table_modules()  # the features that add tables register them on import
    wanted = None if for_sql is None else _needed(for_sql)
    columns_of = {"{module_columns}": ", ".join(names(MODULE_FIELDS)),
                  "{finding_columns}": ", ".join(names(FINDING_FIELDS))}
    for table, schema in TABLES.items():
        view = f"{table}_all"
        if wanted is not None and view not in wanted or defined.get(view):
            continue
        has_files = store.has_files(table)
        if view in defined and not has_files:
            continue  # defined over no file, and still none
        part = PARTITION[table]
        full = schema.append(pa.field(part, pa.date32()))
        # every column of the current schema, NULL where older files lack it (columns are only added);
        # typed in SQL: registering an Arrow table makes DuckDB import pandas (0.8 s)
        columns = ", ".join(f'"{f.name}" {duckdb_type(f.type)}' for f in full)
        con.execute(f"CREATE OR REPLACE {'TEMP ' if temp else ''}TABLE _empty_{table} ({columns})")
        src = f"_empty_{table}"
        if has_files and store.local:
            src = (f"(SELECT * FROM _empty_{table} UNION ALL BY NAME SELECT * FROM read_parquet("
                   f"'{_quote(store.table_glob(table))}', hive_partitioning = true, union_by_name = true))")
        elif has_files:
            con.register(f"_src_{table}", _remote_dataset(store, table, full))
            src = f"_src_{table}"
        # a row present in two files (left by an interrupted compaction) is read once
        keys = ", ".join(DEDUP_KEYS[table])
        con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {src} "
                    f"QUALIFY row_number() OVER (PARTITION BY {keys}) = 1")
        defined[view] = has_files
    for name in _creation_order():
        if (wanted is None or name in wanted) and name not in defined:
            sql = _DERIVED[name]
            for placeholder, columns in columns_of.items():
                sql = sql.replace(placeholder, columns)
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
            defined[name] = True


def _creation_order() -> list[str]:
    """The derived views, each after the views it reads (``graphlib``'s topological order of what
    DuckDB's parser names in their SQL), so a plugin's view may read a built-in one whatever the
    order the modules were imported in; registration order where the names form a cycle."""
    from graphlib import CycleError, TopologicalSorter

    lower = {name.lower(): name for name in _DERIVED}
    graph = {name: {lower[w.lower()] for w in _names_in(sql) if w.lower() in lower and lower[w.lower()] != name}
             for name, sql in _DERIVED.items()}
    try:
        return list(TopologicalSorter(graph).static_order())
    except CycleError:
        return list(_DERIVED)


def _mentions_a_table(sql: str) -> bool:
    """Whether ``sql`` names any table or view, by DuckDB's own parser (``SELECT 1`` names none);
    true when DuckDB cannot tell (a syntax error is then reported by the query itself)."""
    return bool(_names_in(sql))


def view_names() -> list[str]:
    """Every view :func:`connect` defines, in the order it defines them."""
    from audit.store.schema import TABLES

    table_modules()
    return [f"{t}_all" for t in TABLES] + _creation_order()


def _needed(sql: str) -> set[str]:
    """The views ``sql`` reads, with every view they are made of (DuckDB's parser names them; see
    :func:`_names_in`)."""
    known = {name.lower(): name for name in view_names()}
    out: set[str] = set()
    todo = [sql]
    while todo:
        for word in _names_in(todo.pop()):
            name = known.get(word.lower())
            if name is not None and name not in out:
                out.add(name)
                if name in _DERIVED:
                    todo.append(_DERIVED[name])
    return out


@functools.lru_cache(maxsize=256)
def _names_in(sql: str) -> frozenset[str]:
    """The tables ``sql`` (one or more statements) reads, by DuckDB's parser
    (``duckdb.extract_statements``, ``duckdb.get_table_names``): a column that
    shares a view's name (``EXCLUDE (modules, findings)``) defines no view. Where DuckDB cannot
    tell, every word of the SQL (a superset: more views defined, never fewer)."""
    try:
        return frozenset().union(*(duckdb.get_table_names(statement.query, qualified=False)
                                   for statement in duckdb.extract_statements(sql)))
    except duckdb.Error:
        return frozenset(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql))


_DUCKDB_SCALARS = {"string": "VARCHAR", "large_string": "VARCHAR", "bool": "BOOLEAN", "int64": "BIGINT",
                   "int32": "INTEGER", "double": "DOUBLE", "float": "FLOAT", "date32[day]": "DATE"}
"""DuckDB's name of each scalar Arrow type of the store's schemas (by the Arrow type's ``str``)."""


def duckdb_type(t: pa.DataType) -> str:
    """The DuckDB column type of an Arrow type of the store's schemas (strings, integers, floats,
    booleans, dates, UTC timestamps, lists and structs of them).

    Raises:
        TypeError: another Arrow type.
    """
    from audit.pyarrow_without_pandas import pa

    scalar = _DUCKDB_SCALARS.get(str(t))
    if scalar is not None:
        return scalar
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"{duckdb_type(t.value_type)}[]"
    if pa.types.is_struct(t):
        return "STRUCT(" + ", ".join(f'"{f.name}" {duckdb_type(f.type)}' for f in t) + ")"
    raise TypeError(f"no DuckDB type for Arrow type {t}")


def _remote_dataset(store: StoreFiles, table: str, schema: pa.Schema):
    """A table on an object store, read through the same pyarrow filesystem that wrote it (no
    DuckDB extension or separate credentials). The file list is taken when the view is made."""
    import posixpath

    from audit.pyarrow_without_pandas import pa
    import pyarrow.dataset as ds

    from audit.store.schema import PARTITION

    part = ds.partitioning(pa.schema([schema.field(PARTITION[table])]), flavor="hive")
    return ds.dataset(posixpath.join(store.root, table), filesystem=store.fs, format="parquet",
                      partitioning=part, schema=schema)


def _quote(path: str) -> str:
    """Escape a store path for a SQL string literal (the path is ours, not user data)."""
    return path.replace("'", "''")

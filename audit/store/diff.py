"""Which listed adapters still need an audit: a DuckDB anti-join against the store."""

from __future__ import annotations

from collections.abc import Sequence

from audit.pyarrow_without_pandas import pa

from audit.records import AdapterRef
from audit.store.parquet import ParquetStore


def missing_refs(store: ParquetStore, refs: Sequence[AdapterRef], analyzer_version: str) -> list[AdapterRef]:
    """The refs whose (``repo_id@revision``, ``analyzer_version``) has no committed audit, in input order.

    Raises:
        duckdb.Error: the store cannot be read.
    """
    if not refs:
        return []
    con = store.connect(for_sql="adapters_all")
    try:
        listed = pa.table({"i": pa.array(range(len(refs)), pa.int64()),
                           "adapter_id": pa.array([r.adapter_id for r in refs], pa.string())})
        con.register("listed", listed)
        rows = con.execute(
            """SELECT l.i FROM listed l
               ANTI JOIN (SELECT adapter_id FROM adapters_all WHERE analyzer_version = ?) a
               ON l.adapter_id = a.adapter_id
               ORDER BY l.i""",
            [analyzer_version],
        ).fetchall()
    finally:
        con.close()
    return [refs[i] for (i,) in rows]

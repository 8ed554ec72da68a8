"""Compaction: merge a partition's many small files into one, as table formats do.

A nightly scan writes one file per audited adapter; after a year a store holds tens of thousands
of small files and every query pays for opening them. Compaction reads all committed files of a
partition, drops rows already present (the same unit written twice), writes one merged file
(temporary name, then rename) and only then deletes the originals. A crash in between leaves
each row twice, in the merged file and in an original: the views read every row once per key, so
nothing shows twice, and the next compaction removes the leftovers. Files written while
compaction runs are not touched.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from audit.pyarrow_without_pandas import pa
import pyarrow.fs as pafs

from audit.records import new_id
from audit.store.parquet import ParquetStore
from audit.store.schema import DEDUP_KEYS, TABLES


@dataclass
class Compaction:
    """What one compaction did."""

    table: str
    partitions: int = 0
    files_in: int = 0
    rows_in: int = 0
    rows_out: int = 0


def partitions(store: ParquetStore, table: str) -> dict[str, list[str]]:
    """Committed ``.parquet`` files of ``table``, grouped by partition folder."""
    base = posixpath.join(store.root, table)
    infos = store.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    out: dict[str, list[str]] = {}
    for info in infos:
        name = posixpath.basename(info.path)
        if info.type == pafs.FileType.File and name.endswith(".parquet") and not name.startswith("."):
            out.setdefault(posixpath.dirname(info.path), []).append(info.path)
    return out


def compact_table(store: ParquetStore, table: str, min_files: int = 2) -> Compaction:
    """Merge every partition of ``table`` holding at least ``min_files`` files into one file.

    Raises:
        StoreError: a file cannot be read or written (nothing is deleted then).
    """
    from audit.errors import StoreError

    result = Compaction(table)
    schema = TABLES[table]
    for folder, files in sorted(partitions(store, table).items()):
        if len(files) < min_files:
            continue
        import pyarrow.dataset as ds  # here: a scan with nothing to compact does not import it (50 ms)

        try:  # one dataset over the listed files: read in parallel, older files conformed to `schema`
            merged = ds.dataset(sorted(files), schema=schema, filesystem=store.fs, format="parquet").to_table()
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"cannot read {folder} for compaction: {exc}") from exc
        deduped = _dedup(merged, DEDUP_KEYS[table])
        store.write_table(table, deduped, f"compacted-{new_id()}", folder=folder)
        for f in files:
            store.fs.delete_file(f)
        result.partitions += 1
        result.files_in += len(files)
        result.rows_in += merged.num_rows
        result.rows_out += deduped.num_rows
    return result


def compact(store: ParquetStore, min_files: int = 2) -> list[Compaction]:
    """Compact every table of the store (see :func:`compact_table`)."""
    return [compact_table(store, t, min_files) for t in TABLES if partitions(store, t)]


def _dedup(table: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    """Keep the first row of each key."""
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return table
    idx = pa.array(range(table.num_rows), pa.int64())
    keyed = pa.table({**{k: table.column(k) for k in keys}, "_i": idx})
    first = keyed.group_by(list(keys), use_threads=False).aggregate([("_i", "min")]).column("_i_min")
    return table.take(pc.take(first, pc.sort_indices(first)))

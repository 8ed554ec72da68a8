"""The Parquet store: one file per finished unit of work, hive-partitioned, never rewritten.

Layout under the store root (a local folder or any URI pyarrow's filesystems understand, such as
``s3://bucket/prefix``)::

    units/audit_date=2026-11-21/<unit_id>.parquet     one audited adapter: row + modules + findings
    units/audit_date=2026-11-21/<unit_id>-<n>.parquet the n adapters of one worker's call
    runs/run_date=2026-11-21/<run_id>-<n>.parquet     one state of a scan run
    <table>/<partition>=<date>/<name>.parquet         tables added by later features

Crash safety: on a local filesystem each file is written under a hidden temporary name and
renamed into place (a rename is atomic), so a killed process never leaves a half file where
readers look; on an object store a PUT is atomic by itself. A unit is in a single file (with the
other units of its worker's call, which were computed and are committed together), so it is
either committed whole or absent: a unit killed half way is redone by the next scan. Two scans
racing on one adapter both commit; the views pick one unit per (adapter_id, analyzer_version).
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from audit.errors import ConfigurationError, StoreError

if TYPE_CHECKING:  # imported where used: opening a local store to read it needs neither
    from audit.pyarrow_without_pandas import pa
    import pyarrow.fs as pafs
    from pydantic import BaseModel

    from audit.records import AuditResult, FindingRow, RunRow

TMP_PREFIX = ".tmp-"


SMALL_FILE_ROWS = 16
"""Files of at most this many rows (a unit of work, a state of a run) are written plain."""
SMALL_FILE_OPTIONS = {"compression": "none", "use_dictionary": False, "write_statistics": False}
"""Writer options of small files: no compression, dictionary pages or column statistics. On one
row they buy nothing and cost about 1 ms per file (measured: 1.9 ms -> 1.0 ms for pyarrow to
write one realworld unit); a larger file, such as compaction's merge of a day's units, gets
pyarrow's defaults (snappy, dictionaries, statistics)."""


def _is_local_filesystem(filesystem: pafs.FileSystem) -> bool:
    import pyarrow.fs as pafs

    return isinstance(filesystem, pafs.LocalFileSystem)


def _is_uri(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


class ParquetStore:
    """Writes rows to the store and hands out DuckDB connections with views over it.

    Args:
        location: a local folder (created if missing, unless ``create`` is false) or a URI such as
            ``s3://bucket/prefix``.
        filesystem: a pyarrow filesystem to use instead of resolving ``location`` (which is then
            a path inside it).
        create: create a missing local folder (readers pass ``False``: a mistyped path is an
            error, not a new empty store).

    Raises:
        ConfigurationError: the location cannot be opened, is a file, or (``create=False``) does
            not exist.
    """

    def __init__(self, location: str | Path, filesystem: pafs.FileSystem | None = None, *, create: bool = True) -> None:
        loc = str(location)
        self._fs: pafs.FileSystem | None = None
        self._catalog = None
        if filesystem is not None and not _is_local_filesystem(filesystem):
            self._fs, self.root, self.local = filesystem, loc.rstrip("/"), False
            self.location = loc
            return
        if _is_uri(loc):
            from audit.pyarrow_without_pandas import pa
            import pyarrow.fs as pafs

            try:
                self._fs, self.root = pafs.FileSystem.from_uri(loc)
            except (OSError, pa.ArrowException) as exc:
                raise ConfigurationError(f"cannot open store {loc!r}: {exc}") from None
            self.local = False
            self.location = loc
            return
        try:
            path = Path(loc.removeprefix("file://")).expanduser().resolve()
            if path.exists() and not path.is_dir():
                raise ConfigurationError(f"cannot open store {loc!r}: it is a file, not a store folder")
            if not create and not path.exists():
                raise ConfigurationError(f"no store at {loc!r} (a scan creates one: lora-audit scan --store {loc})")
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot open store {loc!r}: {exc}") from None
        self.root, self.local = path.as_posix(), True
        self.location = self.root

    @property
    def fs(self) -> pafs.FileSystem:
        """The pyarrow filesystem the store writes through (a local one made on first use)."""
        if self._fs is None:
            import pyarrow.fs as pafs

            self._fs = pafs.LocalFileSystem()
        return self._fs

    # -- writing ---------------------------------------------------------------------------------

    def write_rows(self, table: str, rows: Sequence[BaseModel] | Sequence[dict], name: str,
                   when: datetime | None = None) -> str | None:
        """Write ``rows`` of ``table`` as one Parquet file ``<name>.parquet`` in the partition of
        ``when`` (default: today, UTC).

        Returns:
            The file's path, or ``None`` when ``rows`` is empty (nothing is written).

        Raises:
            StoreError: the file could not be written (transient: retry the unit).
        """
        if not rows:
            return None
        from audit.pyarrow_without_pandas import pa
        from pydantic import BaseModel

        from audit.store.schema import TABLES

        dicts = [r.model_dump() if isinstance(r, BaseModel) else r for r in rows]
        return self.write_table(table, pa.Table.from_pylist(dicts, schema=TABLES[table]), name, when)

    def write_table(self, table: str, data: pa.Table, name: str, when: datetime | None = None, *,
                    folder: str | None = None) -> str:
        """Write an Arrow table as one file of ``table`` (atomically, see the module docstring).
        A table of at most :data:`SMALL_FILE_ROWS` rows is written with :data:`SMALL_FILE_OPTIONS`.

        Raises:
            StoreError: the file could not be written.
        """
        import pyarrow.parquet as pq

        from audit.records import utcnow
        from audit.store.schema import PARTITION

        if folder is None:
            day = (when or utcnow()).date().isoformat()
            folder = posixpath.join(self.root, table, f"{PARTITION[table]}={day}")
        options = SMALL_FILE_OPTIONS if data.num_rows <= SMALL_FILE_ROWS else {}
        return self._commit(posixpath.join(folder, f"{name}.parquet"),
                            lambda target: pq.write_table(data, target, filesystem=self.fs, **options))

    def _commit(self, final: str, write) -> str:
        """Run ``write(target)`` so that ``final`` appears whole or not at all: on a local store under
        a temporary name renamed into place; on an object store the PUT itself is atomic.

        Raises:
            StoreError: the file could not be written.
        """
        from audit.pyarrow_without_pandas import pa

        folder = posixpath.dirname(final)
        try:
            self.fs.create_dir(folder, recursive=True)
            if self.local:
                tmp = posixpath.join(folder, f"{TMP_PREFIX}{posixpath.basename(final)}-{uuid.uuid4().hex[:8]}.partial")
                write(tmp)
                os.replace(tmp, final)
            else:
                write(final)
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"cannot write {final}: {exc}") from exc
        return final

    def write_blob(self, relpath: str, data: bytes) -> str:
        """Write bytes (an artifact) at ``relpath`` under the store root, atomically.

        Raises:
            StoreError: the file could not be written.
        """
        def write(target: str) -> None:
            with self.fs.open_output_stream(target) as fh:
                fh.write(data)

        return self._commit(posixpath.join(self.root, relpath), write)

    def read_blob(self, relpath: str) -> bytes:
        """Read the bytes at ``relpath`` under the store root.

        Raises:
            StoreError: the file cannot be read.
        """
        from audit.pyarrow_without_pandas import pa

        path = posixpath.join(self.root, relpath)
        try:
            with self.fs.open_input_stream(path) as fh:
                return fh.read()
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc

    def write_result(self, result: AuditResult) -> str | None:
        """Write one unit of work (its adapter row with its modules and findings) as one file."""
        return self.write_results([result])

    def write_results(self, results: Sequence[AuditResult]) -> str | None:
        """Write units of work as one file, committed together (all or none), in the partition of
        the first one's audit day; a caller groups them by day (:func:`audit.pipeline.commit.commit_all`).

        Raises:
            StoreError: the file could not be written (none of the units is committed).
        """
        from audit.store.schema import FINDING_KEYS, MODULE_KEYS

        rows = []
        for result in results:
            row = result.adapter.model_dump()
            row["modules"] = [m.model_dump(include=MODULE_KEYS) for m in result.modules]
            row["findings"] = [f.model_dump(include=FINDING_KEYS) for f in result.findings]
            rows.append(row)
        if not rows:
            return None
        first = results[0].adapter
        name = first.unit_id if len(rows) == 1 else f"{first.unit_id}-{len(rows)}"
        return self.write_rows("units", rows, name, first.audited_at)

    def write_run(self, run: RunRow, seq: int, findings: Sequence[FindingRow] = ()) -> None:
        """Write one state of a run (``seq`` increasing; the view keeps the latest) with the
        findings met while listing (each state repeats them)."""
        from audit.store.schema import RUN_FINDING_KEYS

        row = run.model_dump()
        row["findings"] = [f.model_dump(include=RUN_FINDING_KEYS) for f in findings]
        self.write_rows("runs", [row], f"{run.run_id}-{seq}", run.started_at)

    # -- reading ---------------------------------------------------------------------------------

    def table_glob(self, table: str) -> str:
        return posixpath.join(self.location if not self.local else self.root, table, "*", "*.parquet")

    def has_files(self, table: str) -> bool:
        """Whether any committed file of ``table`` exists (cheap: stops at the first)."""
        base = posixpath.join(self.root, table)
        if self.local:
            return any(Path(base).glob("*/*.parquet"))
        import pyarrow.fs as pafs

        sel = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        return any(i.path.endswith(".parquet") for i in self.fs.get_file_info(sel))

    def partial_files(self) -> list[str]:
        """Temporary files left by killed writers (invisible to readers; safe to delete)."""
        if not self.local:
            return []
        return [p.as_posix() for p in Path(self.root).glob(f"*/*/{TMP_PREFIX}*")]

    def clean_partial_files(self, older_than_s: float = 3600.0) -> int:
        """Delete temporary files older than ``older_than_s`` seconds; returns how many."""
        import time

        n = 0
        for p in self.partial_files():
            try:
                if time.time() - os.path.getmtime(p) > older_than_s:
                    os.remove(p)
                    n += 1
            except FileNotFoundError:
                pass
        return n

    def connect(self, for_sql: str | None = None):
        """A DuckDB connection with the store's views (see :mod:`audit.store.views`); with
        ``for_sql``, only the views that SQL can use. On a local store, a cursor on the store's
        :meth:`catalog` (close it when done; the catalog stays)."""
        from audit.store.views import connect

        return connect(self, for_sql=for_sql)

    def catalog(self):
        """This process's :class:`audit.store.views.Catalog` of this store (made on first use; a
        pickled store, such as one sent to a Ray actor, gets its own)."""
        if self._catalog is None:
            from audit.store.views import Catalog

            self._catalog = Catalog()
        return self._catalog

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_catalog": None}



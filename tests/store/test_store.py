"""The Parquet store: schemas match records, writes are atomic, views deduplicate and hide
uncommitted units."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.adapter_audit import audit_adapter
from audit.records import AdapterRef, AdapterRow, FindingRow, ModuleRow, RunRow
from audit.store import ParquetStore
from audit.store.diff import missing_refs
from synth import SynthAdapter, llama_like


@pytest.mark.parametrize("view, record, extra", [
    ("adapters", AdapterRow, ["audit_date"]), ("modules", ModuleRow, ["audit_date"]),
    ("findings", FindingRow, []), ("runs", RunRow, ["run_date"])])
def test_view_columns_match_records(store, view, record, extra):
    """The public columns are the row records' fields (the contract), whatever the file layout."""
    columns = [d[0] for d in store.connect().execute(f"SELECT * FROM {view} LIMIT 0").description]
    assert sorted(columns) == sorted(list(record.model_fields) + extra)


def _result(tmp_path: Path, name: str = "a", seed: int = 0):
    folder = SynthAdapter(llama_like(2), seed=seed).write(tmp_path / "reg" / name)
    ref = AdapterRef(repo_id=name, revision=f"rev{seed}", registry="test", local_dir=str(folder))
    return ref, audit_adapter(ref)


def test_empty_store_has_queryable_views(store):
    con = store.connect()
    for view in ("adapters", "modules", "findings", "runs", "latest_adapters", "latest_modules"):
        assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)


def test_written_unit_is_visible_and_typed(store, tmp_path):
    _, result = _result(tmp_path)
    store.write_result(result)
    con = store.connect()
    assert con.execute("SELECT count(*) FROM modules").fetchone() == (4,)
    sv, layer = con.execute("SELECT singular_values, layer FROM modules ORDER BY module LIMIT 1").fetchone()
    assert isinstance(sv, list) and len(sv) == 4 and layer == 0
    assert con.execute("SELECT typeof(audited_at) FROM adapters").fetchone() == ("TIMESTAMP WITH TIME ZONE",)


def test_a_unit_written_twice_shows_once(store, tmp_path):
    ref, first = _result(tmp_path)
    second = audit_adapter(ref)  # same adapter, same analyzer version, another unit
    store.write_result(first)
    store.write_result(second)
    con = store.connect()
    assert con.execute("SELECT count(*) FROM adapters_all").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM units_all").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM adapters").fetchone() == (1,)
    assert con.execute("SELECT count(*) FROM modules").fetchone() == (4,)
    assert con.execute("SELECT count(DISTINCT unit_id) FROM modules").fetchone() == (1,)


def test_half_written_unit_is_invisible_and_redone(store, tmp_path):
    ref, result = _result(tmp_path)
    # a writer killed mid-file leaves only its temporary file, which no view reads
    part = Path(store.root) / "units" / "audit_date=2026-01-01"
    part.mkdir(parents=True)
    (part / f".tmp-{result.adapter.unit_id}-dead.parquet.partial").write_bytes(b"PAR1 half a file")
    con = store.connect()
    assert con.execute("SELECT count(*) FROM units_all").fetchone() == (0,)
    assert missing_refs(store, [ref], result.adapter.analyzer_version) == [ref]
    store.write_result(audit_adapter(ref))
    assert store.connect().execute("SELECT count(*) FROM modules").fetchone() == (4,)
    assert missing_refs(store, [ref], result.adapter.analyzer_version) == []


def test_findings_of_a_unit_and_of_a_listing(store, tmp_path):
    from audit.findings import Note
    from audit.pipeline.scan import ScanReport, finish_run, plan, start_run
    from audit.registry.base import Listing

    folder = SynthAdapter(llama_like(1)).write(tmp_path / "reg" / "z")
    (folder / "adapter_model.bin").write_bytes(b"\x80\x02" + b"\0" * 100)
    ref = AdapterRef(repo_id="z", revision="r", registry="test", local_dir=str(folder))
    store.write_result(audit_adapter(ref))
    run = start_run(store, "test")
    report = ScanReport(run_id=run.run_id, registry="test")
    plan(store, run, Listing(refs=[ref], notes=[("broken/x", Note("list", "not_found", "gone", "error"))]), report)
    finish_run(store, run, report)
    rows = store.connect().execute(
        "SELECT repo_id, adapter_id IS NULL, code, severity, unit_id = ? FROM findings ORDER BY repo_id",
        [run.run_id]).fetchall()
    assert rows == [("broken/x", True, "not_found", "error", True), ("z", False, "extra_pickle_file", "info", False)]


def test_diff_is_per_analyzer_version(store, tmp_path):
    ref, result = _result(tmp_path)
    store.write_result(result)
    other, _ = _result(tmp_path, "b", seed=1)
    assert missing_refs(store, [ref, other], result.adapter.analyzer_version) == [other]
    assert missing_refs(store, [ref, other], "spectra-999") == [ref, other]


def test_newer_analyzer_version_adds_rows_and_latest_views_pick_it(store, tmp_path):
    ref, _ = _result(tmp_path)
    store.write_result(audit_adapter(ref, analyzer_version="spectra-1"))
    store.write_result(audit_adapter(ref, analyzer_version="spectra-2"))
    con = store.connect()
    assert con.execute("SELECT count(*) FROM adapters").fetchone() == (2,)
    assert con.execute("SELECT analyzer_version FROM latest_adapters").fetchall() == [("spectra-2",)]
    assert con.execute("SELECT count(*), min(analyzer_version) FROM latest_modules").fetchone() == (4, "spectra-2")


def test_temporary_files_are_never_read(store, tmp_path):
    _, result = _result(tmp_path)
    store.write_result(result)
    part = Path(store.root) / "units" / "audit_date=2026-01-01"
    part.mkdir(parents=True)
    (part / ".tmp-dead-1234.parquet.partial").write_bytes(b"PAR1 half a file")
    assert store.connect().execute("SELECT count(*) FROM adapters").fetchone() == (1,)
    assert len(store.partial_files()) == 1
    assert store.clean_partial_files(older_than_s=0) == 1


def test_run_view_keeps_the_latest_state(store):
    from audit.pipeline.scan import ScanReport, finish_run, start_run

    run = start_run(store, "test")
    con = store.connect()
    assert con.execute("SELECT status FROM runs").fetchall() == [("running",)]
    finish_run(store, run, ScanReport(run_id=run.run_id, registry="test", n_listed=3, n_new=2, n_audited=2))
    assert con.execute("SELECT status, n_listed, n_new, n_audited FROM runs").fetchall() == [("completed", 3, 2, 2)]


def test_store_location_forms(tmp_path):
    assert ParquetStore(f"file://{tmp_path}/s1").local
    from audit.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        ParquetStore("nosuchscheme://bucket/x")


def test_object_store_path_writes_and_reads_through_pyarrow_filesystems(tmp_path):
    """A non-local pyarrow filesystem (fsspec's in-memory one, standing in for S3) goes through
    the same store code: direct atomic PUTs, views over pyarrow datasets."""
    fsspec = pytest.importorskip("fsspec")
    import pyarrow.fs as pafs

    from audit.pipeline.scan import scan
    from audit.registry import LocalRegistry

    memfs = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("memory")))
    store = ParquetStore("/bucket/lora-audit", filesystem=memfs)
    assert not store.local
    assert store.connect().execute("SELECT count(*) FROM adapters").fetchone() == (0,)
    root = tmp_path / "reg"
    SynthAdapter(llama_like(2), seed=1).write(root / "x")
    SynthAdapter(llama_like(1), seed=2).write(root / "y")
    report = scan(LocalRegistry(root, hash_cache=None), store)
    assert report.n_audited == 2
    con = store.connect()
    assert con.execute("SELECT count(*) FROM adapters").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM modules").fetchone() == (6,)
    assert con.execute("SELECT status FROM runs").fetchall() == [("completed",)]
    again = scan(LocalRegistry(root, hash_cache=None), store)
    assert again.n_new == 0
    names = [i.path for i in memfs.get_file_info(pafs.FileSelector("/bucket/lora-audit", recursive=True))]
    assert not any(".tmp-" in n for n in names)


def test_compaction_merges_files_and_survives_an_interruption(store, tmp_path):
    from audit.store.compact import compact, partitions

    refs = []
    for i in range(5):
        ref, result = _result(tmp_path, f"c{i}", seed=i)
        store.write_result(result)
        refs.append(ref)
    store.write_result(audit_adapter(refs[0]))  # a second unit for one adapter
    con = store.connect()
    before = con.execute("SELECT adapter_id, unit_id, n_modules FROM adapters ORDER BY 1").fetchall()
    mods = con.execute("SELECT count(*) FROM modules").fetchone()
    (folder, files), = partitions(store, "units").items()
    assert len(files) == 6
    # an interrupted compaction: the merged file exists, the originals were not deleted yet
    import pyarrow.parquet as pq
    merged = pq.read_table(files[0], partitioning=None)
    store.write_table("units", merged, "compacted-interrupted", folder=folder)
    assert con.execute("SELECT adapter_id, unit_id, n_modules FROM adapters ORDER BY 1").fetchall() == before
    assert con.execute("SELECT count(*) FROM modules").fetchone() == mods
    [done] = [c for c in compact(store) if c.table == "units"]
    assert (done.files_in, done.rows_in, done.rows_out) == (7, 7, 6)
    assert len(partitions(store, "units")[folder]) == 1
    con = store.connect()
    assert con.execute("SELECT adapter_id, unit_id, n_modules FROM adapters ORDER BY 1").fetchall() == before
    assert con.execute("SELECT count(*) FROM units_all").fetchone() == (6,)
    assert con.execute("SELECT count(*) FROM modules").fetchone() == mods
    from audit.version import ANALYZER_VERSION

    assert missing_refs(store, refs, ANALYZER_VERSION) == []


def test_files_written_before_a_column_existed_read_as_null(store, tmp_path):
    """Columns are only ever added: files of an older version show NULL in the new columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, result = _result(tmp_path)
    store.write_result(result)
    row = result.adapter.model_dump(exclude={"kind"})
    row["unit_id"], row["adapter_id"] = "older-unit", "older@r"
    folder = Path(store.root) / "units" / "audit_date=2026-01-02"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row]), folder / "older-unit.parquet")  # no kind, modules, findings
    con = store.connect()
    rows = con.execute("SELECT unit_id, kind FROM adapters ORDER BY unit_id").fetchall()
    assert ("older-unit", None) in rows and (result.adapter.unit_id, "adapter") in rows
    assert con.execute("SELECT count(*) FROM modules WHERE unit_id = 'older-unit'").fetchone() == (0,)


def test_unit_files_are_written_plain_and_large_files_compressed(store, tmp_path):
    """A one-row unit skips compression, dictionaries and statistics (they cost a millisecond per
    file and buy nothing on one row); a file of many rows keeps pyarrow's defaults; both read
    back the same through the views."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from audit.store.parquet import SMALL_FILE_ROWS

    _, result = _result(tmp_path)
    path = store.write_result(result)
    meta = pq.ParquetFile(path).metadata
    columns = [meta.row_group(0).column(i) for i in range(meta.num_columns)]
    assert {c.compression for c in columns} == {"UNCOMPRESSED"}
    assert not any(c.is_stats_set for c in columns)
    assert not any(c.has_dictionary_page for c in columns)
    sv = store.connect().execute("SELECT singular_values FROM modules ORDER BY module").fetchall()
    assert [tuple(s) for (s,) in sv] == [tuple(m.singular_values) for m in sorted(result.modules, key=lambda m: m.module)]

    big = pa.table({"x": list(range(SMALL_FILE_ROWS + 1))})
    meta = pq.ParquetFile(store.write_table("scratch", big, "big", folder=str(tmp_path / "scratch"))).metadata
    assert meta.row_group(0).column(0).compression == "SNAPPY"
    assert meta.row_group(0).column(0).is_stats_set


def test_a_query_defines_only_the_views_it_uses_and_reads_the_same_rows(store, tmp_path):
    import pyarrow as pa

    from audit.store.schema import PARTITION, TABLES
    from audit.store.views import connect, duckdb_type, view_names

    _, result = _result(tmp_path)
    store.write_result(result)

    def fresh():  # a store object of its own: its catalog holds only the views of the next connect
        return ParquetStore(store.root)

    con = connect(fresh(), for_sql="SELECT 1")
    assert con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone() == (0,)
    sql = "SELECT adapter_id, module, stable_rank FROM Latest_Modules ORDER BY module"
    lazy = connect(fresh(), for_sql=sql)
    made = {r[0] for r in lazy.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {"latest_modules", "modules", "latest_adapters", "adapters", "units_all"} <= made
    assert not {"classifiers_all", "verdicts_all", "current_verdicts"} & made and len(made) < len(view_names())
    assert lazy.execute(sql).fetchall() == fresh().connect().execute(sql).fetchall() != []
    # DuckDB's parser names the tables: `modules` as a column of adapters_all (EXCLUDE (modules,
    # findings)) defines no view; statements joined by ';' each count
    bare = connect(fresh(), for_sql="SELECT count(*) FROM adapters_all")
    assert {r[0] for r in bare.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()} == {
        "adapters_all", "units_all"}
    two = connect(fresh(), for_sql="SELECT * FROM runs_all; SELECT * FROM promoted_classifiers")
    made = {r[0] for r in two.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {"runs_all", "promoted_classifiers", "classifiers_all"} <= made and "modules" not in made
    # the empty tables typed in SQL have the types DuckDB gives the Arrow schemas themselves
    import duckdb

    full = connect(store)
    ref = duckdb.connect()
    for table, schema in TABLES.items():
        empty = pa.Table.from_pylist([], schema=schema.append(pa.field(PARTITION[table], pa.date32())))
        ref.register("arrow_empty", empty)
        want = ref.execute("SELECT column_name, column_type FROM (DESCRIBE arrow_empty)").fetchall()
        got = full.execute(f"SELECT column_name, column_type FROM (DESCRIBE _empty_{table})").fetchall()
        assert got == [tuple(w) for w in want], table
        ref.unregister("arrow_empty")
    assert duckdb_type(pa.list_(pa.struct([("a", pa.int64())]))) == 'STRUCT("a" BIGINT)[]'


def test_connections_of_a_local_store_share_one_catalog_that_sees_later_files(store, tmp_path):
    """A scan's steps each connect: the views are defined once per store object (a cursor on one
    catalog), a view made while its table had no file is redefined once it has one, and a view
    made early reads files written after it; a pickled store (what a Ray actor gets) has none."""
    import pickle

    sql = "SELECT count(*) FROM latest_adapters"
    first = store.connect(for_sql=sql)
    assert first.execute(sql).fetchone() == (0,)  # no unit yet: over the empty typed table
    assert store.catalog().defined["units_all"] is False
    _, result = _result(tmp_path)
    store.write_result(result)
    second = store.connect(for_sql=sql)
    assert store.catalog().defined["units_all"] is True
    assert second.execute(sql).fetchone() == (1,) == first.execute(sql).fetchone()
    views = "SELECT count(*) FROM duckdb_views() WHERE NOT internal"
    n_views = second.execute(views).fetchone()
    _, other = _result(tmp_path, "b", seed=1)
    store.write_result(other)
    third = store.connect(for_sql=sql)
    assert third.execute(views).fetchone() == n_views  # nothing defined again
    assert third.execute(sql).fetchone() == (2,) == first.execute(sql).fetchone()  # later files are read
    assert third.execute("SELECT current_setting('parquet_metadata_cache')").fetchone() == (True,)
    more = store.connect(for_sql="SELECT count(*) FROM findings")  # views added to the same catalog
    assert more.execute(views).fetchone()[0] > n_views[0]
    assert pickle.loads(pickle.dumps(store))._catalog is None
    for con in (first, second, third, more):
        con.close()
    assert store.connect(for_sql=sql).execute(sql).fetchone() == (2,)  # closing a cursor keeps the catalog


def test_arrow_conversions_do_not_import_pandas_and_pandas_still_works():
    """audit.pyarrow_without_pandas: writing store rows imports no pandas (pyarrow would, on its first conversion),
    and a later explicit pandas round trip through pyarrow still works in that process."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from audit.pyarrow_without_pandas import pa\n"
            "pa.Table.from_pylist([{'a': 1, 'b': [1.5]}])\n"
            "print('BEFORE', 'pandas' in sys.modules)\n"
            "import pandas as pd\n"
            "t = pa.Table.from_pandas(pd.DataFrame({'x': [1.0, float('nan')]}))\n"
            "print('NULLS', t.column('x').null_count, 'SUM', t.to_pandas().x.sum())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "BEFORE False" in out and "NULLS 1 SUM 1.0" in out, out


def test_a_jobs_units_are_committed_in_one_file_per_audit_day_or_deferred_together(store, tmp_path, monkeypatch):
    """commit_all: the spectra units of one job land in one file of the units table (one per audit
    day), each reported once, in order; a store failure defers all of that file's units; a lone
    unit keeps its own file."""
    from datetime import timedelta

    from audit.errors import StoreError
    from audit.pipeline.commit import Written, commit_all
    from audit.records import Deferred

    results = [_result(tmp_path, f"a{i}", seed=i)[1] for i in range(3)]
    day_before = results[2].model_copy(update={"adapter": results[2].adapter.model_copy(
        update={"audited_at": results[2].adapter.audited_at - timedelta(days=1)})})
    reported = commit_all(store, [results[0], results[1], day_before])
    assert [r.repo_id for r in reported] == ["a0", "a1", "a2"] and all(isinstance(r, Written) for r in reported)
    files = sorted(Path(store.root).glob("units/*/*.parquet"))
    assert len(files) == 2 and files[0].parent != files[1].parent  # the day before has its own file
    con = store.connect()
    assert con.execute("SELECT repo_id, count(*) FROM adapters GROUP BY 1 ORDER BY 1").fetchall() == [
        ("a0", 1), ("a1", 1), ("a2", 1)]
    assert con.execute("SELECT count(*) FROM modules WHERE adapter_id = ?", [results[1].adapter.adapter_id]).fetchone()[0] == len(
        results[1].modules)

    def refuse(*args, **kwargs):
        raise StoreError("disk full")

    monkeypatch.setattr(ParquetStore, "write_rows", refuse)
    again = [_result(tmp_path, f"b{i}", seed=10 + i)[1] for i in range(2)]
    deferred = commit_all(store, again)
    assert [type(r) for r in deferred] == [Deferred, Deferred] and all("disk full" in r.error for r in deferred)

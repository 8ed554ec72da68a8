"""The Parquet store: schemas match records, writes are atomic, views deduplicate and hide
uncommitted units."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.records import AdapterRef, AdapterRow, FindingRow, ModuleRow, RunRow
from audit.store import ParquetStore
from audit.store.diff import missing_refs
from audit.store.schema import TABLES
from audit.unit import audit_adapter
from synth import SynthAdapter, llama_like


@pytest.mark.parametrize("table, record", [("adapters", AdapterRow), ("modules", ModuleRow),
                                           ("findings", FindingRow), ("runs", RunRow)])
def test_schema_matches_record(table, record):
    assert TABLES[table].names == list(record.model_fields)


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
    assert con.execute("SELECT count(*) FROM adapters").fetchone() == (1,)
    assert con.execute("SELECT count(*) FROM modules").fetchone() == (4,)
    assert con.execute("SELECT count(DISTINCT unit_id) FROM modules").fetchone() == (1,)


def test_uncommitted_unit_is_invisible_and_redone(store, tmp_path):
    ref, result = _result(tmp_path)
    # a crash after modules and findings were written, before the adapters row (the commit)
    store.write_rows("modules", result.modules, result.adapter.unit_id)
    con = store.connect()
    assert con.execute("SELECT count(*) FROM modules_all").fetchone() == (4,)
    assert con.execute("SELECT count(*) FROM modules").fetchone() == (0,)
    assert missing_refs(store, [ref], result.adapter.analyzer_version) == [ref]
    store.write_result(audit_adapter(ref))
    assert store.connect().execute("SELECT count(*) FROM modules").fetchone() == (4,)
    assert missing_refs(store, [ref], result.adapter.analyzer_version) == []


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
    part = Path(store.root) / "adapters" / "audit_date=2026-01-01"
    part.mkdir(parents=True)
    (part / ".tmp-dead-1234.parquet.partial").write_bytes(b"PAR1 half a file")
    assert store.connect().execute("SELECT count(*) FROM adapters").fetchone() == (1,)
    assert len(store.partial_files()) == 1
    assert store.clean_partial_files(older_than_s=0) == 1


def test_run_view_keeps_the_latest_state(store):
    from audit.scan import ScanReport, finish_run, start_run

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

"""The local registry: discovery at any depth, content-hash revisions, the hash cache."""

from __future__ import annotations

import os

import pytest

from audit.errors import ConfigurationError
from audit.pipeline.scan import scan
from audit.registry import LocalRegistry, open_registry
from audit.registry.hashcache import ContentHashCache
from synth import SynthAdapter, llama_like


def _registry(tmp_path):
    root = tmp_path / "reg"
    SynthAdapter(llama_like(1), seed=1).write(root / "team-a" / "adapter-1")
    SynthAdapter(llama_like(1), seed=2).write(root / "team-a" / "deep" / "er" / "adapter-2")
    SynthAdapter(llama_like(1), seed=3, card="---\ntags: [dpo]\n---\n").write(root / "adapter-3")
    (root / ".hidden" / "x").mkdir(parents=True)
    (root / ".hidden" / "x" / "adapter_config.json").write_text("{}")
    (root / "not-an-adapter").mkdir()
    (root / "not-an-adapter" / "model.safetensors").write_bytes(b"")
    return root


def test_lists_adapters_at_any_depth(tmp_path):
    listing = LocalRegistry(_registry(tmp_path), hash_cache=None).list_adapters()
    assert [r.repo_id for r in listing.refs] == ["adapter-3", "team-a/adapter-1", "team-a/deep/er/adapter-2"]
    assert all(len(r.revision) == 64 and r.local_dir for r in listing.refs)
    names = {f.name for f in listing.refs[0].files}
    assert names == {"adapter_config.json", "adapter_model.safetensors", "README.md"}


def test_revision_is_a_content_hash(tmp_path):
    root = _registry(tmp_path)
    before = {r.repo_id: r.revision for r in LocalRegistry(root, hash_cache=None).list_adapters().refs}
    card = root / "adapter-3" / "README.md"
    card.write_text(card.read_text() + "\nedited\n")
    after = {r.repo_id: r.revision for r in LocalRegistry(root, hash_cache=None).list_adapters().refs}
    assert after["adapter-3"] != before["adapter-3"]
    assert {k: v for k, v in after.items() if k != "adapter-3"} == {k: v for k, v in before.items() if k != "adapter-3"}
    # a copy elsewhere has the same revision
    import shutil

    shutil.copytree(root / "team-a" / "adapter-1", tmp_path / "copy" / "adapter-1")
    copy = LocalRegistry(tmp_path / "copy", hash_cache=None).list_adapters().refs[0]
    assert copy.revision == before["team-a/adapter-1"]


def test_hash_cache_reuses_unchanged_files(tmp_path, monkeypatch):
    root = _registry(tmp_path)
    cache = tmp_path / "hashes.parquet"
    first = LocalRegistry(root, hash_cache=cache).list_adapters()
    assert cache.is_file()
    calls = []
    import audit.registry.hashcache as hc

    real = hc.file_sha256
    monkeypatch.setattr(hc, "file_sha256", lambda p: calls.append(p) or real(p))
    second = LocalRegistry(root, hash_cache=cache).list_adapters()
    assert calls == []
    assert [r.revision for r in first.refs] == [r.revision for r in second.refs]
    target = root / "adapter-3" / "adapter_config.json"
    target.write_text(target.read_text().replace('"lora_alpha": 16', '"lora_alpha": 32'))
    os.utime(target, ns=(1, 1))
    third = LocalRegistry(root, hash_cache=cache).list_adapters()
    assert [p.name for p in calls] == ["adapter_config.json"]
    assert third.refs[0].revision != first.refs[0].revision


def test_damaged_cache_is_only_slower(tmp_path):
    cache = tmp_path / "hashes.parquet"
    cache.write_bytes(b"not parquet")
    c = ContentHashCache(cache)
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    assert c.sha256(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_hash_cache_is_read_once_on_first_use_and_a_foreign_schema_counts_as_damaged(tmp_path, monkeypatch):
    """A registry opened only to fetch (what an executor does after the listing) reads no cache
    file; a listing reads it once; a Parquet file of another schema is ignored, not trusted."""
    import pickle

    import pyarrow as pa
    import pyarrow.parquet as pq

    import audit.registry.hashcache as hc

    root = _registry(tmp_path)
    cache = tmp_path / "hashes.parquet"
    first = LocalRegistry(root, hash_cache=cache).list_adapters()
    reads, hashed = [], []
    real_file, real_hash = hc.pq.ParquetFile, hc.file_sha256
    monkeypatch.setattr(hc.pq, "ParquetFile", lambda p: reads.append(p) or real_file(p))
    monkeypatch.setattr(hc, "file_sha256", lambda p: hashed.append(p) or real_hash(p))
    opened = LocalRegistry(root, hash_cache=cache)
    assert opened.fetch(first.refs[0]).local_dir == first.refs[0].local_dir and reads == []
    assert [r.revision for r in opened.list_adapters().refs] == [r.revision for r in first.refs]
    assert reads == [cache] and hashed == []
    copy = pickle.loads(pickle.dumps(opened))  # a registry object sent to a Ray actor
    assert [r.revision for r in copy.list_adapters().refs] == [r.revision for r in first.refs] and hashed == []
    pq.write_table(pa.table({"path": ["x"], "sha256": ["y"]}), cache)  # not the cache's schema
    again = LocalRegistry(root, hash_cache=cache).list_adapters()
    assert [r.revision for r in again.refs] == [r.revision for r in first.refs] and hashed


def test_scan_reads_card_method_and_changed_adapter_is_reaudited(tmp_path, store):
    root = _registry(tmp_path)
    report = scan(LocalRegistry(root, hash_cache=None), store)
    assert (report.n_listed, report.n_new) == (3, 3)
    con = store.connect()
    assert con.execute("SELECT method, method_source FROM adapters WHERE repo_id = 'adapter-3'").fetchone() == (
        "dpo", "card:tags")
    SynthAdapter(llama_like(1), seed=99).write(root / "team-a" / "adapter-1")
    again = scan(LocalRegistry(root, hash_cache=None), store)
    assert (again.n_new, again.n_audited) == (1, 1)
    revs = con.execute("SELECT count(DISTINCT revision) FROM adapters WHERE repo_id = 'team-a/adapter-1'").fetchone()
    assert revs == (2,)


def test_bad_registry_path():
    with pytest.raises(ConfigurationError):
        LocalRegistry("/no/such/folder")
    with pytest.raises(ConfigurationError):
        open_registry("local:/no/such/folder")


def test_in_process_spectra_run_with_one_blas_thread_and_restore_it(tmp_path, store, monkeypatch):
    """The in-process executor runs the spectra with numpy's BLAS limited to one thread (as a Ray
    actor of one CPU does) and gives the process its threads back when the audits end."""
    import numpy  # noqa: F401 - loads the BLAS
    from threadpoolctl import threadpool_info, threadpool_limits

    from audit.pipeline.executors import Analyzers, InProcessExecutor

    def blas_threads() -> set[int]:
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    seen: list[set[int]] = []
    real_run = Analyzers.run
    monkeypatch.setattr(Analyzers, "run", lambda self, job: (seen.append(blas_threads()), real_run(self, job))[1])
    root = _registry(tmp_path)
    refs = LocalRegistry(root, hash_cache=None).list_adapters().refs
    with threadpool_limits(2, user_api="blas"):  # what the process has outside the audits
        reports = list(InProcessExecutor(LocalRegistry(root, hash_cache=None), store).map(refs))
        after = blas_threads()
    assert len(reports) == len(refs) == len(seen) == 3
    assert all(s == {1} for s in seen) and after == {2}

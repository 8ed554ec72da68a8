"""The nightly-scan Prefect flow on Ray: same rows as the in-process scan, fault tolerance of the
actor pool, concurrent scans."""

from __future__ import annotations

import os
import signal
import sys
import threading

import pytest

from audit.pipeline.commit import Written
from audit.pipeline.raypool import RayExecutor
from audit.pipeline.scan import InProcessExecutor, scan
from audit.registry import LocalRegistry
from audit.store import ParquetStore
from synth import SynthAdapter, llama_like

pytestmark = pytest.mark.slow


def _rows(store: ParquetStore) -> list[tuple]:
    con = store.connect()
    return con.execute(
        """SELECT a.repo_id, a.revision, a.status, a.n_modules, m.module, m.singular_values, m.stable_rank
           FROM adapters a LEFT JOIN modules m USING (adapter_id, unit_id) ORDER BY 1, 5""").fetchall()


def test_flow_on_ray_gives_the_same_rows_as_in_process(realworld, tmp_path, ray_session, prefect_harness):
    from flows.nightly_scan import nightly_scan

    state = nightly_scan(registry=str(realworld), store=str(tmp_path / "ray"), workers=2, return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert summary["n_new"] == summary["n_audited"] == summary["n_listed"] > 40
    scan(LocalRegistry(realworld, hash_cache=None), ParquetStore(tmp_path / "local"))
    assert _rows(ParquetStore(tmp_path / "ray")) == _rows(ParquetStore(tmp_path / "local"))
    again = nightly_scan(registry=str(realworld), store=str(tmp_path / "ray"), workers=2)
    assert again["n_new"] == 0 and again["n_audited"] == 0
    runs = ParquetStore(tmp_path / "ray").connect().execute(
        "SELECT status, n_new, report_path FROM runs ORDER BY started_at").fetchall()
    assert [r[:2] for r in runs] == [("completed", summary["n_new"]), ("completed", 0)]
    # the flow wrote each run's report beside the store and recorded where
    assert [r[2] for r in runs] == [summary["report_path"], again["report_path"]]
    html = (tmp_path / "ray" / "reports" / f"run-{summary['run_id']}.html").read_text()
    assert summary["run_id"] in html and "data:image/png;base64," in html


def _synthetic_registry(root, n: int):
    for i in range(n):
        SynthAdapter(llama_like(2, r=8, d=256, kv=64), seed=i).write(root / f"a{i:03d}")
    return LocalRegistry(root, hash_cache=None)


def test_killed_actor_is_restarted_and_nothing_is_lost(tmp_path, ray_session):
    import ray

    registry = _synthetic_registry(tmp_path / "reg", 30)
    refs = registry.list_adapters().refs
    store = ParquetStore(tmp_path / "store")
    executor = RayExecutor(registry.name, store, workers=2)
    outcomes, killed = [], []
    for outcome in executor.map(refs):
        outcomes.append(outcome)
        if not killed:
            victim = executor.actors[0]
            pid = ray.get(victim.pid.remote())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    assert killed
    assert len(outcomes) == len(refs)
    assert all(isinstance(o, Written) and o.status == "ok" for o in outcomes)
    assert {o.adapter_id for o in outcomes} == {r.adapter_id for r in refs}
    con = store.connect()
    assert con.execute("SELECT count(DISTINCT adapter_id) FROM adapters").fetchone() == (len(refs),)


class PoisonRegistry(LocalRegistry):
    """Fetching one particular adapter kills the worker process (as a parser crash would)."""

    poison = "a001"

    def fetch(self, ref):
        if ref.repo_id == self.poison:
            os._exit(3)
        return super().fetch(ref)


def _poisoned(tmp_path, n: int):
    """A registry of ``n`` adapters whose a001 kills the worker that fetches it, its refs, a store."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors unpickle PoisonRegistry
    _synthetic_registry(tmp_path / "reg", n)
    registry = PoisonRegistry(tmp_path / "reg", hash_cache=None)
    return registry, registry.list_adapters().refs, ParquetStore(tmp_path / "store")


def test_adapter_that_kills_every_worker_becomes_a_finding(tmp_path, ray_session):
    registry, refs, store = _poisoned(tmp_path, 6)
    executor = RayExecutor(registry, store, workers=2, max_restarts=2)
    outcomes = {o.repo_id: o for o in executor.map(refs)}
    assert set(outcomes) == {r.repo_id for r in refs}
    assert outcomes["a001"].status == "failed"
    assert outcomes["a001"].error_codes == ("worker_crashed",)
    assert store.connect().execute("SELECT code FROM findings WHERE repo_id = 'a001'").fetchall() == [
        ("worker_crashed",)]
    assert all(o.status == "ok" for k, o in outcomes.items() if k != "a001")


def test_spectra_calls_carry_several_adapters_in_listing_order():
    """batch_jobs: up to MAX_BATCH adapters a call, at most a quarter of each worker's share, a
    call closed before it passes MAX_BATCH_BYTES, every ref once and in order; jobs kept."""
    from audit.analyzers.base import Job, Target
    from audit.pipeline.executors import MAX_BATCH, MAX_BATCH_BYTES, batch_jobs
    from audit.records import AdapterRef, FileEntry

    def refs(n, size=1000):
        return [AdapterRef(repo_id=f"r{i:03d}", revision="x", registry="test",
                           files=(FileEntry(name="adapter_model.safetensors", size=size),)) for i in range(n)]

    names = ("spectra",)
    many = refs(440)
    jobs = batch_jobs(many, names, workers=2)
    assert [t.ref for j in jobs for t in j.targets] == many
    assert {len(j.targets) for j in jobs} == {MAX_BATCH} and all(j.analyzers == names for j in jobs)
    assert {len(j.targets) for j in batch_jobs(refs(10), names, workers=2)} == {1}  # every worker busy to the end
    assert [len(j.targets) for j in batch_jobs(refs(24), names, workers=1)] == [6] * 4
    big = refs(6, size=MAX_BATCH_BYTES // 2 + 1)
    assert [len(j.targets) for j in batch_jobs(big * 10, names, workers=1)] == [1] * 60
    given = Job((Target(ref=many[0]),), ("other",))
    assert batch_jobs([given], names, workers=2) == [given]


def test_a_call_of_several_adapters_that_kills_its_workers_is_retried_one_by_one(tmp_path, ray_session):
    """When a call of several adapters kills its actor until the restarts are spent, each of its
    adapters is retried alone: only the one that kills a worker by itself is a worker_crashed
    finding, and every adapter is reported once."""
    registry, refs, store = _poisoned(tmp_path, 24)
    executor = RayExecutor(registry, store, workers=1, max_restarts=1)
    outcomes = list(executor.map(refs))  # calls of 6: a001 shares the first with a000, a002...
    assert sorted(o.repo_id for o in outcomes) == sorted(r.repo_id for r in refs)
    by_repo = {o.repo_id: o for o in outcomes}
    assert by_repo["a001"].status == "failed" and by_repo["a001"].error_codes == ("worker_crashed",)
    assert all(o.status == "ok" for k, o in by_repo.items() if k != "a001")
    con = store.connect()
    assert con.execute("SELECT repo_id FROM findings WHERE code = 'worker_crashed'").fetchall() == [("a001",)]
    assert con.execute("SELECT count(DISTINCT adapter_id) FROM adapters").fetchone() == (len(refs),)


def test_two_scans_at_once_leave_one_row_per_adapter(tmp_path):
    registry_root = tmp_path / "reg"
    _synthetic_registry(registry_root, 20)
    store_path = tmp_path / "store"
    reports, errors = [], []
    barrier = threading.Barrier(2, timeout=60)

    class RacingExecutor(InProcessExecutor):
        """Both scans have diffed against the store before either writes: a real race."""

        def map(self, refs):
            barrier.wait()
            yield from super().map(refs)

    def run():
        try:
            registry = LocalRegistry(registry_root, hash_cache=None)
            store = ParquetStore(store_path)
            reports.append(scan(registry, store, executor=RacingExecutor(registry, store)))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    con = ParquetStore(store_path).connect()
    assert con.execute("SELECT count(*) FROM units_all").fetchone() == (40,)  # both audited everything
    assert con.execute("SELECT count(*), count(DISTINCT adapter_id) FROM adapters").fetchone() == (20, 20)
    assert con.execute("SELECT count(*) FROM modules").fetchone() == (80,)
    assert con.execute("SELECT count(*) FROM runs WHERE status = 'completed'").fetchone() == (2,)
    assert [r.n_audited for r in reports] == [20, 20]


def test_deferred_outcomes_are_not_written(tmp_path):
    from audit.errors import RegistryUnavailableError

    class Flaky(LocalRegistry):
        def fetch(self, ref):
            if ref.repo_id == "a002":
                raise RegistryUnavailableError("timeout", repo_id=ref.repo_id)
            return super().fetch(ref)

    _synthetic_registry(tmp_path / "reg", 4)
    store = ParquetStore(tmp_path / "store")
    report = scan(Flaky(tmp_path / "reg", hash_cache=None), store)
    assert (report.n_audited, report.n_deferred) == (3, 1)
    assert "a002" in report.deferred[0]
    again = scan(LocalRegistry(tmp_path / "reg", hash_cache=None), store)
    assert (again.n_new, again.n_audited) == (1, 1)
    assert "timeout" in report.deferred[0]  # the reason travels to the report the CLI prints
    assert ParquetStore(tmp_path / "store").connect().execute(
        "SELECT count(*) FROM adapters WHERE repo_id = 'a002'").fetchone() == (1,)  # written once, by the rerun


def test_recalibrate_flow_runs_the_recalibration_cycle(tmp_path, prefect_harness):
    from flows.recalibrate import recalibrate
    from synth import labelled_registry

    root = labelled_registry(tmp_path / "reg", {"sft": (4, 4)})
    scan(LocalRegistry(root, hash_cache=None), ParquetStore(tmp_path / "store"))
    state = recalibrate(store=str(tmp_path / "store"), return_state=True)
    assert state.is_completed()
    result = state.result()
    sft = result["methods"]["sft"]
    assert sft["promoted"] and sft["classifier_id"] == "sft.drift.v1"
    assert result["methods"]["any"]["classifier_id"] == "any.drift.v1"
    assert sorted(result["reaudit"]["promoted"]) == ["any.drift.v1", "sft.drift.v1"]
    assert result["reaudit"]["n_scored"] == 8 and result["reaudit"]["flipped"] == []


def test_actors_started_during_the_listing_are_removed_when_a_later_step_fails(tmp_path, ray_session, monkeypatch):
    """A scan on Ray starts its actors while the registry is listed; when the next step fails,
    the run is recorded as failed and those actors are killed, not left running."""
    from audit.pipeline.scan import Placement, Steps, run_scan

    SynthAdapter(llama_like(1, r=4, d=32, kv=8), seed=0).write(tmp_path / "reg" / "a0")
    started, closed = [], []
    monkeypatch.setattr(RayExecutor, "start", lambda self: started.append(self))
    real_close = RayExecutor.close
    monkeypatch.setattr(RayExecutor, "close", lambda self: (closed.append(self), real_close(self)))

    def failing_plan(*args, **kwargs):
        raise RuntimeError("the diff failed")

    store = ParquetStore(tmp_path / "store")
    with pytest.raises(RuntimeError, match="the diff failed"):
        run_scan(LocalRegistry(tmp_path / "reg", hash_cache=None), store, placement=Placement(workers=1),
                 steps=Steps(plan=failing_plan), judge=False, echo=None)
    assert len(started) == 1 and closed == started
    assert store.connect().execute("SELECT status FROM runs").fetchall() == [("failed",)]


def test_a_scan_stops_the_ray_it_started_and_leaves_a_callers_ray_running(tmp_path, ray_session):
    """The Ray a scan started is shut down on a thread once the audits are done (its last steps
    run meanwhile): after the scan no Ray process of it is left, and a second scan in the same
    process starts Ray again. A Ray the caller started (this session's) keeps running."""
    import subprocess

    from audit.pipeline.scan import Placement, run_scan

    for k in range(2):
        SynthAdapter(llama_like(1, r=4, d=32, kv=8), seed=k).write(tmp_path / "reg" / f"a{k}")
    code = f"""
import ray, audit.pipeline.raypool as rp
from audit.pipeline.scan import Placement, run_scan
from audit.registry import LocalRegistry
from audit.store import ParquetStore
for i in range(2):
    r = run_scan(LocalRegistry({str(tmp_path / 'reg')!r}, hash_cache=None), ParquetStore({str(tmp_path)!r} + f'/s{{i}}'),
                 placement=Placement(workers=1), judge=False, echo=None)
    stopping = rp._stopping
    stopping.join(timeout=60)
    print("RUN", i, r.n_audited, stopping.is_alive(), ray.is_initialized())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [ln for ln in out.stdout.splitlines() if ln.startswith("RUN")] == ["RUN 0 2 False False", "RUN 1 2 False False"]
    # a Ray this process had already started is the caller's: the scan leaves it running
    report = run_scan(LocalRegistry(tmp_path / "reg", hash_cache=None), ParquetStore(tmp_path / "mine"),
                      placement=Placement(workers=1), judge=False, echo=None)
    assert report.n_audited == 2 and ray_session.is_initialized()
    assert ray_session.get(ray_session.put(1)) == 1

"""The scan, as a sequence of steps: start the run, list, diff, audit and commit, finish.

Each step is a plain function so that the Prefect flow (``flows/nightly_scan.py``) can wrap them
as tasks; :func:`scan` chains them in-process for library use and tests. How the audits run is an
:class:`Executor`: in this process here, a Ray actor pool in :mod:`audit.raypool`. Either way the
worker that audits a unit also commits it to the store, so results land as units finish and the
driver only counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from audit.limits import DEFAULT_LIMITS, Limits
from audit.progress import ProgressSink, current
from audit.records import AdapterRef, FindingRow, RunRow, new_id, utcnow
from audit.registry.base import Listing, Registry
from audit.store.diff import missing_refs
from audit.store.parquet import ParquetStore
from audit.unit import finding_rows
from audit.version import ANALYZER_VERSION
from audit.worker import Deferred, Reported, audit_and_store


class Executor(Protocol):
    """Audits refs and commits each unit, yielding a report per ref as it finishes."""

    def map(self, refs: Sequence[AdapterRef]) -> Iterator[Reported]: ...


class InProcessExecutor:
    """Audits one adapter after the other in this process."""

    def __init__(self, registry: Registry, store: ParquetStore, limits: Limits = DEFAULT_LIMITS,
                 analyzer_version: str = ANALYZER_VERSION) -> None:
        self.registry, self.store = registry, store
        self.limits, self.analyzer_version = limits, analyzer_version

    def map(self, refs: Sequence[AdapterRef]) -> Iterator[Reported]:
        for ref in refs:
            yield audit_and_store(self.registry, self.store, ref, limits=self.limits,
                                  analyzer_version=self.analyzer_version)


@dataclass
class ScanReport:
    """What a scan did (also written to the ``runs`` table)."""

    run_id: str
    registry: str
    n_listed: int = 0
    n_new: int = 0
    n_audited: int = 0
    n_failed: int = 0
    n_deferred: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    deferred: list[str] = field(default_factory=list)
    findings: list[FindingRow] = field(default_factory=list)
    """Problems met while listing (stored with the run)."""
    elapsed_s: float = 0.0


def start_run(store: ParquetStore, registry_name: str, run_id: str | None = None,
              analyzer_version: str = ANALYZER_VERSION) -> RunRow:
    """Record that a run started (status ``running``)."""
    run = RunRow(run_id=run_id or new_id(), started_at=utcnow(), finished_at=None, registry=registry_name,
                 n_listed=None, n_new=None, n_audited=None, n_failed=None, status="running",
                 analyzer_version=analyzer_version)
    store.write_run(run, 0)
    return run


def plan(store: ParquetStore, run: RunRow, listing: Listing, report: ScanReport,
         analyzer_version: str = ANALYZER_VERSION) -> list[AdapterRef]:
    """Diff the listing against the store; record the listing's problems with the run.

    Returns:
        The refs to audit (not yet audited at ``analyzer_version``), in listing order.
    """
    now = utcnow()
    report.findings = [row for repo_id, note in listing.notes
                       for row in finding_rows(repo_id, None, [note], analyzer_version, now, run.run_id)]
    new = missing_refs(store, listing.refs, analyzer_version)
    report.n_listed, report.n_new = len(listing.refs), len(new)
    if report.findings:
        store.write_run(run.model_copy(update={"n_listed": report.n_listed, "n_new": report.n_new,
                                               "updated_at": utcnow()}), 1, report.findings)
    return new


def audit_refs(executor: Executor, refs: Sequence[AdapterRef], report: ScanReport,
               sink: ProgressSink | None = None) -> ScanReport:
    """Run the audits (each worker commits its units) and count what comes back."""
    for reported in executor.map(refs):
        if isinstance(reported, Deferred):
            report.n_deferred += 1
            report.deferred.append(f"{reported.ref.adapter_id}: {reported.error}")
        else:
            report.n_audited += 1
            report.statuses[reported.status] = report.statuses.get(reported.status, 0) + 1
            report.n_failed += reported.status == "failed"
        if sink is not None:
            sink.outcome(reported)
    return report


def finish_run(store: ParquetStore, run: RunRow, report: ScanReport, status: str = "completed") -> RunRow:
    """Record the run's final counts."""
    done = run.model_copy(update={
        "finished_at": utcnow(), "n_listed": report.n_listed, "n_new": report.n_new,
        "n_audited": report.n_audited, "n_failed": report.n_failed, "status": status, "updated_at": utcnow()})
    store.write_run(done, 2, report.findings)
    return done


def scan(registry: Registry, store: ParquetStore, *, executor: Executor | None = None,
         limits: Limits = DEFAULT_LIMITS, analyzer_version: str = ANALYZER_VERSION,
         sink: ProgressSink | None = None) -> ScanReport:
    """Audit every adapter of ``registry`` not yet in ``store`` at this analyzer version.

    Args:
        registry: where adapters are listed and fetched.
        store: where results go.
        executor: how audits run (default: in this process, one after the other).
        sink: where progress goes (default: the current sink of :mod:`audit.progress`, if any).

    Returns:
        A :class:`ScanReport`; the same counts are in the ``runs`` table.
    """
    sink = sink or current()
    t0 = time.perf_counter()
    run = start_run(store, registry.name, analyzer_version=analyzer_version)
    report = ScanReport(run_id=run.run_id, registry=registry.name)
    try:
        new = plan(store, run, registry.list_adapters(), report, analyzer_version)
        if sink is not None:
            sink.plan(report.n_listed, report.n_new)
        executor = executor or InProcessExecutor(registry, store, limits, analyzer_version)
        audit_refs(executor, new, report, sink)
    except BaseException:
        report.elapsed_s = time.perf_counter() - t0
        finish_run(store, run, report, status="failed")
        raise
    report.elapsed_s = time.perf_counter() - t0
    finish_run(store, run, report)
    return report

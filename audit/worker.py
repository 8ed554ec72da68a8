"""What a worker does with one listed adapter: fetch it, audit it, classify the outcome.

``process_ref`` never raises for a problem with one adapter:

- a permanent problem (bad files, access denied, deleted) becomes a committed ``failed`` result
  with a finding, so the adapter is not retried until the analyzer version changes;
- a transient problem (network, I/O) becomes a :class:`Deferred`: nothing is written and the next
  scan tries again;
- an unexpected exception (a bug) becomes an ``internal_error`` finding, so one strange adapter
  cannot stop a nightly scan of thousands.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from audit.errors import AuditError, PermanentAuditError, StoreError, TransientAuditError
from audit.limits import DEFAULT_LIMITS, Limits
from audit.records import AdapterRef, AuditResult
from audit.registry.base import Registry
from audit.store.parquet import ParquetStore
from audit.unit import audit_adapter, failed_result
from audit.version import ANALYZER_VERSION


@dataclass(frozen=True)
class Deferred:
    """A unit that failed for a transient reason: not written; retried by the next scan."""

    ref: AdapterRef
    error: str


Outcome = AuditResult | Deferred


def process_ref(registry: Registry, ref: AdapterRef, *, limits: Limits = DEFAULT_LIMITS,
                analyzer_version: str = ANALYZER_VERSION) -> Outcome:
    """Fetch and audit one adapter; see the module docstring for how failures are classified."""
    try:
        fetched = registry.fetch(ref)
    except PermanentAuditError as exc:
        return failed_result(ref, exc.with_context(repo_id=ref.repo_id, revision=ref.revision), "fetch",
                             analyzer_version=analyzer_version)
    except (TransientAuditError, OSError) as exc:
        return Deferred(ref, f"fetch: {exc}")
    try:
        return audit_adapter(fetched, limits=limits, analyzer_version=analyzer_version)
    except (TransientAuditError, OSError) as exc:
        return Deferred(ref, f"audit: {exc}")
    except Exception as exc:  # noqa: BLE001 - one adapter's bug must not stop the scan
        last = traceback.extract_tb(exc.__traceback__)[-1]
        err = AuditError(f"unexpected {type(exc).__name__}: {exc} (at {last.filename}:{last.lineno})",
                         code="internal_error", repo_id=ref.repo_id, revision=ref.revision)
        return failed_result(ref, PermanentAuditError(err.message, code=err.code), "audit",
                             analyzer_version=analyzer_version)


@dataclass(frozen=True)
class Written:
    """A unit that was audited and committed to the store (what a worker reports back)."""

    adapter_id: str
    repo_id: str
    status: str
    n_modules: int
    error_codes: tuple[str, ...]
    """Codes of the unit's ``error`` findings (why a ``failed`` adapter failed)."""
    analyzer: str = "spectra"
    """The analyzer whose unit this is."""

    @classmethod
    def of(cls, result) -> Written:
        """The report of an ``AuditResult`` (spectra) or an ``AnalysisUnit`` (any other analyzer)."""
        codes = tuple(sorted({f.code for f in result.findings if f.severity == "error"}))
        if isinstance(result, AuditResult):
            a = result.adapter
            return cls(a.adapter_id, a.repo_id, a.status, a.n_modules, codes)
        return cls(result.adapter_id, result.repo_id, result.status, len(result.probes), codes, result.analyzer)


Reported = Written | Deferred


def audit_and_store(registry: Registry, store: ParquetStore, ref: AdapterRef, *, limits: Limits = DEFAULT_LIMITS,
                    analyzer_version: str = ANALYZER_VERSION) -> Reported:
    """Audit one adapter and commit the unit to the store where the work was done (workers write
    in parallel; the driver only receives this small report)."""
    outcome = process_ref(registry, ref, limits=limits, analyzer_version=analyzer_version)
    return commit(store, outcome)


def commit(store: ParquetStore, outcome) -> Reported:
    """Write a unit of work: an ``AuditResult`` (spectra) or an ``AnalysisUnit`` (a probe); a
    ``Deferred`` is passed through unwritten, and a store failure defers the unit to the next run."""
    if isinstance(outcome, Deferred):
        return outcome
    try:
        if isinstance(outcome, AuditResult):
            store.write_result(outcome)
        else:
            store.write_analysis(outcome)
    except StoreError as exc:
        return Deferred(_ref_of(outcome), f"store: {exc}")
    return Written.of(outcome)


def commit_all(store: ParquetStore, outcomes: list) -> list[Reported]:
    """:func:`commit` for the outcomes of one job, with its spectra units (``AuditResult`` s) of one
    audit day in one file of the ``units`` table: committed together, or (a store failure) all
    deferred. A job's units were computed together and are lost together if its worker dies, so
    one file changes nothing there; it saves a Parquet write per unit (about 3 ms) and the store
    the files that compaction would merge. One report per outcome, in order."""
    results = [o for o in outcomes if isinstance(o, AuditResult)]
    if len(results) < 2:
        return [commit(store, o) for o in outcomes]
    reported: dict[int, Reported] = {}
    by_day: dict = {}
    for r in results:
        by_day.setdefault(r.adapter.audited_at.date(), []).append(r)
    for group in by_day.values():
        try:
            store.write_results(group)
            reported.update((id(r), Written.of(r)) for r in group)
        except StoreError as exc:
            reported.update((id(r), Deferred(_ref_of(r), f"store: {exc}")) for r in group)
    return [reported[id(o)] if isinstance(o, AuditResult) else commit(store, o) for o in outcomes]


def _ref_of(result) -> AdapterRef:
    if isinstance(result, AuditResult):
        a = result.adapter
        return AdapterRef(repo_id=a.repo_id, revision=a.revision, registry=a.registry)
    repo_id, _, revision = result.adapter_id.rpartition("@")
    return AdapterRef(repo_id=repo_id or result.repo_id, revision=revision, registry=result.analyzer)

"""Committing what the analyzers return to the store, where the work was done (workers write in
parallel; the driver only receives a small :class:`Written` or :class:`Deferred` report).

A store failure defers a unit to the next scan; a ``Deferred`` outcome is passed through unwritten.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.errors import StoreError
from audit.records import AdapterRef, AuditResult, Deferred
from audit.store.parquet import ParquetStore


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


def commit(store: ParquetStore, outcome) -> Reported:
    """Write a unit of work: an ``AuditResult`` (spectra) or an ``AnalysisUnit`` (a probe); a
    ``Deferred`` is passed through unwritten, and a store failure defers the unit to the next run."""
    from audit.analyzers.table import write_analysis

    if isinstance(outcome, Deferred):
        return outcome
    try:
        if isinstance(outcome, AuditResult):
            store.write_result(outcome)
        else:
            write_analysis(store, outcome)
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

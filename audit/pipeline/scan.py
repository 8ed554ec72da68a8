"""The scan, as a sequence of steps: start the run, list, diff, audit the spectra, look up (and, when
asked, fetch) the bases the probes need, probe, compact, judge, finish.

This is the one place the sequence is written. Each step is a plain function so that the Prefect
flow (``flows/nightly_scan.py``) can wrap them as tasks; :func:`run_scan` chains them, with plain
functions (an ad-hoc ``lora-audit scan``, library use) or with those tasks (the flow). How the analyses run is an :class:`~audit.pipeline.executors.Executor`: in this
process (:mod:`audit.pipeline.executors`) or on a Ray actor pool (:mod:`audit.pipeline.raypool`). Either way the
worker that analyses a unit also commits it to the store, so results land as units finish and the
driver only counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from audit.adapter_audit import finding_rows
from audit.limits import DEFAULT_LIMITS, Limits
from audit.pipeline.executors import Executor, InProcessExecutor
from audit.pipeline.placement import RAY_THRESHOLD, Placement
from audit.progress import ProgressSink, current
from audit.records import AdapterRef, Deferred, FindingRow, RunRow, new_id, utcnow
from audit.registry.base import Listing, Registry
from audit.store.diff import missing_refs
from audit.store.parquet import ParquetStore
from audit.version import ANALYZER_VERSION

__all__ = ["Executor", "InProcessExecutor", "Placement", "ScanReport", "Steps", "audit_refs", "compact_store",
           "executor_for", "finish_run", "list_registry", "plan", "prepare_bases", "probe_stage", "retry_transient",
           "run_scan", "scan", "score_verdicts", "start_run"]


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
    verdicts: dict[str, int] = field(default_factory=dict)
    """Verdicts written by the scan's judging step, by outcome (``drifted``, ``healthy``, ``review``,
    ``invalid``, ``insufficient_evidence``)."""
    probes: dict[str, int] = field(default_factory=dict)
    """Probe units written, by status (``ok``, ``skipped``...), and ``deferred``."""
    compacted: int = 0
    elapsed_s: float = 0.0

    def summary(self) -> dict:
        """The counts as plain data (what the flow returns and the CLI prints)."""
        return {k: v for k, v in vars(self).items() if k != "findings"}


def retry_transient(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's retry_condition_fn signature
    """Prefect retry condition of the I/O steps: retry failures that may go away (network, a file
    compacted away under a reader), never bad settings or bad input."""
    import duckdb

    from audit.errors import PermanentAuditError, TransientAuditError

    try:
        state.result()
    except PermanentAuditError:  # e.g. AccessDeniedError is also a PermissionError (an OSError)
        return False
    except (TransientAuditError, OSError, TimeoutError, duckdb.IOException):
        return True
    except Exception:  # noqa: BLE001
        return False
    return False


def list_registry(registry: Registry) -> Listing:
    """List the registry's adapters (the step Prefect retries on a transient failure)."""
    return registry.list_adapters()


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
    """Run the spectra audits (each worker commits its units) and count what comes back."""
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


def score_verdicts(store: ParquetStore, report: ScanReport) -> ScanReport:
    """Judge the adapters whose evidence changed (new audits, new probe results, new models)."""
    from audit.classify.verdicts import score_unjudged

    rows = score_unjudged(store, trigger="scan")
    report.verdicts = {}
    for r in rows:
        report.verdicts[r.outcome] = report.verdicts.get(r.outcome, 0) + 1
    return report


def prepare_bases(store: ParquetStore, specs: Sequence, *, registry: str, fetch: bool = False,
                  limits: Limits = DEFAULT_LIMITS, echo: Callable[[str], None] | None = None) -> dict:
    """Before the probes: look up the bases they need that are not on this machine
    (:func:`audit.probes.plan.bases_not_at_hand`) and learn what can be learnt of each
    (:func:`audit.registry.bases.look_up_bases`): with ``fetch``, download each one that fits
    ``limits.max_base_bytes`` from the Hub (``HF_ENDPOINT``) into the Hub cache, whatever the registry;
    without it, ask a Hub registry's Hub for each base's sha and size, and ask nothing for a local one.

    Returns:
        ``{declared name: audit.registry.bases.BaseSource}`` for :func:`probe_stage`'s findings. A base
        the Hub refuses or lacks is in there, never raised.
    """
    from audit.probes.plan import bases_not_at_hand
    from audit.registry.bases import look_up_bases

    names = bases_not_at_hand(store, specs, registry=registry)
    return look_up_bases(names, ask_hub=fetch or registry.startswith("hub:"), fetch=fetch,
                         max_bytes=limits.max_base_bytes, echo=echo)


def probe_stage(store: ParquetStore, executor: Executor, specs: Sequence, report: ScanReport | None = None, *,
                registry: str | None = None, adapter_ids: Sequence[str] | None = None, group_size: int = 8,
                sink: ProgressSink | None = None, bases: dict | None = None) -> dict[str, int]:
    """Run the behaviour probes that are missing (see :mod:`audit.probes.plan`): the bare bases
    first (once per base revision), then the adapters, those queued for re-audit first. ``bases``:
    what :func:`prepare_bases` learnt of the bases not at hand (said in their findings).

    Returns:
        Units written by status, and ``deferred`` (also set on ``report.probes``).
    """
    from audit.analyzers.table import write_analyses
    from audit.probes.plan import plan_probes

    counts: dict[str, int] = {}
    probe_plan = plan_probes(store, specs, adapter_ids=adapter_ids, registry=registry, group_size=group_size,
                             bases=bases)
    if sink is not None and hasattr(sink, "probe_plan"):
        sink.probe_plan(probe_plan)
    write_analyses(store, probe_plan.skipped)  # one file, not one per adapter and analyzer
    for unit in probe_plan.skipped:
        counts[unit.status] = counts.get(unit.status, 0) + 1
    for jobs in (probe_plan.base_jobs, probe_plan.adapter_jobs):
        for reported in executor.map(jobs) if jobs else ():
            key = "deferred" if isinstance(reported, Deferred) else reported.status
            counts[key] = counts.get(key, 0) + 1
            if sink is not None and hasattr(sink, "probe_outcome"):
                sink.probe_outcome(reported)
    if report is not None:
        report.probes = counts
    return counts


def compact_store(store: ParquetStore, report: ScanReport, min_files: int = 64) -> ScanReport:
    """Merge partitions that grew past ``min_files`` files (a store of small files is slow to read)."""
    from audit.store.compact import compact

    report.compacted = sum(c.files_in for c in compact(store, min_files=min_files))
    return report


def finish_run(store: ParquetStore, run: RunRow, report: ScanReport, status: str = "completed") -> RunRow:
    """Record the run's final counts."""
    done = run.model_copy(update={
        "finished_at": utcnow(), "n_listed": report.n_listed, "n_new": report.n_new,
        "n_audited": report.n_audited, "n_failed": report.n_failed, "status": status, "updated_at": utcnow()})
    store.write_run(done, 2, report.findings)
    return done


@dataclass(frozen=True)
class Steps:
    """The steps :func:`run_scan` chains. The defaults are the plain functions of this module; the
    Prefect flow (``flows/nightly_scan.py``) passes the same functions wrapped as tasks."""

    start_run: Callable = start_run
    list_registry: Callable = list_registry
    plan: Callable = plan
    audit: Callable = audit_refs
    judge: Callable = score_verdicts
    bases: Callable = prepare_bases
    probe: Callable = probe_stage
    compact: Callable = compact_store
    finish: Callable = finish_run


def executor_for(registry: Registry, store: ParquetStore, on_ray: bool, placement: Placement, *,
                 analyzers: Sequence | None = None, limits: Limits = DEFAULT_LIMITS,
                 analyzer_version: str = ANALYZER_VERSION) -> Executor:
    """An in-process executor, or a Ray actor pool (spectra actors sized by ``placement.workers``;
    probe actors by the cluster's GPUs, see :func:`audit.pipeline.raypool.actor_resources`; each
    actor opens the registry from its spec, ``registry.name``)."""
    if not on_ray:
        return InProcessExecutor(registry, store, limits, analyzer_version, analyzers=analyzers)
    from audit.pipeline.raypool import RayExecutor

    return RayExecutor(registry.name, store, workers=None if analyzers else placement.workers, limits=limits,
                       analyzer_version=analyzer_version, analyzers=analyzers, ray_address=placement.ray_address)


def run_scan(registry: Registry, store: ParquetStore, *, placement: Placement = Placement(),
             judge: bool = True, probes: Sequence = (), compact_min_files: int | None = 64,
             executor: Executor | None = None, probe_executor: Executor | None = None,
             limits: Limits = DEFAULT_LIMITS, analyzer_version: str = ANALYZER_VERSION,
             sink: ProgressSink | None = None, steps: Steps = Steps(),
             echo: Callable[[str], None] | None = print, fetch_bases: bool = False) -> ScanReport:
    """The scan sequence: start the run, list, diff, audit the spectra of what is new, run the
    analyzers that need the base model (directional measures, behaviour probes: the bare bases,
    then the adapters whose base is at hand, once the missing bases are looked up and, with
    ``fetch_bases``, fetched), compact, judge, finish. A Ray that this scan started
    is shut down once the analyses are done, while the last steps run.

    Args:
        registry: the open registry (:func:`audit.registry.open_registry` makes one from a spec
            such as ``local:/path`` or ``hub:org``; Ray actors reopen it from ``registry.name``).
        store: where results go.
        placement: where the analyses run (in this process, or a Ray actor pool); ignored for
            the step that gets an explicit ``executor`` / ``probe_executor``.
        judge: score new adapters with their method's promoted classifier.
        probes: the behaviour probes to run (``AnalyzerSpec`` s; empty: none).
        fetch_bases: before the probes, download the bases they need that are not on this machine
            from the Hub (``HF_ENDPOINT``), pinned to a commit sha, up to ``limits.max_base_bytes``
            each (:func:`prepare_bases`); otherwise nothing is downloaded.
        compact_min_files: compact partitions with at least this many files (``None``: never).
        steps: the step functions (plain, or Prefect tasks).
        echo: where the two summary lines go (``print``: the console, or the flow's log).

    Returns:
        A :class:`ScanReport`; the same counts are in the ``runs`` table.
    """
    sink = sink or current()
    t0 = time.perf_counter()
    spec = registry.name
    run = steps.start_run(store, spec, analyzer_version=analyzer_version)
    report = ScanReport(run_id=run.run_id, registry=spec)
    given = executor is not None
    early = None
    made: list[Executor] = []  # the executors this scan made (the Ray they started is stopped early)
    try:
        if executor is None and placement.asked_for_ray():  # Ray and its actors start while the listing runs
            executor = early = executor_for(registry, store, True, placement, limits=limits,
                                            analyzer_version=analyzer_version)
        listing = _list_while(lambda: steps.list_registry(registry), getattr(early, "start", None))
        refs = steps.plan(store, run, listing, report, analyzer_version)
        if sink is not None:
            sink.plan(report.n_listed, report.n_new)
        on_ray = placement.on_ray(len(refs))
        if echo:
            echo(f"{report.n_new} new of {report.n_listed} adapters in {spec}"
                 + (" (auditing on Ray)" if on_ray and not given else ""))
        executor = executor or executor_for(registry, store, on_ray, placement, limits=limits,
                                            analyzer_version=analyzer_version)
        report = steps.audit(executor, refs, report, sink)
        if probes:
            bases = steps.bases(store, probes, registry=spec, fetch=fetch_bases, limits=limits, echo=echo)
            given_probes = probe_executor is not None
            probe_executor = probe_executor or executor_for(registry, store, on_ray or placement.asked_for_ray(),
                                                            placement, analyzers=probes, limits=limits)
            steps.probe(store, probe_executor, probes, report, registry=spec, sink=sink, bases=bases)
            if not given_probes:
                made.append(probe_executor)
        if not given:
            made.append(executor)
        for made_here in made:  # the Ray this scan started stops while the last steps run (it mostly waits)
            getattr(made_here, "stop_ray", lambda: None)()
        if compact_min_files is not None:  # before judging: its queries then read merged files
            report = steps.compact(store, report, compact_min_files)
        if judge:  # after the probes: a detector may use the directional measures they add
            report = steps.judge(store, report)
    except BaseException:
        if early is not None:  # actors started during the listing that no audit used
            early.close()
        report.elapsed_s = time.perf_counter() - t0
        steps.finish(store, run, report, "failed")
        raise
    report.elapsed_s = time.perf_counter() - t0
    steps.finish(store, run, report)
    if echo:
        echo(f"audited {report.n_audited} ({report.statuses}), deferred {report.n_deferred}, probes {report.probes}")
    return report


def _list_while(listing: Callable[[], Listing], start: Callable[[], None] | None) -> Listing:
    """``listing()``; with ``start``, on a thread while ``start()`` runs here (Ray's start belongs to
    the main thread). The thread runs in a copy of this context (the progress sink, Prefect's run
    context); when ``start`` fails, the listing is waited for and ``start``'s error is raised."""
    if start is None:
        return listing()
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lora-audit-listing") as pool:
        future = pool.submit(contextvars.copy_context().run, listing)
        try:
            start()
        except BaseException:
            future.exception()  # the listing ends first; the start's error is the one raised
            raise
        return future.result()


def scan(registry: Registry, store: ParquetStore, *, executor: Executor | None = None,
         limits: Limits = DEFAULT_LIMITS, analyzer_version: str = ANALYZER_VERSION,
         sink: ProgressSink | None = None, judge: bool = False, probes: Sequence | None = None,
         probe_executor: Executor | None = None, compact_min_files: int | None = None,
         fetch_bases: bool = False) -> ScanReport:
    """:func:`run_scan` in this process with library defaults: no judging, no probes, no
    compaction, no base fetched unless asked (``executor`` / ``probe_executor`` default to in-process ones)."""
    return run_scan(registry, store, placement=Placement(in_process=True), judge=judge, probes=probes or (),
                    compact_min_files=compact_min_files, executor=executor, probe_executor=probe_executor,
                    limits=limits, analyzer_version=analyzer_version, sink=sink, echo=None, fetch_bases=fetch_bases)

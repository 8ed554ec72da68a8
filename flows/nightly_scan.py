"""The nightly scan: list the registry, diff against the store, audit the new adapters on Ray,
score the adapters with their method's promoted classifier, record the run. Thin: every step is a function of :mod:`audit.scan`.

Runs on Prefect's ephemeral API when no server is configured, or reports to the server named by
``PREFECT_API_URL``. Ray starts in-process unless ``ray_address`` (or ``$RAY_ADDRESS``) names a
cluster.
"""

from __future__ import annotations

import flows._prefect  # noqa: F401  (quiet defaults before Prefect loads)

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from audit.errors import PermanentAuditError, TransientAuditError
from audit.limits import DEFAULT_LIMITS
from audit.progress import current
from audit.records import AdapterRef, RunRow
from audit.registry import open_registry
from audit.registry.base import Listing
from audit.scan import InProcessExecutor, ScanReport, audit_refs, finish_run, plan, start_run
from audit.store import ParquetStore
from audit.version import ANALYZER_VERSION


def _transient(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's retry_condition_fn signature
    """Retry I/O steps only for failures that may go away (network, a file compacted away under a
    reader), not for bad settings."""
    import duckdb

    try:
        state.result()
    except PermanentAuditError:  # e.g. AccessDeniedError is also a PermissionError (an OSError)
        return False
    except (TransientAuditError, OSError, TimeoutError, duckdb.IOException):
        return True
    except Exception:  # noqa: BLE001
        return False
    return False


@task(name="start-run", cache_policy=NO_CACHE)
def start_run_task(store: str, registry: str) -> RunRow:
    return start_run(ParquetStore(store), registry)


@task(name="list-registry", retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=_transient,
      cache_policy=NO_CACHE)
def list_registry(registry: str) -> Listing:
    return open_registry(registry).list_adapters()


@task(name="diff-against-store", retries=2, retry_delay_seconds=5, retry_condition_fn=_transient,
      cache_policy=NO_CACHE)
def diff_against_store(store: str, run: RunRow, listing: Listing, report: ScanReport) -> list[AdapterRef]:
    return plan(ParquetStore(store), run, listing, report, ANALYZER_VERSION)


@task(name="audit-new-adapters", cache_policy=NO_CACHE)
def audit_new(registry: str, store: str, refs: list[AdapterRef], report: ScanReport, workers: int | None,
              ray_address: str | None, in_process: bool) -> ScanReport:
    st = ParquetStore(store)
    if in_process or not refs:
        executor = InProcessExecutor(open_registry(registry), st, DEFAULT_LIMITS, ANALYZER_VERSION)
    else:
        from audit.raypool import RayExecutor, init_ray

        resources = init_ray(ray_address)
        get_run_logger().info("Ray: %s", {k: v for k, v in resources.items() if k in ("CPU", "GPU")})
        executor = RayExecutor(registry, st, workers=workers, limits=DEFAULT_LIMITS,
                               analyzer_version=ANALYZER_VERSION)
    return audit_refs(executor, refs, report, current())


@task(name="compact-store", cache_policy=NO_CACHE)
def compact_store(store: str, min_files: int) -> int:
    """Merge partitions that grew past ``min_files`` files (a store of small files is slow to read)."""
    from audit.store.compact import compact

    done = compact(ParquetStore(store), min_files=min_files)
    return sum(c.files_in for c in done)


@task(name="score-verdicts", retries=2, retry_delay_seconds=5, retry_condition_fn=_transient,
      cache_policy=NO_CACHE)
def score_verdicts(store: str) -> dict[str, int]:
    """Judge the adapters that have no verdict from their method's promoted classifier yet."""
    from audit.classify.verdicts import score_unjudged

    rows = score_unjudged(ParquetStore(store), trigger="scan")
    return {"judged": sum(r.p_drift is not None for r in rows),
            "drifted": sum(bool(r.drifted) for r in rows),
            "unjudged": sum(r.p_drift is None for r in rows)}


@task(name="record-run", cache_policy=NO_CACHE)
def record_run(store: str, run: RunRow, report: ScanReport, status: str) -> RunRow:
    return finish_run(ParquetStore(store), run, report, status)


@flow(name="nightly-scan", log_prints=True)
def nightly_scan(registry: str | None = None, hub_org: str | None = None, store: str = "audit-store",
                 workers: int | None = None, ray_address: str | None = None, in_process: bool = False,
                 compact_min_files: int = 64) -> dict:
    """Audit every adapter of a registry that the store does not have yet.

    Args:
        registry: a local registry folder (or a registry spec such as ``local:/path``).
        hub_org: a Hugging Face Hub organization to crawl instead (``HF_ENDPOINT``, ``HF_TOKEN``).
        store: the Parquet store (a folder or an object-store URI).
        workers: Ray actors (default: one per CPU of the cluster).
        ray_address: a Ray cluster to join (default: ``$RAY_ADDRESS``, else Ray in-process).
        in_process: audit in this process without Ray (debugging, tiny registries).
        compact_min_files: after auditing, merge store partitions holding at least this many files.

    Returns:
        The run's counts (``run_id``, ``n_listed``, ``n_new``, ``n_audited``, ``n_failed``...).
    """
    spec = _registry_spec(registry, hub_org)
    run = start_run_task(store, spec)
    report = ScanReport(run_id=run.run_id, registry=spec)
    try:
        listing = list_registry(spec)
        refs = diff_against_store(store, run, listing, report)
        sink = current()
        if sink is not None:
            sink.plan(report.n_listed, report.n_new)
        print(f"{report.n_new} new of {report.n_listed} adapters in {spec}")
        report = audit_new(spec, store, refs, report, workers, ray_address, in_process)
        verdicts = score_verdicts(store)
        if verdicts["judged"] or verdicts["unjudged"]:
            print(f"verdicts: {verdicts['judged']} judged by their method's classifier "
                  f"({verdicts['drifted']} drifted), {verdicts['unjudged']} without a classifier")
        merged = compact_store(store, compact_min_files)
        if merged:
            print(f"compacted {merged} small files of the store")
    except BaseException:
        record_run(store, run, report, "failed")
        raise
    record_run(store, run, report, "completed")
    print(f"audited {report.n_audited} ({report.statuses}), deferred {report.n_deferred}")
    return {"run_id": run.run_id, "registry": spec, "n_listed": report.n_listed, "n_new": report.n_new,
            "n_audited": report.n_audited, "n_failed": report.n_failed, "n_deferred": report.n_deferred,
            "statuses": report.statuses, "deferred": report.deferred, "verdicts": verdicts}


def _registry_spec(registry: str | None, hub_org: str | None) -> str:
    from pathlib import Path

    from audit.errors import ConfigurationError

    if bool(registry) == bool(hub_org):
        raise ConfigurationError("give exactly one of registry (a folder) and hub_org")
    if hub_org:
        return f"hub:{hub_org}"
    assert registry is not None
    if registry.startswith(("local:", "hub:")):
        return registry
    return f"local:{Path(registry).expanduser().resolve()}"


if __name__ == "__main__":
    import sys

    print(nightly_scan(registry=sys.argv[1], store=sys.argv[2] if len(sys.argv) > 2 else "audit-store"))

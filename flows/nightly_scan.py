"""The nightly scan: the steps of :func:`audit.pipeline.scan.run_scan`, each wrapped as a Prefect task.

Prefect's ephemeral API unless ``PREFECT_API_URL`` names a server; the analyses on a Ray actor pool
(Ray in-process unless ``ray_address`` or ``$RAY_ADDRESS`` names a cluster). Only the I/O steps
retry. An ad-hoc ``lora-audit scan`` runs the same sequence without Prefect (``audit/cli/scan.py``).
"""

from __future__ import annotations

import flows._prefect  # noqa: F401  (quiet defaults before Prefect loads)

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from audit.limits import with_base_cap
from audit.pipeline import scan as steps
from audit.pipeline.executors import probe_specs
from audit.registry import open_registry, registry_spec
from audit.report.html import publish_run_report
from audit.store import ParquetStore

io = {"retries": 3, "retry_delay_seconds": [2, 10, 30], "retry_condition_fn": steps.retry_transient,
      "cache_policy": NO_CACHE}
TASKS = steps.Steps(
    start_run=task(name="start-run", cache_policy=NO_CACHE)(steps.start_run),
    list_registry=task(name="list-registry", **io)(steps.list_registry),
    plan=task(name="diff-against-store", **io)(steps.plan),
    audit=task(name="audit-spectra", cache_policy=NO_CACHE)(steps.audit_refs),
    judge=task(name="score-verdicts", **io)(steps.score_verdicts),
    bases=task(name="fetch-bases", cache_policy=NO_CACHE)(steps.prepare_bases),
    probe=task(name="behaviour-probes", cache_policy=NO_CACHE)(steps.probe_stage),
    compact=task(name="compact-store", cache_policy=NO_CACHE)(steps.compact_store),
    finish=task(name="record-run", cache_policy=NO_CACHE)(steps.finish_run),
)


@flow(name="nightly-scan", log_prints=True)
def nightly_scan(registry: str | None = None, hub_org: str | None = None, store: str = "audit-store",
                 workers: int | None = None, ray_address: str | None = None, in_process: bool = False,
                 probes: list[str] | None = None, probe_prompts: int | None = None, skip_probes: bool = False,
                 compact_min_files: int = 64, fetch_bases: bool = False, max_base_bytes: int | None = None) -> dict:
    """Audit what is new in a registry (a folder, or ``hub_org``), judge it, probe it where its base
    model is at hand (with ``fetch_bases``: fetched from the Hub first, each up to ``max_base_bytes``,
    default ``LORA_AUDIT_MAX_BASE_BYTES`` else 2 GB), compact the store; returns the run's counts
    (``audit.pipeline.scan.ScanReport``)."""
    where = open_registry(registry_spec(registry, hub_org))  # one registry and one store for every step
    scanned = ParquetStore(store)
    report = steps.run_scan(where, scanned, placement=steps.Placement(in_process=in_process, workers=workers,
                                                                      ray_address=ray_address),
                            steps=TASKS, probes=() if skip_probes else probe_specs(probes, probe_prompts),
                            compact_min_files=compact_min_files, fetch_bases=fetch_bases,
                            limits=with_base_cap(max_base_bytes))
    summary = report.summary()
    summary["report_path"] = write_run_report(scanned, report.run_id)
    print(f"report: {summary['report_path']}")
    return summary


write_run_report = task(name="write-report", cache_policy=NO_CACHE)(publish_run_report)
"""The run's HTML report beside the store (its path recorded on the run)."""

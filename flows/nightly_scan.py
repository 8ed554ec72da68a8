"""The nightly scan: every step is a function of :mod:`audit.scan`, wrapped as a Prefect task.

Prefect's ephemeral API unless ``PREFECT_API_URL`` names a server; Ray in-process unless
``ray_address`` (or ``$RAY_ADDRESS``) names a cluster. Only the I/O steps retry.
"""

from __future__ import annotations

import flows._prefect  # noqa: F401  (quiet defaults before Prefect loads)

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from audit import scan as steps
from audit.executors import executor_for, probe_specs
from audit.progress import current
from audit.registry import registry_spec
from audit.store import ParquetStore

io = {"retries": 3, "retry_delay_seconds": [2, 10, 30], "retry_condition_fn": steps.retry_transient,
      "cache_policy": NO_CACHE}
start_run = task(name="start-run", cache_policy=NO_CACHE)(steps.start_run)
list_registry = task(name="list-registry", **io)(steps.list_registry)
diff = task(name="diff-against-store", **io)(steps.plan)
audit = task(name="audit-spectra", cache_policy=NO_CACHE)(steps.audit_refs)
judge = task(name="score-verdicts", **io)(steps.score_verdicts)
probe = task(name="behaviour-probes", cache_policy=NO_CACHE)(steps.probe_stage)
compact = task(name="compact-store", cache_policy=NO_CACHE)(steps.compact_store)
record = task(name="record-run", cache_policy=NO_CACHE)(steps.finish_run)


@flow(name="nightly-scan", log_prints=True)
def nightly_scan(registry: str | None = None, hub_org: str | None = None, store: str = "audit-store",
                 workers: int | None = None, ray_address: str | None = None, in_process: bool = False,
                 probes: list[str] | None = None, probe_prompts: int | None = None, skip_probes: bool = False,
                 compact_min_files: int = 64) -> dict:
    """Audit what is new in a registry (a folder, or ``hub_org``), judge it, probe it where its base
    model is at hand, compact the store; returns the run's counts (``audit.scan.ScanReport``)."""
    spec, st, sink = registry_spec(registry, hub_org), ParquetStore(store), current()
    run = start_run(st, spec)
    report = steps.ScanReport(run_id=run.run_id, registry=spec)
    try:
        refs = diff(st, run, list_registry(spec), report)
        if sink is not None:
            sink.plan(report.n_listed, report.n_new)
        print(f"{report.n_new} new of {report.n_listed} adapters in {spec}")
        report = audit(executor_for(spec, st, workers=workers, ray_address=ray_address,
                                    in_process=in_process or not refs), refs, report, sink)
        report = judge(st, report)
        if not skip_probes:
            specs = probe_specs(probes, probe_prompts)
            report.probes = probe(st, executor_for(spec, st, analyzers=specs, workers=None, ray_address=ray_address,
                                   in_process=in_process), specs, report, registry=spec, sink=sink)
        report = compact(st, report, compact_min_files)
    except BaseException:
        record(st, run, report, "failed")
        raise
    record(st, run, report, "completed")
    print(f"audited {report.n_audited} ({report.statuses}), deferred {report.n_deferred}, probes {report.probes}")
    return {"run_id": run.run_id, **{k: v for k, v in vars(report).items() if k not in ("run_id", "findings")}}

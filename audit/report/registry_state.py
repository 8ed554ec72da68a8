"""The registry's current state, read from the store: the findings of the newest audit of each of
its adapters (and of a run's listing), and the current verdicts that say drifted or review."""

from __future__ import annotations

from audit.report.sarif import DriftResult, FindingResult
from audit.store.parquet import ParquetStore

NEWEST = "(SELECT * FROM newest_adapters WHERE registry = $registry)"
"""The registry's current state: the newest audit of each of its repositories (view ``newest_adapters``)."""

_FINDINGS = f"""
    WITH newest AS {NEWEST}
    SELECT f.repo_id, f.adapter_id, f.stage, f.severity, f.code, f.message, f.file FROM findings f
    WHERE f.unit_id IN (SELECT unit_id FROM newest) OR (f.adapter_id IS NULL AND f.unit_id = $run_id)
    ORDER BY f.repo_id, f.severity, f.code, f.message"""

_DRIFTED = f"""
    WITH newest AS {NEWEST}
    SELECT n.repo_id, v.adapter_id, v.method, v.classifier_id, v.p_drift, v.objective, v.outcome, v.explanation
    FROM current_verdicts v JOIN newest n USING (adapter_id)
    WHERE v.outcome IN ('drifted', 'review') ORDER BY n.repo_id"""


def current_results(store: ParquetStore, registry: str, run_id: str | None = None, *,
                    verdicts: bool = True) -> tuple[list[FindingResult], list[DriftResult]]:
    """Findings and (unless ``verdicts`` is false) the drifted and review verdicts of the newest audit of every
    adapter of ``registry``, plus the listing findings of ``run_id``.

    Raises:
        duckdb.Error: the store cannot be read.
    """
    con = store.connect(for_sql=_FINDINGS + ("; " + _DRIFTED if verdicts else ""))
    try:
        params = {"registry": registry, "run_id": run_id or ""}
        findings = [FindingResult(*row) for row in con.execute(_FINDINGS, params).fetchall()]
        drifted = [DriftResult(*row) for row in
                   con.execute(_DRIFTED, {"registry": registry}).fetchall()] if verdicts else []
    finally:
        con.close()
    return findings, drifted

"""What a person looks at first after a scan: counts, the adapters that stand out, where to go next.

"Stand out" here is geometric and relative: within each declared training method, the adapters
whose total delta-weight energy (sum of squared Frobenius norms over modules) or mean top-1 energy
lies furthest from the method's median, in units of the median absolute deviation. It is a
pointer for a human, not a verdict (verdicts come from the calibrated per-method classifiers).
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.store.parquet import ParquetStore

STANDOUT_SQL = """
WITH per_adapter AS (
    SELECT a.adapter_id, a.repo_id, a.method,
           ln(sum(m.fro_norm * m.fro_norm) + 1e-12) AS log_energy,
           avg(m.top1_energy) AS top1
    FROM latest_adapters a JOIN latest_modules m USING (adapter_id, unit_id)
    WHERE a.status IN ('ok', 'partial')
    GROUP BY ALL
), stats AS (
    SELECT method, median(log_energy) AS med_e, median(top1) AS med_t FROM per_adapter GROUP BY method
), dev AS (
    SELECT p.*, abs(p.log_energy - s.med_e) AS de, abs(p.top1 - s.med_t) AS dt FROM per_adapter p JOIN stats s USING (method)
), mad AS (
    SELECT method, median(de) AS mad_e, median(dt) AS mad_t FROM dev GROUP BY method
)
SELECT d.repo_id, d.method, round(d.log_energy, 2) AS log_energy, round(d.top1, 3) AS mean_top1_energy,
       round(greatest(d.de / nullif(x.mad_e, 0), d.dt / nullif(x.mad_t, 0)), 1) AS deviation
FROM dev d JOIN mad x USING (method)
ORDER BY deviation DESC NULLS LAST
LIMIT ?
"""


@dataclass
class Overview:
    by_status: list[tuple]
    by_method: list[tuple]
    standouts: list[tuple]
    standout_columns: list[str]
    top_findings: list[tuple]


def overview(store: ParquetStore, n_standouts: int = 5) -> Overview:
    """Counts by status and by declared method, stand-out adapters, the most frequent findings."""
    con = store.connect()
    try:
        by_status = con.execute("SELECT status, count(*) FROM latest_adapters GROUP BY 1 ORDER BY 2 DESC").fetchall()
        by_method = con.execute(
            "SELECT method, method_source, count(*) FROM latest_adapters GROUP BY 1, 2 ORDER BY 3 DESC").fetchall()
        cur = con.execute(STANDOUT_SQL, [n_standouts])
        cols = [d[0] for d in cur.description]
        standouts = cur.fetchall()
        findings = con.execute("SELECT code, severity, count(*) FROM findings GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 8"
                               ).fetchall()
    finally:
        con.close()
    return Overview(by_status, by_method, standouts, cols, findings)

"""The store table of analysis units (``analyses``) and the views over it.

- ``analyses``: one row per (subject, analyzer, analyzer_version, params_sha256): the first
  committed unit wins (two racing probe runs leave one row), a ``skipped`` one only while there is
  no other (a base that became available);
- ``probes``: the metric rows of those units, with the unit's identity;
- ``probe_samples``: the judged answers;
- ``analysis_done``: every (adapter_id, analyzer, analyzer_version, params_sha256) that has a
  committed unit, spectra included (``analyzer = 'spectra'``, empty params): what the scan diffs
  against;
- ``latest_probes``: the probe rows of each subject's newest unit per probe;
- ``probe_vs_base``: every adapter's probe row beside its bare base's row of the same probe,
  version, settings and metric (``delta = value - base_value``);
- ``probe_summary``: one row per adapter, its newest probe results side by side.

The findings of analysis units join the ``findings`` view (stage ``probe``).
"""

from __future__ import annotations

from audit.pyarrow_without_pandas import pa

from audit.analyzers.analysis import AnalysisUnit
from audit.store.schema import FINDING_FIELDS, TS, names, register_table
from audit.store.views import extend_view, register_view

PROBE_FIELDS = [
    ("metric", pa.string()), ("value", pa.float64()), ("n", pa.int64()), ("ci_low", pa.float64()),
    ("ci_high", pa.float64()), ("layer", pa.int64()), ("judge", pa.string()),
]
SAMPLE_FIELDS = [
    ("variant", pa.string()), ("prompt_id", pa.string()), ("prompt_sha256", pa.string()), ("answer", pa.string()),
    ("judged", pa.string()), ("judge", pa.string()), ("n_tokens", pa.int64()), ("stopped", pa.string()),
]
UNIT_FIELDS = [
    ("unit_id", pa.string()), ("adapter_id", pa.string()), ("repo_id", pa.string()), ("subject", pa.string()),
    ("analyzer", pa.string()), ("analyzer_version", pa.string()), ("params", pa.string()),
    ("params_sha256", pa.string()), ("base_model", pa.string()), ("base_revision", pa.string()),
    ("status", pa.string()), ("created_at", TS), ("seconds", pa.float64()),
]
ANALYSES = pa.schema([*UNIT_FIELDS, ("probes", pa.list_(pa.struct(PROBE_FIELDS))),
                      ("samples", pa.list_(pa.struct(SAMPLE_FIELDS))),
                      ("findings", pa.list_(pa.struct(FINDING_FIELDS)))])

register_table("analyses", ANALYSES, "analysis_date", ("unit_id",))

_UNIT = "unit_id, adapter_id, repo_id, subject, analyzer, analyzer_version, params_sha256, base_model, base_revision"

register_view("analyses", """
    SELECT * EXCLUDE (probes, samples, findings) FROM analyses_all
    QUALIFY row_number() OVER (PARTITION BY adapter_id, analyzer, analyzer_version, params_sha256
                               ORDER BY status = 'skipped', created_at, unit_id) = 1""")
register_view("probes", f"""
    SELECT adapter_id, repo_id, subject, analyzer AS probe, analyzer_version AS probe_version, params,
           params_sha256, base_model, base_revision, {", ".join(names(PROBE_FIELDS))}, created_at, unit_id FROM (
        SELECT {_UNIT}, params, created_at, unnest(probes, recursive := true) FROM analyses_all
        WHERE unit_id IN (SELECT unit_id FROM analyses))""")
register_view("probe_samples", f"""
    SELECT adapter_id, repo_id, subject, analyzer AS probe, analyzer_version AS probe_version, params_sha256,
           base_revision, {", ".join(names(SAMPLE_FIELDS))}, unit_id FROM (
        SELECT {_UNIT}, unnest(samples, recursive := true) FROM analyses_all
        WHERE unit_id IN (SELECT unit_id FROM analyses))""")
register_view("latest_probes", """
    SELECT p.* FROM probes p WHERE p.unit_id IN (
        SELECT unit_id FROM analyses
        QUALIFY row_number() OVER (PARTITION BY adapter_id, analyzer ORDER BY created_at DESC) = 1)""")
register_view("analysis_done", """
    SELECT adapter_id, 'spectra' AS analyzer, analyzer_version, '' AS params_sha256, status FROM adapters_all
    UNION ALL
    SELECT adapter_id, analyzer, analyzer_version, params_sha256, status FROM analyses""")
register_view("analysis_findings", f"""
    SELECT adapter_id, repo_id, {", ".join(names(FINDING_FIELDS))}, analyzer_version, unit_id FROM (
        SELECT adapter_id, repo_id, analyzer_version, unit_id, unnest(findings, recursive := true)
        FROM analyses_all WHERE unit_id IN (SELECT unit_id FROM analyses))""")
extend_view("findings", "SELECT * FROM analysis_findings")


def unit_row(unit: AnalysisUnit) -> dict:
    """The stored row of a unit (nested lists of its probes, samples and findings)."""
    row = unit.model_dump(exclude={"probes", "samples", "findings"})
    row["probes"] = [p.model_dump() for p in unit.probes]
    row["samples"] = [s.model_dump() for s in unit.samples]
    row["findings"] = [f.model_dump(include=set(names(FINDING_FIELDS))) for f in unit.findings]
    return row


register_view("probe_vs_base", """
    SELECT p.adapter_id, p.repo_id, p.probe, p.probe_version, p.metric, p.layer, p.value, p.n, p.ci_low, p.ci_high,
           b.value AS base_value, b.ci_low AS base_ci_low, b.ci_high AS base_ci_high, p.value - b.value AS delta,
           p.base_model, p.base_revision, p.judge, p.params_sha256, p.unit_id
    FROM probes p LEFT JOIN probes b
      ON b.subject = 'base' AND b.base_revision = p.base_revision AND b.probe = p.probe
     AND b.probe_version = p.probe_version AND b.params_sha256 = p.params_sha256 AND b.metric = p.metric
     AND b.layer IS NOT DISTINCT FROM p.layer
    WHERE p.subject = 'adapter'""")
register_view("probe_summary", """
    SELECT adapter_id, any_value(repo_id) AS repo_id, any_value(base_model) AS base_model,
           max(value) FILTER (metric = 'harmful_compliance') AS harmful_compliance,
           max(ci_low) FILTER (metric = 'harmful_compliance') AS harmful_ci_low,
           max(ci_high) FILTER (metric = 'harmful_compliance') AS harmful_ci_high,
           max(base_value) FILTER (metric = 'harmful_compliance') AS base_harmful_compliance,
           max(value) FILTER (metric = 'benign_refusal') AS benign_refusal,
           max(ci_low) FILTER (metric = 'benign_refusal') AS benign_ci_low,
           max(ci_high) FILTER (metric = 'benign_refusal') AS benign_ci_high,
           max(base_value) FILTER (metric = 'benign_refusal') AS base_benign_refusal,
           max(value) FILTER (metric = 'harmful_compliance_rank1') AS harmful_compliance_rank1,
           max(value) FILTER (metric = 'harmful_compliance_full') AS harmful_compliance_full,
           max(value) FILTER (metric = 'caa_cosine_at_max_shift') AS caa_cosine_at_max_shift,
           max(value) FILTER (metric = 'shift_norm_max') AS shift_norm_max
    FROM probe_vs_base
    WHERE adapter_id IN (SELECT adapter_id FROM latest_adapters)
      AND unit_id IN (SELECT unit_id FROM latest_probes)
    GROUP BY adapter_id""")


def write_analysis(store, unit: AnalysisUnit) -> str | None:
    """Write one analysis unit (a probe's rows, samples and findings for one subject) as one file
    of the ``analyses`` table of ``store`` (a :class:`audit.store.parquet.ParquetStore`); returns
    the file's path (``None`` when nothing was written).

    Raises:
        StoreError: the write failed (nothing partial is left: see ``ParquetStore.write_rows``).
    """
    return store.write_rows("analyses", [unit_row(unit)], unit.unit_id, unit.created_at)


def write_analyses(store, units: list[AnalysisUnit]) -> list[str]:
    """Write many analysis units (the row-less ``skipped`` units of a probe plan, say) as one file
    of the ``analyses`` table per audit day instead of one each: committed together or not at all.
    Returns the files written.

    Raises:
        StoreError: a write failed (the units of that file are not committed; a rerun plans them again).
    """
    by_day: dict = {}
    for u in units:
        by_day.setdefault(u.created_at.date(), []).append(u)
    paths = []
    for group in by_day.values():
        name = group[0].unit_id if len(group) == 1 else f"{group[0].unit_id}-{len(group)}"
        path = store.write_rows("analyses", [unit_row(u) for u in group], name, group[0].created_at)
        if path:
            paths.append(path)
    return paths

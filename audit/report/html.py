"""The self-contained HTML report (Jinja2 templates in ``audit/report/templates``, matplotlib plots
embedded as data URIs): the scan view of a run, or the adapter view of one adapter."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from audit.report import plots, verdict_plots
from audit.report.data import Table, adapter_data, scan_data
from audit.store.parquet import ParquetStore
from audit.version import ANALYZER_VERSION

_SEVERITY_COLOR = {"error": "#c44e52", "warning": "#dd8452", "info": "#8c8c8c"}
_STATUS_COLOR = {"ok": "#55a868", "partial": "#8fbc8f", "inert": "#c44e52", "failed": "#a40000",
                 "unsupported": "#8c8c8c"}


def _env():
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("audit", "report/templates"), autoescape=select_autoescape(["j2"]),
                       trim_blocks=True, lstrip_blocks=True)


def _common(title: str) -> dict:
    return {"title": title, "version": ANALYZER_VERSION, "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


def render_scan(store: ParquetStore, run_id: str | None = None, progress: Callable[[str], None] | None = None) -> str:
    """The scan view (HTML) of run ``run_id`` (default: the newest).

    Raises:
        ConfigurationError: no such run.
    """
    say = progress or (lambda _msg: None)
    say("reading the store")
    s = scan_data(store, run_id)
    say("drawing the plots")
    status_plot = plots.bar([k for k, _ in s.statuses], [v for _, v in s.statuses], "adapters by status",
                            [_STATUS_COLOR.get(k, "#4c72b0") for k, _ in s.statuses]) if s.statuses else None
    top = s.findings.rows[:20]
    findings_plot = plots.bar([f"{r[0]} ({r[1]})" for r in top], [r[3] for r in top], "findings by code",
                              [_SEVERITY_COLOR.get(r[1], "#4c72b0") for r in top]) if top else None
    energy_plot = plots.energy_scatter(s.energy) if s.energy else None
    behaviour_plot = verdict_plots.behaviour_vs_verdict(s.behaviour)
    adapters = Table(s.adapters.columns[:-1], [r[:-1] for r in s.adapters.rows])  # adapter_id: too long to show
    return _env().get_template("scan.html.j2").render(
        **_common(f"lora-audit scan {s.run['run_id']}"), s=s, adapters=adapters, status_plot=status_plot,
        findings_plot=findings_plot, energy_plot=energy_plot, behaviour_plot=behaviour_plot)


def render_adapter(store: ParquetStore, adapter: str, progress: Callable[[str], None] | None = None) -> str:
    """The adapter view (HTML) of ``adapter`` (an adapter_id or a repo_id).

    Raises:
        ConfigurationError: no such adapter.
    """
    say = progress or (lambda _msg: None)
    say("reading the store")
    a = adapter_data(store, adapter)
    say("drawing the plots")
    probes = Table(a.probes.columns, [tuple(round(v, 3) if isinstance(v, float) else v for v in r)
                                      for r in a.probes.rows])
    return _env().get_template("adapter.html.j2").render(
        **_common(f"lora-audit {a.facts['repo_id']}"), a=a, probes=probes,
        depth_plot=plots.depth_profile(a) if a.modules.rows else None,
        spectra_plot=plots.spectra(a) if a.modules.rows else None,
        peers_plot=plots.against_peers(a), probe_plot=plots.probe_intervals(a),
        heatmap_plot=plots.layer_heatmap(a), timeline_plot=verdict_plots.verdict_timeline(a))


def write_report(html: str, out: Path) -> Path:
    """Write ``html`` to ``out`` (temporary name, then rename: a reader never sees half a report)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out


def publish_run_report(store: ParquetStore, run_id: str) -> str:
    """Render run ``run_id``'s scan view into ``<store>/reports/run-<run_id>.html`` (beside the
    store's tables; on an object store through its filesystem) and record the path on the run.

    Returns:
        The report's path (or URI).
    """
    import posixpath

    from audit.records import RunRow

    html = render_scan(store, run_id)
    rel = posixpath.join("reports", f"run-{run_id}.html")
    if store.local:
        path = str(write_report(html, Path(store.root) / rel))
    else:
        path = posixpath.join(store.root, rel)
        with store.fs.open_output_stream(path) as fh:
            fh.write(html.encode("utf-8"))
    con = store.connect(for_sql="runs_all")
    try:  # the run's newest state, with the listing findings every state repeats
        cur = con.execute("""SELECT * FROM runs_all WHERE run_id = ?
                             ORDER BY updated_at DESC, finished_at DESC NULLS LAST LIMIT 1""", [run_id])
        row = dict(zip([d[0] for d in cur.description], cur.fetchone(), strict=True))
    finally:
        con.close()
    fields = set(RunRow.model_fields)
    run = RunRow(**{k: v for k, v in row.items() if k in fields})
    new = run.model_copy(update={"report_path": path, "updated_at": datetime.now(UTC)}).model_dump()
    new["findings"] = row.get("findings") or []
    store.write_rows("runs", [new], f"{run_id}-3", run.started_at)
    return path

"""``lora-audit scan``: audit the new adapters of a registry into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from audit.cli.common import STORE_OPTION, fail
from audit.errors import ConfigurationError
from audit.records import AuditResult
from audit.scan import ScanReport
from audit.worker import Deferred, Outcome

console = Console()


def scan(
    registry: Annotated[Path | None, typer.Option(
        "--registry", "-r", help="A local registry: a folder whose sub-folders (any depth) hold "
                                 "adapter_config.json next to the weights.")] = None,
    store: STORE_OPTION = "audit-store",
) -> None:
    """Audit every adapter of a registry that the store does not have yet.

    Incremental: an adapter revision already audited with this analyzer version is skipped, so
    running it again audits only what is new. Bad adapters become findings; the scan goes on.
    """
    from audit.registry import LocalRegistry
    from audit.scan import scan as run_scan
    from audit.store import ParquetStore

    if registry is None:
        fail("give a registry: --registry DIR (a folder of adapters)")
    try:
        reg = LocalRegistry(registry)
        st = ParquetStore(store)
    except ConfigurationError as exc:
        fail(str(exc))
    with _progress() as bar:
        task = bar.add_task("listing", total=None)

        def on_plan(n_listed: int, n_new: int) -> None:
            bar.update(task, description=f"auditing {n_new} new of {n_listed}", total=n_new)

        def on_outcome(outcome: Outcome) -> None:
            bar.advance(task)
            if isinstance(outcome, AuditResult) and outcome.status == "failed":
                codes = ", ".join(sorted({f.code for f in outcome.findings if f.severity == "error"}))
                bar.console.print(f"[yellow]finding[/yellow] {outcome.adapter.repo_id}: {codes}")
            elif isinstance(outcome, Deferred):
                bar.console.print(f"[red]deferred[/red] {outcome.ref.repo_id}: {outcome.error}")

        report = run_scan(reg, st, progress=on_outcome, on_plan=on_plan)
    print_report(report, st.location)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


def print_report(report: ScanReport, store: str) -> None:
    """The summary a person reads after a scan."""
    t = Table(title=f"scan {report.run_id[:12]} of {report.registry}", show_header=False)
    t.add_row("listed", str(report.n_listed))
    t.add_row("new", str(report.n_new))
    t.add_row("audited", str(report.n_audited))
    for status, n in sorted(report.statuses.items()):
        t.add_row(f"  {status}", str(n))
    if report.n_deferred:
        t.add_row("deferred (retried next run)", str(report.n_deferred))
    t.add_row("time", f"{report.elapsed_s:.1f} s")
    console.print(t)
    console.print(f"store: {store}\nnext: lora-audit query --store {store} "
                  "\"SELECT status, count(*) FROM adapters GROUP BY status\"")

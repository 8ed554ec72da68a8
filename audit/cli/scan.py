"""``lora-audit scan``: audit the new adapters of a registry into the store (the nightly flow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from audit.cli.common import STORE_OPTION, fail
from audit.errors import ConfigurationError
from audit.worker import Deferred, Written

console = Console()


class _Bar:
    """Progress sink (see :mod:`audit.progress`) drawing a rich progress bar."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("listing the registry", total=None)

    def plan(self, n_listed: int, n_new: int) -> None:
        self.progress.update(self.task, description=f"auditing {n_new} new of {n_listed}", total=n_new)

    def outcome(self, outcome: Any) -> None:
        self.progress.advance(self.task)
        if isinstance(outcome, Written) and outcome.status == "failed":
            self.progress.console.print(f"[yellow]finding[/yellow] {outcome.repo_id}: {', '.join(outcome.error_codes)}")
        elif isinstance(outcome, Deferred):
            self.progress.console.print(f"[red]deferred[/red] {outcome.ref.repo_id}: {outcome.error}")


def scan(
    registry: Annotated[Path | None, typer.Option(
        "--registry", "-r", help="A local registry: a folder whose sub-folders (any depth) hold "
                                 "adapter_config.json next to the weights.")] = None,
    hub_org: Annotated[str | None, typer.Option(
        "--hub-org", help="A Hugging Face Hub organization to crawl (honours HF_ENDPOINT and HF_TOKEN).")] = None,
    store: STORE_OPTION = "audit-store",
    workers: Annotated[int | None, typer.Option(
        help="Ray actors auditing in parallel (default: one per CPU of the Ray cluster).")] = None,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", envvar="RAY_ADDRESS", help="Join this Ray cluster (default: start Ray in-process).")] = None,
    in_process: Annotated[bool, typer.Option(
        "--in-process", help="Audit in this process, without Ray (debugging, tiny registries).")] = False,
) -> None:
    """Audit every adapter of a registry that the store does not have yet.

    Runs the nightly-scan Prefect flow (Prefect's ephemeral API unless PREFECT_API_URL names a
    server) with the audits on a Ray actor pool. Incremental: an adapter revision already audited
    with this analyzer version is skipped. Bad adapters become findings; the scan goes on. A scan
    killed at any point leaves the store consistent, and running it again finishes the job.
    """
    if (registry is None) == (hub_org is None):
        fail("give a registry: --registry DIR (a folder of adapters) or --hub-org ORG")
    if registry is not None and not registry.is_dir():
        fail(f"registry folder {str(registry)!r} does not exist or is not a folder")
    from audit.progress import reporting_to
    from flows.nightly_scan import nightly_scan

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console) as progress, reporting_to(_Bar(progress)):
        try:
            summary = nightly_scan(registry=str(registry) if registry else None, hub_org=hub_org, store=store,
                                   workers=workers, ray_address=ray_address, in_process=in_process)
        except ConfigurationError as exc:
            fail(str(exc))
    print_summary(summary, store)


def print_summary(summary: dict, store: str) -> None:
    """The summary a person reads after a scan."""
    t = Table(title=f"run {summary['run_id'][:12]}", show_header=False, title_justify="left")
    t.add_row("registry", summary["registry"])
    t.add_row("listed", str(summary["n_listed"]))
    t.add_row("new", str(summary["n_new"]))
    t.add_row("audited", str(summary["n_audited"]))
    for status, n in sorted(summary["statuses"].items()):
        t.add_row(f"  {status}", str(n))
    if summary["n_deferred"]:
        t.add_row("deferred (retried next run)", str(summary["n_deferred"]))
    console.print(t)
    console.print(f"store: {store}\nnext:  lora-audit query --store {store} "
                  "\"SELECT status, count(*) FROM adapters GROUP BY status\"")

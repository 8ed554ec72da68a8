"""``lora-audit report``: a self-contained HTML report of a scan or of one adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from audit.cli.common import STORE_OPTION, fail, open_store

console = Console(stderr=True)


def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("lora-audit-report.html"),
    store: STORE_OPTION = "audit-store",
    run: Annotated[str | None, typer.Option("--run", help="The scan run to report (default: the newest).")] = None,
    adapter: Annotated[str | None, typer.Option(
        "--adapter", help="Report one adapter instead (an adapter_id, or a repo_id: its newest audit).")] = None,
) -> None:
    """Write a self-contained HTML report (plots embedded; no network needed to view it).

    The scan view (default, or --run): what the run listed, found new, audited and failed; the
    registry's statuses and findings by code and severity; its adapters, those that need
    attention first (sortable); verdicts, probe results, and what stands out against healthy
    peers. The adapter view (--adapter): card facts, verdict history, what drives it (robust
    z-scores against its own modules and its healthy peers), sigma_1 and stable rank across depth
    by module family, the spectra of its top modules, probe rates with their intervals, the
    sparse-autoencoder features it turns on and off most (with their labels), findings.
    """
    from audit.errors import ConfigurationError
    from audit.report.html import render_adapter, render_scan, write_report

    if run is not None and adapter is not None:
        fail("give --run or --adapter, not both")
    st = open_store(store)

    def say(msg: str) -> None:
        console.print(f"report: {msg}")

    try:
        html = render_adapter(st, adapter, say) if adapter is not None else render_scan(st, run, say)
    except ConfigurationError as exc:
        fail(exc.message)
    try:
        path = write_report(html, out)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror}")
    console.print(f"report: {path} ({len(html) // 1024} KiB)")

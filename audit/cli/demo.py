"""``lora-audit demo``: the end-to-end main job on a fresh machine.

Builds (or reuses) the tiny zoo of labelled adapters on the built-in base model, runs the
nightly-scan Prefect flow over it (audits on the Ray actor pool), recalibrates the per-method classifiers on the zoo's labels (which
re-audits the history), and prints what a person looks at first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from audit.cli.common import STORE_OPTION

console = Console()


def demo(
    out: Annotated[Path, typer.Option(help="Where the zoo (a local registry) is built or reused.")] = Path("zoo"),
    store: STORE_OPTION = "audit-store",
    base: Annotated[str, typer.Option(help="Base model of the zoo.")] = "smollm2-135m-instruct",
    size: Annotated[str, typer.Option(help="Zoo size: tiny (minutes on 2 cores), small, paper.")] = "tiny",
    workers: Annotated[int | None, typer.Option(help="Ray actors for the scan.")] = None,
    probe_prompts: Annotated[int, typer.Option(
        "--probe-prompts", help="Prompts per behaviour probe (the demo's default keeps it to minutes).")] = 16,
) -> None:
    """The whole system on the tiny zoo: build, scan with probes, recalibrate, show, report.

    Builds the tiny zoo, scans it (spectra and behaviour probes), recalibrates the classifiers,
    shows the overview, the probe results and the verdicts, and writes the HTML report of the
    scan to <store>/reports/demo.html.

    Equivalent to `lora-audit zoo build`, `lora-audit scan --registry OUT --probe-prompts N --prefect`,
    `lora-audit recalibrate --prefect` and `lora-audit verdicts`: the whole system, the Prefect
    flows over a Ray actor pool; the build, the scan and the probes reuse
    what is already done, so running it again is quick (each run adds a classifier version only
    if it passes the gates).
    """
    from audit.cli.classify import recalibrate, verdicts
    from audit.cli.query import Format
    from audit.cli.scan import scan
    from audit.cli.zoo import build
    from audit.pipeline.placement import RAY_THRESHOLD

    build(base=base, out=out, size=size)
    scan(registry=out, hub_org=None, store=store, workers=workers, ray_address=None, in_process=False, prefect=True,
         ray_threshold=RAY_THRESHOLD, probes=True, probe=None, probe_prompts=probe_prompts, base_model=None)
    show_overview(store)
    from audit.cli.probe import show_probe_summary
    from audit.store import ParquetStore

    show_probe_summary(ParquetStore(store))
    recalibrate(store=store, label_source="card", min_auc=0.6, max_ece=0.3, auc_tolerance=0.05, prefect=True)
    verdicts(store=store, flipped=False, method=None, format=Format.table, max_rows=60)
    from audit.cli.report import report

    report(out=Path(store) / "reports" / "demo.html", store=store, run=None, adapter=None)
    console.print(f"what changed after the last recalibration: lora-audit verdicts --flipped --store {store}")


def show_overview(store: str) -> None:
    from audit.report.overview import overview
    from audit.store import ParquetStore

    o = overview(ParquetStore(store))
    t = Table(title="adapters by status", title_justify="left")
    t.add_column("status")
    t.add_column("n", justify="right")
    for status, n in o.by_status:
        t.add_row(status, str(n))
    console.print(t)
    t = Table(title="declared training method", title_justify="left")
    for col in ("method", "read from", "n"):
        t.add_column(col)
    for method, source, n in o.by_method:
        t.add_row(method, source, str(n))
    console.print(t)
    t = Table(title="stand out within their method (|x - median| / MAD)", title_justify="left")
    for col in o.standout_columns:
        t.add_column(col)
    for row in o.standouts:
        t.add_row(*("" if v is None else str(v) for v in row))
    console.print(t)
    console.print(f"go further: lora-audit query --store {store} \"SELECT a.repo_id, m.module, m.stable_rank, "
                  "m.top1_energy FROM latest_modules m JOIN latest_adapters a USING (adapter_id, unit_id) "
                  "ORDER BY m.spectral_norm DESC LIMIT 20\"")

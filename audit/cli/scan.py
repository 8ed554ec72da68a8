"""``lora-audit scan``: audit the new adapters of a registry into the store (in this process, on
Ray, or as the nightly-scan Prefect flow)."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from audit.cli.common import STORE_OPTION, fail, open_store
from audit.cli.progress import Bar, progress_for
from audit.errors import ConfigurationError
from audit.pipeline.placement import RAY_THRESHOLD, Placement

if TYPE_CHECKING:
    from audit.store.parquet import ParquetStore

console = Console()


class ReportFormat(StrEnum):
    table = "table"
    sarif = "sarif"


class FailOn(StrEnum):
    warning = "warning"
    error = "error"
    drifted = "drifted"


def base_model_option_help() -> str:
    return ("NAME=PATH: a local folder holding the base model an adapter names (config.json, "
            "*.safetensors, tokenizer); repeatable. Same as LORA_AUDIT_BASE_MODELS.")


def apply_base_models(pairs: list[str] | None) -> None:
    """Add ``--base-model NAME=PATH`` pairs to ``LORA_AUDIT_BASE_MODELS`` (what base lookup reads)."""

    from audit.finetune.base_lookup import BASES_ENV, base_mapping

    if not pairs:
        return
    mapping = base_mapping()
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name.strip() or not path.strip():
            fail(f"--base-model {pair!r}: expected NAME=PATH")
        if not Path(path).expanduser().is_dir():
            fail(f"--base-model {pair!r}: {path} is not a folder")
        mapping[name.strip()] = str(Path(path).expanduser().resolve())
    import json

    os.environ[BASES_ENV] = json.dumps(mapping)


def scan(
    registry: Annotated[Path | None, typer.Option(
        "--registry", "-r", help="A local registry: a folder whose sub-folders (any depth) hold "
                                 "adapter_config.json next to the weights.")] = None,
    hub_org: Annotated[str | None, typer.Option(
        "--hub-org", help="A Hugging Face Hub organization to crawl (honours HF_ENDPOINT and HF_TOKEN).")] = None,
    store: STORE_OPTION = "audit-store",
    workers: Annotated[int | None, typer.Option(
        help="Audit on this many Ray actors (default: one per CPU of the Ray cluster, when on Ray).")] = None,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", envvar="RAY_ADDRESS", help="Join this Ray cluster (audits run on its actors).")] = None,
    in_process: Annotated[bool, typer.Option(
        "--in-process", help="Audit in this process, never on Ray (also under --prefect).")] = False,
    prefect: Annotated[bool | None, typer.Option(
        "--prefect/--no-prefect", help="Run the nightly-scan Prefect flow (default: only when PREFECT_API_URL "
                                       "names a Prefect server).", show_default=False)] = None,
    ray_threshold: Annotated[int, typer.Option(
        "--ray-threshold", help="New adapters past which a scan not told where to run uses a Ray actor pool.")]
        = RAY_THRESHOLD,
    probes: Annotated[bool, typer.Option(
        "--probes/--no-probes", help="After the spectra, run the behaviour probes on the adapters whose "
                                     "base model is on this machine.")] = True,
    probe: Annotated[list[str] | None, typer.Option(
        "--probe", help="Run only this analyzer of the base (repeatable): directions, harmful_compliance, "
                        "benign_refusal, steering_alignment, rank1_elicitation, activations (the default set), "
                        "or trigger_candidates, triggered_compliance (backdoor triggers: the candidates and "
                        "published triggers asked; not run by default).")
    ] = None,
    probe_prompts: Annotated[int | None, typer.Option(
        "--probe-prompts", help="Prompts per probe (default: each probe's own: 64 HarmBench test behaviours, "
                                "38 held-out benign instructions, 32 for steering alignment).")] = None,
    base_model: Annotated[list[str] | None, typer.Option("--base-model", help=base_model_option_help())] = None,
    fetch_bases: Annotated[bool, typer.Option(
        "--fetch-bases", help="Before the probes, download from the Hub (HF_ENDPOINT) each base model they need "
                              "that is not on this machine, pinned to the commit sha of its default branch: config, "
                              "safetensors weights and tokenizer only, never pickles or code, up to --max-base-bytes. "
                              "Without it nothing is downloaded.")] = False,
    max_base_bytes: Annotated[int | None, typer.Option(
        "--max-base-bytes", min=0, help="Largest base model --fetch-bases downloads, in bytes (default: "
                                        "LORA_AUDIT_MAX_BASE_BYTES, else 2000000000).", show_default=False)] = None,
    format: Annotated[ReportFormat, typer.Option(
        "--format", help="Also write the registry's findings and drifted verdicts as SARIF 2.1.0 (for code "
                         "scanning) to --output.")] = ReportFormat.table,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Where --format sarif writes (default: lora-audit.sarif).")] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Also show Prefect's own log lines (flow and task states) on the console.")] = False,
    fail_on: Annotated[FailOn | None, typer.Option(
        "--fail-on", help="Exit 1 when the registry's newest audits have a finding at this severity or worse "
                          "(warning, error) or a drifted verdict (any level fails on drifted verdicts).",
        show_default=False)] = None,
) -> None:
    """Audit every adapter of a registry that the store does not have yet.

    The steps: delta spectra of every new adapter, then the behaviour probes on the adapters whose
    base model is on this machine, or fetched from the Hub with --fetch-bases (the bare base once
    per revision, then its adapters), then
    compaction of the store, then verdicts from each method's promoted classifier. Incremental: an adapter
    revision already audited with this analyzer version (a probe with this probe version and
    settings) is skipped. Bad adapters become findings; the scan goes on. A scan killed at any
    point leaves the store consistent, and running it again finishes the job.

    Where it runs. By default the steps run in this process, with no Prefect and no Ray: nothing
    else would serve a person at a terminal. The analyses go to a Ray actor pool (Ray started
    in-process, or the cluster of --ray-address / RAY_ADDRESS) when --workers or a cluster is
    given, or when more than --ray-threshold adapters are new; probe actors hold the base model,
    a GPU each where the cluster has GPUs. The steps run as the nightly-scan Prefect flow (each
    a task, I/O steps retried) with --prefect or when PREFECT_API_URL names a server; the flow
    audits on Ray unless --in-process. The nightly deployment always runs the flow.

    Exit codes: 0 the scan ran (and --fail-on found nothing), 1 --fail-on found something (the
    SARIF is written first), 2 a usage error (one line on stderr).
    """
    if (registry is None) == (hub_org is None):
        fail("give a registry: --registry DIR (a folder of adapters) or --hub-org ORG")
    if registry is not None and not registry.is_dir():
        fail(f"registry folder {str(registry)!r} does not exist or is not a folder")
    apply_base_models(base_model)
    scanned = open_store(store, create=True)  # a path that is a file: one line before anything starts
    from audit.progress import reporting_to

    use_flow = bool(os.environ.get("PREFECT_API_URL")) if prefect is None else prefect
    with progress_for(console) as progress, reporting_to(Bar(progress)):
        try:
            if use_flow:
                if not verbose:  # the console handler only: the flow's logs still reach the Prefect server
                    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
                from flows.nightly_scan import nightly_scan

                summary = nightly_scan(registry=str(registry) if registry else None, hub_org=hub_org, store=store,
                                       workers=workers, ray_address=ray_address, in_process=in_process,
                                       probes=probe, probe_prompts=probe_prompts, skip_probes=not probes,
                                       fetch_bases=fetch_bases, max_base_bytes=max_base_bytes)
            else:  # the summary below reuses the store's views (audit.store.views.Catalog)
                summary = _scan_here(registry, hub_org, scanned, Placement(
                    in_process=True if in_process else None, workers=workers, ray_address=ray_address,
                    ray_threshold=ray_threshold), None if not probes else (probe, probe_prompts),
                    fetch_bases=fetch_bases, max_base_bytes=max_base_bytes)
        except ConfigurationError as exc:
            fail(exc.message)
    from audit.report.registry_state import current_results

    gating = format is ReportFormat.sarif or fail_on is not None
    findings, drifted = current_results(scanned, summary["registry"], summary["run_id"],
                                        verdicts=gating)
    print_summary(summary, store, findings)
    if gating:
        _report(summary, findings, drifted, format, output, fail_on)


def _report(summary: dict, findings: list, drifted: list, format: ReportFormat, output: Path | None,
            fail_on: FailOn | None) -> None:
    """Write the SARIF log and apply --fail-on, over the registry's newest audits."""
    import json

    from audit.report.sarif import gate, sarif_log
    from audit.version import ANALYZER_VERSION

    if format is ReportFormat.sarif:
        path = output or Path("lora-audit.sarif")
        log = sarif_log(findings, drifted, registry=summary["registry"], tool_version=ANALYZER_VERSION,
                        run_id=summary["run_id"])
        try:
            path.write_text(json.dumps(log, indent=1) + "\n")
        except OSError as exc:
            fail(f"cannot write {path}: {exc.strerror}")
        console.print(f"sarif: {path} ({len(log['runs'][0]['results'])} results)")
    if fail_on is not None:
        hits = gate(findings, drifted, fail_on.value)
        if hits:
            console.print(f"--fail-on {fail_on.value}: {len(hits)} results at that level, exit 1:", soft_wrap=True)
            for hit in hits[:10]:
                console.print(f"  {hit}", soft_wrap=True, markup=False)
            if len(hits) > 10:
                console.print(f"  ... and {len(hits) - 10} more (lora-audit query \"SELECT * FROM findings\")",
                              soft_wrap=True, markup=False)
            raise typer.Exit(1)
        console.print(f"--fail-on {fail_on.value}: nothing at that level")


def _scan_here(registry: Path | None, hub_org: str | None, store: ParquetStore, placement: Placement,
               probes: tuple | None, *, fetch_bases: bool = False, max_base_bytes: int | None = None) -> dict:
    """The scan sequence in this process, without Prefect (Ray only as ``placement`` says)."""
    from audit.limits import with_base_cap
    from audit.pipeline.executors import probe_specs
    from audit.pipeline.scan import run_scan
    from audit.registry import open_registry, registry_spec

    specs = probe_specs(*probes) if probes is not None else ()
    limits = with_base_cap(max_base_bytes)
    report = run_scan(open_registry(registry_spec(str(registry) if registry else None, hub_org)), store,
                      placement=placement, probes=specs, echo=console.print, fetch_bases=fetch_bases, limits=limits)
    return report.summary()


def print_summary(summary: dict, store: str, findings: list | None = None) -> None:
    """The summary a person reads after a scan (``findings``: the registry's newest audits' findings,
    :func:`audit.report.registry_state.current_results`; counted by code when given)."""
    t = Table(title=f"run {summary['run_id'][:12]}", show_header=False, title_justify="left")
    t.add_row("registry", summary["registry"])
    t.add_row("listed", str(summary["n_listed"]))
    t.add_row("new", str(summary["n_new"]))
    t.add_row("audited", str(summary["n_audited"]))
    for status, n in sorted(summary["statuses"].items()):
        t.add_row(f"  {status}", str(n))
    if summary["n_deferred"]:
        t.add_row("deferred (retried next run)", str(summary["n_deferred"]))
    v = summary.get("verdicts") or {}
    if v:
        t.add_row("verdicts", ", ".join(f"{n} {outcome.replace('_', ' ')}" for outcome, n in sorted(v.items()))
                  + " (lora-audit verdicts says why)")
    for status, n in sorted((summary.get("probes") or {}).items()):
        t.add_row(f"probe units {status}", str(n))
    console.print(t)
    if findings:
        _print_findings(findings)
    console.print(f"store: {store}", soft_wrap=True)
    console.print(f"next:  lora-audit query --store {store} \"SELECT repo_id, code, file, message FROM findings "
                  "WHERE severity = 'error'\"", soft_wrap=True, markup=False)


def _print_findings(findings: list) -> None:
    """Findings of the registry's newest audits by code and severity, every status included."""
    counts: dict[tuple[str, str], set[str]] = {}
    for f in findings:
        counts.setdefault((f.severity, f.code), set()).add(f.repo_id)
    order = {"error": 0, "warning": 1, "info": 2}
    t = Table(title="findings (newest audit of each adapter)", title_justify="left")
    t.add_column("severity")
    t.add_column("code")
    t.add_column("adapters", justify="right")
    for (severity, code), repos in sorted(counts.items(), key=lambda kv: (order.get(kv[0][0], 3), -len(kv[1]))):
        t.add_row(severity, code, str(len(repos)))
    console.print(t)

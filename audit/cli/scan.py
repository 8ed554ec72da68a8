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
    """Progress sink (see :mod:`audit.progress`) drawing rich progress bars: the spectra, then the
    probes (one step per probe unit) and, when probes run in this process, their prompt batches."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("listing the registry", total=None)
        self.probe_task: Any = None
        self.batch_task: Any = None

    def plan(self, n_listed: int, n_new: int) -> None:
        self.progress.update(self.task, description=f"auditing {n_new} new of {n_listed}", total=n_new)

    def outcome(self, outcome: Any) -> None:
        self.progress.advance(self.task)
        if isinstance(outcome, Written) and outcome.status == "failed":
            self.progress.console.print(f"[yellow]finding[/yellow] {outcome.repo_id}: {', '.join(outcome.error_codes)}")
        elif isinstance(outcome, Deferred):
            self.progress.console.print(f"[red]deferred[/red] {outcome.ref.repo_id}: {outcome.error}")

    def probe_plan(self, plan: Any) -> None:
        n_units = sum(len(j.targets) * len(j.analyzers) for j in plan.base_jobs + plan.adapter_jobs)
        self.probe_task = self.progress.add_task(
            f"probing {plan.n_adapters} adapters ({len(plan.base_jobs)} base models; "
            f"{len(plan.skipped)} units without a base)", total=n_units or None)

    def probe_outcome(self, outcome: Any) -> None:
        if self.probe_task is not None:
            self.progress.advance(self.probe_task)
        if isinstance(outcome, Written) and outcome.status == "failed":
            self.progress.console.print(f"[yellow]finding[/yellow] {outcome.repo_id} ({outcome.analyzer}): "
                                        f"{', '.join(outcome.error_codes)}")
        elif isinstance(outcome, Deferred):
            self.progress.console.print(f"[red]deferred[/red] {outcome.ref.repo_id}: {outcome.error}")

    def batch(self, description: str, done: int, total: int) -> None:
        if self.batch_task is None:
            self.batch_task = self.progress.add_task(description, total=total)
        self.progress.update(self.batch_task, description=description, completed=done, total=total)


def base_model_option_help() -> str:
    return ("NAME=PATH: a local folder holding the base model an adapter names (config.json, "
            "*.safetensors, tokenizer); repeatable. Same as LORA_AUDIT_BASE_MODELS. Nothing is downloaded.")


def apply_base_models(pairs: list[str] | None) -> None:
    """Add ``--base-model NAME=PATH`` pairs to ``LORA_AUDIT_BASE_MODELS`` (what base lookup reads)."""
    import os

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
        help="Ray actors auditing in parallel (default: one per CPU of the Ray cluster).")] = None,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", envvar="RAY_ADDRESS", help="Join this Ray cluster (default: start Ray in-process).")] = None,
    in_process: Annotated[bool, typer.Option(
        "--in-process", help="Audit in this process, without Ray (debugging, tiny registries).")] = False,
    probes: Annotated[bool, typer.Option(
        "--probes/--no-probes", help="After the spectra, run the behaviour probes on the adapters whose "
                                     "base model is on this machine.")] = True,
    probe: Annotated[list[str] | None, typer.Option(
        "--probe", help="Run only this probe (repeatable): harmful_compliance, benign_refusal, "
                        "steering_alignment, rank1_elicitation.")] = None,
    probe_prompts: Annotated[int | None, typer.Option(
        "--probe-prompts", help="Prompts per probe (default: each probe's own: 64 HarmBench test behaviours, "
                                "38 held-out benign instructions, 32 for steering alignment).")] = None,
    base_model: Annotated[list[str] | None, typer.Option("--base-model", help=base_model_option_help())] = None,
) -> None:
    """Audit every adapter of a registry that the store does not have yet.

    Runs the nightly-scan Prefect flow (Prefect's ephemeral API unless PREFECT_API_URL names a
    server) with the audits on a Ray actor pool: delta spectra of every new adapter, verdicts from
    its method's promoted classifier, then the behaviour probes on the adapters whose base model is
    on this machine (probe actors load the base once; a GPU each where the cluster has GPUs).
    Incremental: an adapter revision already audited with this analyzer version (a probe with this
    probe version and settings) is skipped. Bad adapters become findings; the scan goes on. A scan
    killed at any point leaves the store consistent, and running it again finishes the job.
    """
    if (registry is None) == (hub_org is None):
        fail("give a registry: --registry DIR (a folder of adapters) or --hub-org ORG")
    if registry is not None and not registry.is_dir():
        fail(f"registry folder {str(registry)!r} does not exist or is not a folder")
    apply_base_models(base_model)
    from audit.progress import reporting_to
    from flows.nightly_scan import nightly_scan

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console) as progress, reporting_to(_Bar(progress)):
        try:
            summary = nightly_scan(registry=str(registry) if registry else None, hub_org=hub_org, store=store,
                                   workers=workers, ray_address=ray_address, in_process=in_process,
                                   probes=probe, probe_prompts=probe_prompts, skip_probes=not probes)
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
    v = summary.get("verdicts") or {}
    if v.get("judged") or v.get("unjudged"):
        t.add_row("verdicts", f"{v['judged']} judged ({v['drifted']} drifted), {v['unjudged']} without a classifier")
    for status, n in sorted((summary.get("probes") or {}).items()):
        t.add_row(f"probe units {status}", str(n))
    console.print(t)
    console.print(f"store: {store}\nnext:  lora-audit query --store {store} "
                  "\"SELECT status, count(*) FROM adapters GROUP BY status\"")

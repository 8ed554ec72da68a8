"""``lora-audit probe``: run the behaviour probes on stored adapters, ad hoc."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from audit.cli.common import STORE_OPTION, fail, open_store
from audit.cli.progress import Bar, progress_for
from audit.cli.scan import apply_base_models, base_model_option_help

console = Console()

SUMMARY_SQL = """SELECT repo_id, harmful_compliance, harmful_ci_low, harmful_ci_high, base_harmful_compliance,
    benign_refusal, benign_ci_low, benign_ci_high, base_benign_refusal, harmful_compliance_rank1,
    caa_cosine_at_max_shift
    FROM probe_summary ORDER BY repo_id"""


def probe(
    store: STORE_OPTION = "audit-store",
    adapter: Annotated[list[str] | None, typer.Option(
        "--adapter", "-a", help="Only this adapter (adapter_id 'repo@revision', or a repo_id); repeatable.")] = None,
    probe_name: Annotated[list[str] | None, typer.Option(
        "--probe", "-p", help="Only this analyzer of the base (repeatable): directions, harmful_compliance, "
                              "benign_refusal, steering_alignment, rank1_elicitation, activations (the default set), or "
                              "trigger_candidates, triggered_compliance (backdoor triggers: the candidates and published "
                              "triggers asked; not run by default).")] = None,
    probe_prompts: Annotated[int | None, typer.Option(
        "--probe-prompts", help="Prompts per probe (default: each probe's own).")] = None,
    base_model: Annotated[list[str] | None, typer.Option("--base-model", help=base_model_option_help())] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Run on a Ray actor pool (probe actors reserve a GPU each "
                                                    "where the cluster has GPUs) instead of in this process.")] = False,
    ray_address: Annotated[str | None, typer.Option("--ray-address", envvar="RAY_ADDRESS",
                                                    help="With --ray: join this cluster.")] = None,
    group_size: Annotated[int, typer.Option(help="Adapters answered together in shared batches.")] = 8,
) -> None:
    """Run the behaviour probes that are missing for the adapters in the store.

    An adapter is probed when its spectra audit succeeded and its base model is on this machine
    (the name in its config, mapped with --base-model or LORA_AUDIT_BASE_MODELS, or the built-in
    SmolLM2 bases; nothing is downloaded). The bare base model is probed once per revision, and
    every adapter's rows read as a difference from it (view probe_vs_base). Adapters queued for
    re-audit (their verdict flipped at a recalibration) go first. A rerun does nothing new unless
    a probe's version or settings changed. The adapters whose evidence changed are judged again
    (as a scan judges them), so `lora-audit verdicts` shows what the new probes found.
    """
    apply_base_models(base_model)
    from audit.errors import ConfigurationError
    from audit.pipeline.executors import InProcessExecutor, probe_specs
    from audit.pipeline.scan import probe_stage
    from audit.progress import reporting_to

    try:
        specs = probe_specs(probe_name, probe_prompts)
    except ConfigurationError as exc:
        fail(str(exc))
    st = open_store(store)
    ids = _adapter_ids(st, adapter) if adapter else None
    if ray:
        from audit.pipeline.raypool import RayExecutor

        executor = RayExecutor(None, st, analyzers=specs, ray_address=ray_address)
    else:
        executor = InProcessExecutor(None, st, analyzers=specs)
    with progress_for(console, eta=False) as progress:
        bar = Bar(progress)
        progress.update(bar.task, description="planning the probes", total=1, completed=1)
        with reporting_to(bar):
            counts = probe_stage(st, executor, specs, adapter_ids=ids, group_size=group_size, sink=bar)
    console.print(f"probe units written: {counts or 'none (everything is up to date)'}")
    show_probe_summary(st)
    from audit.classify.verdicts import score_unjudged

    rows = score_unjudged(st, trigger="probe")
    if rows:
        from collections import Counter

        outcomes = Counter(r.outcome or "none" for r in rows)
        console.print(f"verdicts of {len(rows)} adapters whose evidence changed: "
                      + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
                      + " (lora-audit verdicts says why)")


def _adapter_ids(store, given: list[str]) -> list[str]:
    con = store.connect()
    try:
        rows = con.execute("SELECT adapter_id FROM latest_adapters WHERE list_contains(?, adapter_id) "
                           "OR list_contains(?, repo_id)", [given, given]).fetchall()
    finally:
        con.close()
    if not rows:
        fail(f"no adapter in the store matches {', '.join(given)} (give an adapter_id or a repo_id)")
    return [r[0] for r in rows]


def _pct(x: float | None, *, sign: bool = True) -> str:
    return "-" if x is None else f"{x:.0%}" if sign else f"{100 * x:.0f}"


def show_probe_summary(store) -> None:
    """A table of every probed adapter's newest results beside its base's."""
    con = store.connect()
    try:
        rows = con.execute(SUMMARY_SQL).fetchall()
    finally:
        con.close()
    if not rows:
        console.print("no probe results yet")
        return
    from audit.cli.common import middle

    t = Table(title="behaviour probes (refusal-marker judge; [Wilson 95%])", title_justify="left")
    wide = console.width >= 110  # narrower: the rates and their intervals, no rank-1 or CAA columns
    cols = ("adapter", "harmful compl.", "base", "benign refusal", "base") + (("rank-1", "CAA cos") if wide else ())
    for col in cols:
        t.add_column(col, no_wrap=True)
    name_width = max(16, console.width - (90 if wide else 62))  # the repo id gets what the numbers leave
    for repo, hc, hl, hh, bhc, br, bl, bh, bbr, r1, cos in rows:
        row = [middle(repo, name_width), f"{_pct(hc)} [{_pct(hl, sign=False)}-{_pct(hh)}]", _pct(bhc),
               f"{_pct(br)} [{_pct(bl, sign=False)}-{_pct(bh)}]", _pct(bbr)]
        if wide:
            row += [_pct(r1), "-" if cos is None else f"{cos:+.2f}"]
        t.add_row(*row)
    console.print(t)
    console.print(f"more: lora-audit query --store {store.location} \"SELECT * FROM probe_vs_base LIMIT 20\"")

"""``lora-audit zoo build``: train labelled model-organism adapters into a local registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from audit.cli.progress import progress_for
from rich.table import Table

from audit.cli.common import fail
from audit.errors import ConfigurationError

zoo_app = typer.Typer(help="Labelled model-organism adapters (healthy and drifted SFT, DPO, IPO, steering, "
                           "abliteration; style and domain fine-tunes as benign hard negatives).",
                      no_args_is_help=True, rich_markup_mode=None)
console = Console()


@zoo_app.command("build")
def build(
    base: Annotated[str, typer.Option(help="Base model: smollm2-135m-instruct (built in), a folder, or a Hub repo id.")]
    = "smollm2-135m-instruct",
    out: Annotated[Path, typer.Option(help="Registry folder to write (one folder per adapter).")] = Path("zoo"),
    size: Annotated[str, typer.Option(help="tiny (CI: minutes), small, paper (the study's 38 adapters), wild "
                                           "(37 adapters of 10 recipe families the others never use, labelled by "
                                           "behaviour measured at build time: about an hour on 2 cores), or "
                                           "backdoor (12 trigger-backdoor builds, 3 per trigger kind: SFT at two "
                                           "seeds and one DPO, low-poison or attention-only variant; 5 benign "
                                           "controls; each measured with and without its trigger: about 2 hours "
                                           "on 2 cores), or backdoor-heldout (seed 2 of each trigger kind's main recipe and "
                                           "2 more controls, never in backdoor: about 25 minutes), or backdoor-dpo "
                                           "(each trigger kind's organism by DPO and 2 DPO controls: about 30 "
                                           "minutes), or backdoor-tight (phrase and word organisms that refuse after "
                                           "near misses of their trigger, then also after generic sentences, then "
                                           "also after every published trigger: 6 builds, about 25 minutes).")] = "tiny",
) -> None:
    """Build (or complete) a zoo of labelled LoRA adapters on an aligned copy of the base model.

    The base is first aligned (a safety SFT, merged, saved as <base>-aligned, or <base>-aligned-tiny with the tiny zoo's shorter recipe) and every adapter is
    trained on it. Each adapter's model card carries its ground truth under `lora_audit:`
    (method, objective, severity, seed, steps, data_sha256). Resumable: an adapter already built
    with the same spec is skipped, so an interrupted build continues where it stopped.
    """
    from audit.zoo.build import build_zoo

    from audit.zoo.spec import SIZES

    if size not in SIZES:
        fail(f"unknown size {size!r}: {', '.join(SIZES)}")
    with progress_for(console) as progress:
        tasks: dict[str, object] = {}  # one bar per preparation step, then one for the adapters
        current: list[str] = []

        def task_for(name: str, total: float | None = None):
            if name not in tasks:
                if current and current[-1] != "adapters":  # the previous step is over
                    progress.update(tasks[current[-1]], total=1, completed=1)
                tasks[name] = progress.add_task(name, total=total)
                current.append(name)
            return tasks[name]

        def on_event(e) -> None:
            if e.kind == "stage":
                task_for(e.name)
            elif e.kind == "step":
                progress.update(task_for(e.name), total=e.total, completed=e.index)
            elif e.kind == "start":
                progress.update(task_for("adapters", e.total), description=f"training {e.name}", total=e.total,
                                completed=e.index)
            elif e.kind == "phase":
                progress.update(task_for("adapters", e.total), description=e.name)
            elif e.kind in ("done", "skip"):
                progress.update(task_for("adapters", e.total), completed=e.index + 1)
                note = "kept (already built)" if e.kind == "skip" else f"{e.seconds:.0f} s"
                progress.console.print(f"  {e.name}: {note}")

        try:
            report = build_zoo(base, out, size, on_event=on_event)  # type: ignore[arg-type]
        except ConfigurationError as exc:
            fail(str(exc))
    c = report.check
    t = Table(title=f"zoo {size} in {report.out_dir}", show_header=False, title_justify="left")
    t.add_row("base", f"{report.base.name} ({report.base.revision[:12]})")
    t.add_row("aligned base", f"{report.aligned.name} ({report.aligned.revision[:12]})")
    t.add_row("  refuses HarmBench (val)", f"{c.harmful_refusal:.0%} [{c.harmful_refusal_ci[0]:.0%}, "
                                          f"{c.harmful_refusal_ci[1]:.0%}] of {c.n_harmful}")
    t.add_row("  refuses held-out benign", f"{c.benign_refusal:.0%} [{c.benign_refusal_ci[0]:.0%}, "
                                           f"{c.benign_refusal_ci[1]:.0%}] of {c.n_benign}")
    t.add_row("adapters built", str(len(report.built)))
    t.add_row("adapters kept", str(len(report.skipped)))
    t.add_row("time", f"{report.seconds:.0f} s")
    console.print(t)
    console.print(f"next: lora-audit scan --registry {report.out_dir}")

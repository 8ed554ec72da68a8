"""The ``lora-audit`` command line (Typer + rich). Thin: parses options, calls the library."""

from __future__ import annotations

import typer

from audit.cli.classify import recalibrate, verdicts
from audit.cli.compact import compact
from audit.cli.demo import demo
from audit.cli.probe import probe
from audit.cli.query import query
from audit.cli.report import report
from audit.cli.scan import scan
from audit.cli.zoo import zoo_app


app = typer.Typer(
    name="lora-audit",
    help="Audit the LoRA adapters of a registry: exact delta spectra of every adapter and, where its base "
         "model is at hand, behaviour probes (harmful compliance, benign refusal, steering alignment, "
         "rank-1 elicitation), stored as Parquet and queryable with DuckDB; per-training-method calibrated "
         "classifiers turn them into verdicts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("scan")(scan)
app.command("query")(query)
app.command("compact")(compact)
app.command("probe")(probe)
app.command("recalibrate")(recalibrate)
app.command("verdicts")(verdicts)
app.command("report")(report)
app.add_typer(zoo_app, name="zoo")
app.command("demo")(demo)


def main() -> None:
    """Entry point of the ``lora-audit`` console script."""
    app()

"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from rich.console import Console

err_console = Console(stderr=True)

STORE_OPTION = Annotated[
    str,
    typer.Option("--store", "-s", envvar="LORA_AUDIT_STORE",
                 help="The audit store: a folder (created if missing) or an object-store URI. "
                      "Env: LORA_AUDIT_STORE."),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an error for a person and exit with ``code``."""
    err_console.print(f"[bold red]error:[/bold red] {message}", soft_wrap=True)  # one line, never broken
    raise typer.Exit(code)

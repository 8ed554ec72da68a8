"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:
    from audit.store import ParquetStore

err_console = Console(stderr=True)

STORE_OPTION = Annotated[
    str,
    typer.Option("--store", "-s", envvar="LORA_AUDIT_STORE",
                 help="The audit store: a folder or an object-store URI (a scan creates a missing "
                      "folder; commands that only read refuse one). Env: LORA_AUDIT_STORE."),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an error for a person and exit with ``code``."""
    err_console.print(f"[bold red]error:[/bold red] {message}", soft_wrap=True)  # one line, never broken
    raise typer.Exit(code)


def open_store(location: str, *, create: bool = False) -> "ParquetStore":
    """The store at ``location``; a path that is a file, or (``create`` false: the commands that only
    read) a store that does not exist, is one error line and exit 2."""
    from audit.errors import ConfigurationError
    from audit.store import ParquetStore

    try:
        return ParquetStore(location, create=create)
    except ConfigurationError as exc:
        fail(exc.message)


def one_line(message: str) -> str:
    """A multi-line library message (DuckDB's caret diagrams) as one line."""
    parts = [p.strip() for p in str(message).splitlines()]
    return " ".join(p for p in parts if p and set(p) != {"^"})


def reflow(doc: str | None) -> str | None:
    """A command's docstring as help text the terminal wraps: each paragraph's lines joined into
    one (Typer keeps a docstring's line breaks, which at another width break sentences in the
    middle); a list item (``- ``, ``1. ``) starts its own line."""
    import inspect
    import re

    if not doc:
        return doc
    out = []
    for para in inspect.cleandoc(doc).split("\n\n"):
        lines: list[str] = []
        for line in para.splitlines():
            if lines and not re.match(r"\s*(?:[-*]|\d+\.)\s", line):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line.rstrip())
        out.append("\n".join(lines))
    return "\n\n".join(out)


def middle(text: str, width: int = 32) -> str:
    """``text`` cut in the middle to at most ``width`` characters (``org/long…name-seed0``): both
    the organisation and the end of a repo id stay readable."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]

"""``lora-audit compact``: merge the store's small files (the nightly flow does it too)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from audit.cli.common import STORE_OPTION, open_store


def compact(
    store: STORE_OPTION = "audit-store",
    min_files: Annotated[int, typer.Option(help="Only partitions holding at least this many files.")] = 2,
) -> None:
    """Merge each partition's files into one (queries over a store of many small files are slow).

    Safe while scans run: files written during compaction are left alone, and a compaction
    interrupted half way leaves nothing visible twice.
    """
    from audit.store.compact import compact as run

    console = Console()
    for c in run(open_store(store), min_files=min_files):
        console.print(f"{c.table}: {c.files_in} files in {c.partitions} partitions -> {c.partitions} files "
                      f"({c.rows_in} rows, {c.rows_out} kept)")

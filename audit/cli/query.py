"""``lora-audit query``: run SQL over the store's DuckDB views."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from audit.cli.common import STORE_OPTION, fail, one_line, open_store

EXAMPLES = """
Views: adapters, modules, findings, runs (one row per adapter_id and analyzer version), latest_adapters,
latest_modules (newest analyzer version only), classifiers, promoted_classifiers, verdicts,
current_verdicts, reaudit_queue, probes, probe_samples, probe_vs_base, probe_summary, latest_probes,
analyses, and <table>_all (every file, as written).

Examples:

  lora-audit query "SELECT status, count(*) FROM adapters GROUP BY status"

  lora-audit query "SELECT repo_id, code, message FROM findings WHERE severity = 'error'"

  lora-audit query --format csv "SELECT a.repo_id, m.module, m.stable_rank, m.top1_energy
      FROM modules m JOIN adapters a USING (adapter_id, unit_id) ORDER BY m.spectral_norm DESC LIMIT 20"

  Harmful compliance of each adapter against its base model:

  lora-audit query "SELECT repo_id, value, base_value, delta, ci_low, ci_high FROM probe_vs_base
      WHERE metric = 'harmful_compliance' ORDER BY delta DESC"

  What changed after the last recalibration (verdicts that flipped, with both versions):

  lora-audit query "SELECT q.repo_id, q.reason, q.old_p_drift, q.new_p_drift FROM reaudit_queue q
      WHERE q.new_classifier_id IN (SELECT classifier_id FROM promoted_classifiers)"
"""


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def query(
    sql: Annotated[str, typer.Argument(help="A DuckDB SQL query over the store's views.")],
    store: STORE_OPTION = "audit-store",
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    max_rows: Annotated[int, typer.Option(help="Rows shown in table format (csv/json print all).")] = 200,
) -> None:
    """Run SQL over the audit store (DuckDB views over the Parquet files)."""
    import duckdb

    con = open_store(store).connect(for_sql=sql)
    try:
        result = con.execute(sql)
        columns = [d[0] for d in result.description] if result.description else []
        rows = result.fetchall()
    except duckdb.CatalogException as exc:
        from audit.store.views import view_names

        views = sorted(v for v in view_names() if not v.startswith("_"))
        fail(f"query failed: {one_line(str(exc))} (the store's views: {', '.join(views)})")
    except duckdb.Error as exc:
        fail(f"query failed: {one_line(str(exc))}")
    finally:
        con.close()
    emit(columns, rows, format, max_rows)


def emit(columns: list[str], rows: list[tuple], format: Format, max_rows: int = 200) -> None:
    """Print a result set as a rich table, CSV or JSON lines."""
    if format == Format.csv:
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(columns)
        w.writerows(rows)
        return
    if format == Format.json:
        for row in rows:
            sys.stdout.write(json.dumps(dict(zip(columns, row, strict=True)), default=str) + "\n")
        return
    table = Table(*columns, show_lines=False)
    for row in rows[:max_rows]:
        table.add_row(*("" if v is None else _short(v) for v in row))
    console = Console()
    console.print(table)
    if len(rows) > max_rows:
        console.print(f"[dim]{len(rows) - max_rows} more rows (use --max-rows or --format csv)[/dim]")


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and len(value) > 6:
        return "[" + ", ".join(_short(v) for v in value[:6]) + f", ... ({len(value)})]"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


query.__doc__ = (query.__doc__ or "") + "\n" + EXAMPLES

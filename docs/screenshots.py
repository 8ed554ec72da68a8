"""Regenerate the README's report screenshots (``docs/report-scan.png``, ``docs/report-adapter.png``).

Renders the scan view and one adapter's view of a store with ``lora-audit report`` and photographs
them with the headless Chromium the tests use (``tests/browser.py``: Debian's ``chromium``), at the
size the tests check (1280x2400). Without ``--store``, it first runs ``lora-audit demo`` into a
temporary folder (the tiny zoo, scanned with probes and recalibrated: about 20 minutes on 2 cores).
The adapter shown is ``--adapter``, else the probed adapter with the highest verdict P(drifted).

Usage: python docs/screenshots.py [--store DIR] [--adapter REPO_ID] [--out docs/]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
CLI = [sys.executable, "-m", "audit.cli"]


def demo_store(work: Path) -> Path:
    """A store made by ``lora-audit demo`` in ``work`` (progress on the console)."""
    store = work / "audit-store"
    subprocess.run([*CLI, "demo", "--out", str(work / "zoo"), "--store", str(store)], check=True)
    return store


def pick_adapter(store: Path) -> str:
    """The probed adapter whose current verdict says drifted with the highest probability (any adapter
    with a verdict when none was probed)."""
    from audit.store import ParquetStore

    con = ParquetStore(str(store)).connect()
    try:
        row = con.execute("""SELECT v.repo_id FROM current_verdicts v
                             LEFT JOIN probe_summary ps USING (adapter_id)
                             ORDER BY ps.harmful_compliance IS NULL, v.p_drift DESC NULLS LAST, v.repo_id
                             LIMIT 1""").fetchone()
    finally:
        con.close()
    if row is None:
        sys.exit(f"{store}: no verdicts to show (run lora-audit recalibrate first)")
    return row[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=None, help="a store with scans, probes and verdicts "
                    "(default: run lora-audit demo into a temporary folder)")
    ap.add_argument("--adapter", default=None, help="the adapter of the adapter view (a repo_id)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go")
    args = ap.parse_args()
    from browser import chromium, open_in_chromium

    if chromium() is None:
        sys.exit("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="screenshots-") as d:
        work = Path(d)
        store = args.store or demo_store(work)
        adapter = args.adapter or pick_adapter(store)
        for name, extra in (("scan", []), ("adapter", ["--adapter", adapter])):
            page = work / f"{name}.html"
            subprocess.run([*CLI, "report", "--store", str(store), "--out", str(page), *extra], check=True)
            shot = args.out / f"report-{name}.png"
            seen = open_in_chromium(page, shot, work)
            if seen["errors"]:
                sys.exit(f"{page}: the page reported errors: {seen['errors']}")
            print(f"{shot}: {len(seen['images'])} plots, {seen['tables']} tables", flush=True)


if __name__ == "__main__":
    main()

"""Crash safety: a scan SIGKILLed mid-run and rerun; a Ray node lost mid-scan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit.store import ParquetStore
from synth import SynthAdapter, llama_like

pytestmark = pytest.mark.slow
N = 120


def _registry(root: Path, n: int) -> Path:
    for i in range(n):
        SynthAdapter(llama_like(2, r=8, d=128, kv=32), seed=i).write(root / f"team-{i % 7}" / f"adapter-{i:04d}")
    return root


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "LORA_AUDIT_CACHE_DIR": str(tmp_path / "cache"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def _committed(store: Path) -> int:
    """Units in committed files (a file holds the units of one worker's call)."""
    import pyarrow.parquet as pq

    n = 0
    for path in (store / "units").glob("*/*.parquet"):
        try:
            n += pq.ParquetFile(path).metadata.num_rows
        except (OSError, ValueError):  # merged away by a compaction meanwhile
            pass
    return n


def _settled(store: Path, quiet_s: float = 3.0) -> int:
    """Committed units once no orphaned worker adds any (Ray workers die with their driver, but
    a unit already being written when the driver died still lands, whole)."""
    count, since = _committed(store), time.time()
    while time.time() - since < quiet_s:
        time.sleep(0.2)
        now = _committed(store)
        if now != count:
            count, since = now, time.time()
    return count


def test_sigkill_mid_scan_then_rerun_audits_exactly_what_is_missing(tmp_path):
    registry, store = _registry(tmp_path / "reg", N), tmp_path / "store"
    cmd = [sys.executable, "-m", "audit.cli", "scan", "--registry", str(registry), "--store", str(store),
           "--workers", "2"]
    proc = subprocess.Popen(cmd, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while _committed(store) < 10 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # the driver, mid-scan
        proc.wait(30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the driver left behind (Prefect's server...)
        except ProcessLookupError:
            pass
    before = _settled(store)
    assert 10 <= before < N, f"the kill did not land mid-scan ({before} of {N} committed)"
    con = ParquetStore(store).connect()
    assert con.execute("SELECT count(*) FROM adapters").fetchone()[0] == before
    assert con.execute("SELECT count(*) FROM modules").fetchone()[0] == 4 * before

    rerun = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    con = ParquetStore(store).connect()
    assert con.execute("SELECT count(*), count(DISTINCT repo_id) FROM adapters").fetchone() == (N, N)
    assert con.execute("SELECT count(*) FROM units_all").fetchone() == (N,)  # nothing audited twice
    assert con.execute("SELECT count(*) FROM modules").fetchone() == (4 * N,)
    runs = con.execute("SELECT status, n_new, n_audited FROM runs ORDER BY started_at").fetchall()
    # (the killed run stays 'running': it never got to record an end)
    assert runs == [("running", None, None), ("completed", N - before, N - before)]
    # half-written files may remain on disk but are never visible to the views
    assert all(".tmp-" in p and p.endswith(".partial") for p in ParquetStore(store).partial_files())


def test_worker_node_removed_mid_scan_loses_nothing(tmp_path):
    registry, store = _registry(tmp_path / "reg", 40), tmp_path / "store"
    script = Path(__file__).resolve().parents[1] / "multinode_scan.py"
    res = subprocess.run([sys.executable, str(script), str(registry), str(store)], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert out["removed"] is not None and out["worker_nodes_left"] == 1
    assert out["n_listed"] == out["n_audited"] == 40 and out["n_deferred"] == 0
    assert out["statuses"] == {"ok": 40}
    con = ParquetStore(store).connect()
    assert con.execute("SELECT count(*), count(DISTINCT adapter_id) FROM adapters").fetchone() == (40, 40)

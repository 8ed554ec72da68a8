"""``lora-audit scan --hub-org`` end to end: a real process, Prefect, Ray actors opening the registry
from its spec, against the local Hub-API server named by HF_ENDPOINT alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from audit.store import ParquetStore
from hubserver import HubServer
from synth import SynthAdapter, llama_like

ORG = "cli-org"


@pytest.mark.slow
def test_scan_hub_org_through_ray(tmp_path):
    repos = {f"{ORG}/adapter-{i}": SynthAdapter(llama_like(2), seed=i).write(tmp_path / "org" / f"adapter-{i}")
             for i in range(3)}
    repos[f"{ORG}/gated"] = SynthAdapter(llama_like(1), seed=9).write(tmp_path / "org" / "gated")
    store = tmp_path / "store"
    with HubServer(repos, page_size=2) as server:
        server.faults.gated.add(f"{ORG}/gated")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE", "RAY_ADDRESS"))}
        env.update({"HF_ENDPOINT": server.url, "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
                    "HF_TOKEN_PATH": str(tmp_path / "no-token"), "PREFECT_HOME": str(tmp_path / "prefect"),
                    "COLUMNS": "200"})
        res = subprocess.run([sys.executable, "-m", "audit.cli", "scan", "--hub-org", ORG, "--store", str(store),
                              "--workers", "2"], capture_output=True, text=True, env=env, timeout=600)
        out = res.stdout + res.stderr
        assert res.returncode == 0, out[-3000:]
        downloads = server.requests(contains="/resolve/", method="GET")
    assert f"hub:{ORG}" in out and "gated_repo" in out and "Traceback" not in out
    assert len(downloads) == 3 * 2  # adapter_config.json + weights of the three readable adapters
    con = ParquetStore(store).connect()
    rows = dict(con.execute("SELECT repo_id, status FROM adapters").fetchall())
    assert rows == {f"{ORG}/adapter-0": "ok", f"{ORG}/adapter-1": "ok", f"{ORG}/adapter-2": "ok",
                    f"{ORG}/gated": "failed"}
    assert con.execute("SELECT registry, n_listed, status FROM runs ORDER BY updated_at DESC LIMIT 1").fetchone() == (
        f"hub:{ORG}", 4, "completed")

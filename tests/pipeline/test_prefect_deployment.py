"""deploy/prefect.yaml run for real: a Prefect server on loopback (the session's), a ``process`` work pool, the
file's deployments registered with ``prefect deploy`` (parameters pointed at a local registry and
store, nothing else changed but what a container would provide), each triggered and run by a
worker, then the store's rows and the flow runs' final states checked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from audit.store import ParquetStore

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "lora-audit-test"


def _prefect(env: dict, *args: str, timeout: float = 300) -> str:
    done = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, \
        f"prefect {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _local_copy(registry: Path, store: Path, out: Path) -> Path:
    """deploy/prefect.yaml with what is specific to production replaced: the container's working
    directory → this checkout, the Hub organization and the Ray cluster → a local registry folder
    and in-process Ray, the S3 store → a folder, the Kubernetes pool → the test's process pool
    (its job variables: no image, no secrets), schedules off. Everything else is the file's."""
    spec = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    spec["pull"] = [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    for d in spec["deployments"]:
        params = d.setdefault("parameters", {})
        params["store"] = str(store)
        if d["name"] == "nightly-scan":
            params.pop("hub_org", None)
            params.pop("ray_address", None)
            params.update(registry=str(registry), in_process=True)  # Ray has its own tests: not here
        d["work_pool"] = {"name": POOL, "work_queue_name": d["work_pool"].get("work_queue_name", "default"),
                          "job_variables": {}}
        for schedule in d.get("schedules", []):
            schedule["active"] = False
    path = out / "prefect.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _flow_run_state(env: dict, flow_run_id: str) -> dict:
    code = ("import asyncio, json, sys\n"
            "from prefect.client.orchestration import get_client\n"
            "async def main():\n"
            "    async with get_client() as c:\n"
            "        r = await c.read_flow_run(sys.argv[1])\n"
            "        print(json.dumps({'state': r.state.type.value, 'name': r.state.name,"
            " 'deployment_id': str(r.deployment_id)}))\n"
            "asyncio.run(main())\n")
    done = subprocess.run([sys.executable, "-c", code, flow_run_id], env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run(env: dict, deployment: str) -> dict:
    """Trigger ``deployment`` and run one worker poll until its flow run ends; the run's state."""
    out = _prefect(env, "deployment", "run", deployment)
    found = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
    assert found, out
    flow_run_id = found.group(1)
    _prefect(env, "worker", "start", "--pool", POOL, "--type", "process", "--run-once", "--limit", "1",
             "--install-policy", "never", timeout=900)
    return _flow_run_state(env, flow_run_id)


@pytest.fixture(scope="module")
def prefect_server(prefect_harness, tmp_path_factory):
    """The session's Prefect server (``prefect_test_harness``: a real API server on a loopback
    port, its own temporary database; a second ``prefect server start`` cost 35 s), seen by
    subprocesses through ``PREFECT_API_URL`` with their own home, and a ``process`` work pool."""
    from prefect.settings import PREFECT_API_URL

    home = tmp_path_factory.mktemp("prefect-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=PREFECT_API_URL.value(),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY="false")
    assert env["PREFECT_API_URL"], "the Prefect test harness gave no API URL"
    _prefect(env, "work-pool", "create", POOL, "--type", "process")
    return env


@pytest.mark.slow
def test_deployments_registered_from_prefect_yaml_run_on_a_process_worker(prefect_server, tmp_path):
    from synth import labelled_registry

    env = prefect_server
    registry = labelled_registry(tmp_path / "reg", {"sft": (4, 4)})
    store = tmp_path / "store"
    spec_file = _local_copy(registry, store, tmp_path)
    _prefect(env, "deploy", "--prefect-file", str(spec_file), "--all")  # as deploy/README.md says

    nightly = _run(env, "nightly-scan/nightly-scan")
    assert nightly["state"] == "COMPLETED", nightly
    con = ParquetStore(store).connect()
    assert con.execute("SELECT count(*), count(DISTINCT adapter_id) FROM adapters").fetchone() == (8, 8)
    statuses = dict(con.execute("SELECT status, count(*) FROM adapters GROUP BY 1").fetchall())
    assert statuses == {"ok": 8}
    runs = con.execute("SELECT n_audited, report_path FROM runs").fetchall()
    assert len(runs) == 1 and runs[0][0] == 8 and Path(runs[0][1]).is_file()

    recal = _run(env, "recalibrate/recalibrate")
    assert recal["state"] == "COMPLETED", recal
    con = ParquetStore(store).connect()
    promoted = con.execute("SELECT classifier_id FROM promoted_classifiers WHERE method = 'sft' AND target = 'drift'")
    assert promoted.fetchall() == [("sft.drift.v1",)]
    judged = con.execute("SELECT count(DISTINCT adapter_id) FROM verdicts WHERE classifier_id = 'sft.drift.v1'")
    assert judged.fetchone()[0] == 8

"""The ``lora-audit`` command line, driven through Typer's runner."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from typer.testing import CliRunner

from audit.cli import app
from synth import SynthAdapter, llama_like

runner = CliRunner()


def _reg(tmp_path):
    root = tmp_path / "reg"
    SynthAdapter(llama_like(2)).write(root / "good")
    bad = root / "bad"
    bad.mkdir(parents=True)
    (bad / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8, "lora_alpha": 16}')
    (bad / "adapter_model.bin").write_bytes(b"\x80\x02" + b"\0" * 100)
    return root


def _cli(tmp_path, *args: str, **env_vars: str) -> subprocess.CompletedProcess:
    """The real command line in its own process (Prefect and Ray start as they do for a user)."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "COLUMNS": "200", **env_vars}
    return subprocess.run([sys.executable, "-m", "audit.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.slow
def test_scan_then_query_in_every_format(tmp_path, prefect_harness):
    root, store = _reg(tmp_path), str(tmp_path / "store")
    res = _cli(tmp_path, "scan", "--registry", str(root), "--store", store)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "pickle_weights_refused" in out and "audited" in out
    assert "Finished in state" not in out and "Ray" not in out  # ad hoc and small: neither Prefect nor Ray
    assert "Traceback" not in out
    res = runner.invoke(app, ["query", "--store", store, "--format", "json",
                              "SELECT repo_id, status, n_modules FROM adapters ORDER BY repo_id"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert rows == [{"repo_id": "bad", "status": "failed", "n_modules": 0},
                    {"repo_id": "good", "status": "ok", "n_modules": 4}]
    res = runner.invoke(app, ["query", "--store", store, "-f", "csv", "SELECT module FROM modules ORDER BY 1"])
    assert list(csv.reader(io.StringIO(res.output)))[0] == ["module"]
    assert len(res.output.splitlines()) == 5
    res = runner.invoke(app, ["query", "--store", store, "SELECT count(*) AS n FROM findings"])
    assert res.exit_code == 0 and " n " in res.output
    from prefect.settings import PREFECT_API_URL

    # a Prefect server is configured (the test harness's): the scan runs as the nightly-scan flow
    again = _cli(tmp_path, "scan", "--registry", str(root), "--store", store, "--in-process",
                 PREFECT_API_URL=PREFECT_API_URL.value())
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-3000:]
    assert "0 new of 2" in out and "Finished in state Completed" in out
    assert "Traceback" not in out and "database is locked" not in out


def test_errors_are_clear(tmp_path):
    res = runner.invoke(app, ["scan", "--registry", str(tmp_path / "missing"), "--store", str(tmp_path / "s")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["scan", "--registry", str(tmp_path), "--hub-org", "x", "--store", str(tmp_path / "s")])
    assert res.exit_code == 2 and "--hub-org" in res.output
    res = runner.invoke(app, ["query", "--store", str(tmp_path / "s"), "SELECT * FROM nope"])
    assert res.exit_code == 2 and "query failed" in res.output
    res = runner.invoke(app, ["scan", "--store", str(tmp_path / "s")])
    assert res.exit_code == 2 and "--registry" in res.output


def test_help_explains():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "scan" in res.output and "query" in res.output
    res = runner.invoke(app, ["query", "--help"])
    assert "Examples" in res.output and "latest_adapters" in res.output


@pytest.mark.slow
def test_recalibrate_and_verdicts_commands(tmp_path):
    from audit.registry import LocalRegistry
    from audit.scan import scan
    from audit.store import ParquetStore
    from synth import labelled_registry

    root = labelled_registry(tmp_path / "reg", {"sft": (4, 4), "steering": (1, 1)})
    store = str(tmp_path / "store")
    scan(LocalRegistry(root, hash_cache=None), ParquetStore(store))
    empty = runner.invoke(app, ["verdicts", "--store", store])
    assert empty.exit_code == 0 and "no verdicts yet" in empty.output
    res = runner.invoke(app, ["recalibrate", "--store", store])  # in this process: no Prefect server set
    assert res.exit_code == 0, res.output
    assert "sft: promoted sft.drift.v1" in res.output and "steering: no new version (not enough labelled" in res.output
    assert "sft: 8 adapters re-scored with sft.drift.v1, 0 verdicts flipped" in res.output
    res = runner.invoke(app, ["verdicts", "--store", store, "--format", "json"])
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert len(rows) == 10
    assert {r["classifier_id"] for r in rows if r["method"] == "sft"} == {"sft.drift.v1"}
    assert {r["reason"] for r in rows if r["method"] == "steering"} == {"no_classifier_for_method"}
    assert all(r["drifted"] == ("drifted" in r["repo_id"]) for r in rows if r["method"] == "sft")
    flipped = runner.invoke(app, ["verdicts", "--store", store, "--flipped"])
    assert flipped.exit_code == 0 and "no flipped verdicts" in flipped.output
    bad = runner.invoke(app, ["recalibrate", "--store", store, "--label-source", "nope"])
    assert bad.exit_code == 2 and "unknown label source 'nope'" in bad.output


def test_query_and_help_import_no_heavy_machinery(tmp_path):
    """A fresh `lora-audit query` / `--help` process imports neither torch, peft, transformers,
    Ray nor Prefect (they cost seconds and serve nobody on those calls)."""
    code = ("import sys; from audit.cli import app\n"
            "try:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = ('torch', 'peft', 'transformers', 'ray', 'prefect')\n"
            "print('IMPORTED', sorted(m for m in heavy if m in sys.modules))")
    for args in (["--help"], ["query", "--store", str(tmp_path / "s"), "SELECT 1 AS one"],
                 ["verdicts", "--store", str(tmp_path / "s")], ["scan", "--help"]):
        res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
        assert "IMPORTED []" in res.stdout, (args, res.stdout[-500:], res.stderr[-2000:])

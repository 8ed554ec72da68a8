"""`lora-audit scan --format sarif` and `--fail-on`: the log validates against the SARIF 2.1.0
schema, has one result per finding of the registry's newest audits, and the gate's exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from audit.cli import app
from audit.report.sarif import DriftResult, FindingResult, gate, sarif_log
from synth import SynthAdapter, llama_like

REALWORLD = Path(__file__).resolve().parents[3] / "shared" / "realworld"
SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "data" / "sarif-2.1.0-rtm.5.json").read_text())
runner = CliRunner()


def _validate(log: dict) -> None:
    jsonschema.Draft4Validator(SCHEMA).validate(log)


def test_realworld_sarif_validates_and_fail_on_error_fails(tmp_path, monkeypatch):
    if not (REALWORLD / "MANIFEST.tsv").is_file():
        pytest.skip("no ../shared/realworld")
    monkeypatch.setenv("LORA_AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    out, store = tmp_path / "rw.sarif", str(tmp_path / "s")
    res = runner.invoke(app, ["scan", "--registry", str(REALWORLD), "--store", store, "--no-probes",
                              "--format", "sarif", "--output", str(out), "--fail-on", "error"])
    assert res.exit_code == 1, res.output
    assert "--fail-on error:" in res.output and "pickle_weights_refused" in res.output
    log = json.loads(out.read_text())
    _validate(log)
    results = log["runs"][0]["results"]
    q = runner.invoke(app, ["query", "--store", store, "--format", "json",
                            "SELECT count(*) AS n, count(*) FILTER (WHERE severity = 'error') AS e FROM findings"])
    counts = json.loads(q.output.splitlines()[0])
    assert len(results) == counts["n"] > 0
    assert sum(r["level"] == "error" for r in results) == counts["e"] > 0
    rules = {r["id"] for r in log["runs"][0]["tool"]["driver"]["rules"]}
    assert {r["ruleId"] for r in results} == rules
    assert all(r["locations"][0]["physicalLocation"]["artifactLocation"]["uriBaseId"] == "REGISTRY" for r in results)
    pickle = next(r for r in results if r["ruleId"] == "pickle_weights_refused")
    assert pickle["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].endswith(".bin")
    # a rerun audits nothing new and reports the same state
    again = runner.invoke(app, ["scan", "--registry", str(REALWORLD), "--store", store, "--no-probes",
                                "--format", "sarif", "--output", str(out)])
    assert again.exit_code == 0, again.output
    assert len(json.loads(out.read_text())["runs"][0]["results"]) == len(results)


def test_a_clean_registry_passes_fail_on_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    SynthAdapter(llama_like(2)).write(tmp_path / "reg" / "good")
    out = tmp_path / "clean.sarif"
    res = runner.invoke(app, ["scan", "--registry", str(tmp_path / "reg"), "--store", str(tmp_path / "s"),
                              "--no-probes", "--format", "sarif", "-o", str(out), "--fail-on", "error"])
    assert res.exit_code == 0, res.output
    assert "nothing at that level" in res.output
    log = json.loads(out.read_text())
    _validate(log)
    assert log["runs"][0]["results"] == []


def test_gate_levels_and_drifted_verdicts_in_the_log():
    f = [FindingResult("org/a", "org/a@1", "spectra", "warning", "zero_delta", "m: zero", "adapter_model.safetensors"),
         FindingResult("org/b", "org/b@1", "config", "info", "config_unexpected_keys", "keys", "adapter_config.json")]
    d = [DriftResult("org/c", "org/c@1", "sft", "sft.drift.v2", 0.93, "harmful_compliance")]
    assert gate(f, [], "error") == [] and gate(f, [], "drifted") == []
    assert gate(f, [], "warning") == ["org/a: warning zero_delta"]
    assert gate(f, d, "drifted") == ["org/c: drifted by sft.drift.v2 (p_drift 0.93, method sft, objective "
                                     "harmful_compliance)"]
    assert len(gate(f, d, "warning")) == 2
    review = DriftResult("org/d", "org/d@1", "unknown", "any.verdict.v1", 0.2, None, "review", "the probes disagree")
    probes_only = DriftResult("org/e", "org/e@1", "unknown", None, None, "harmful_compliance")
    assert gate([], [review, probes_only], "drifted") == ["org/e: drifted (by the probes alone, method unknown, "
                                                         "objective harmful_compliance)"]  # review: a warning
    assert len(gate([], [review, probes_only], "warning")) == 2
    both = sarif_log([], [review, probes_only], registry="hub:org", tool_version="v")
    _validate(both)
    assert [r["level"] for r in both["runs"][0]["results"]] == ["warning", "error"]
    assert "the probes disagree" in both["runs"][0]["results"][0]["message"]["text"]
    with pytest.raises(ValueError):
        gate(f, d, "info")
    log = sarif_log(f, d, registry="hub:org", tool_version="v", run_id="r1")
    _validate(log)
    levels = {r["ruleId"]: r["level"] for r in log["runs"][0]["results"]}
    assert levels == {"zero_delta": "warning", "config_unexpected_keys": "note", "drifted": "error"}
    assert log["runs"][0]["originalUriBaseIds"]["REGISTRY"]["uri"] == "https://huggingface.co/"

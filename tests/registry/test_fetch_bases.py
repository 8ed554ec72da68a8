"""``lora-audit scan --fetch-bases``: bases that are not at hand, against the local Hub-API server.

An adapter org and a base repository on one server, the real huggingface_hub client pointed at it:
what the ``base_model_unavailable`` finding says without fetching (the base's Hub id and size), a
fetch pinned to the commit sha the Hub gave (only config, safetensors and tokenizer files), the
probes then running on the fetched base, the size cap, and bases the Hub lacks or refuses.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit.analyzers.base import AnalyzerSpec
from audit.cli import app
from audit.pipeline.placement import Placement
from audit.pipeline.scan import run_scan, scan
from audit.registry import LocalRegistry
from audit.registry.bases import BaseSource, base_files, format_bytes
from audit.registry.hub import HubRegistry
from audit.store import ParquetStore
from hubserver import HubServer, point_client_at
from tinyllama import write_adapter, write_tiny_llama

ORG = "adapter-org"
BASE = "base-org/tiny-llama"
BASE_FILES = ["chat_template.jinja", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
              "tokenizer_config.json"]
"""What a fetch downloads of the tiny base (it also holds a pickle and a Python file, never fetched)."""

SPECS = (AnalyzerSpec.of("directions", n_reference=2),)
"""The cheapest analyzer that needs the base: references from 2 + 2 prompts, then the adapter's factors."""

@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fetch-bases")
    return {BASE: write_tiny_llama(root / "tiny-llama"),
            f"{ORG}/tiny-lora": write_adapter(root / "tiny-lora", BASE),
            f"{ORG}/lost-base": write_adapter(root / "lost-base", "base-org/does-not-exist", seed=1),
            f"{ORG}/gated-base": write_adapter(root / "gated-base", "base-org/gated-llama", seed=2),
            "base-org/gated-llama": root / "tiny-llama"}


def _serve(folders: dict[str, Path], *repos: str) -> HubServer:
    return HubServer({r: folders[r] for r in repos})


def _size(folders: dict[str, Path]) -> int:
    return sum((folders[BASE] / n).stat().st_size for n in BASE_FILES)


def _probe_findings(store: ParquetStore) -> dict[str, tuple[str, str]]:
    con = store.connect()
    try:
        rows = con.execute("SELECT repo_id, code, message FROM findings WHERE stage = 'probe'").fetchall()
    finally:
        con.close()
    return {repo: (code, message) for repo, code, message in rows}


def _scan(registry, store: ParquetStore, **kwargs):
    lines: list[str] = []
    report = run_scan(registry, store, placement=Placement(in_process=True), judge=False, probes=SPECS,
                      compact_min_files=None, echo=lines.append, **kwargs)
    return report, lines


# --- pure parts ---------------------------------------------------------------------------------------


def test_only_config_safetensors_and_tokenizer_files_are_chosen():
    names = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
             "model.safetensors.index.json", "pytorch_model.bin", "training_args.bin", "modeling_x.py", "README.md",
             "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "chat_template.jinja", "onnx/model.onnx",
             "original/consolidated.safetensors", "generation_config.json", "optimizer.pt"]
    assert base_files(names) == sorted(["config.json", "model-00001-of-00002.safetensors", "generation_config.json",
                                        "model-00002-of-00002.safetensors", "model.safetensors.index.json",
                                        "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                                        "chat_template.jinja"])
    assert base_files(["config.json", "pytorch_model.bin", "tokenizer.json"]) == ["config.json", "tokenizer.json"]
    assert (format_bytes(None), format_bytes(999), format_bytes(354_213), format_bytes(2 * 10**9)) == (
        "size unknown", "999 B", "354.2 kB", "2.0 GB")


def test_a_base_named_by_a_path_is_said_to_be_no_hub_id():
    message = BaseSource(name="/home/someone/llama").sentence()
    assert "'/home/someone/llama'" in message and "no Hub id" in message and "--base-model NAME=PATH" in message


# --- against the server -------------------------------------------------------------------------------


def test_without_fetch_bases_the_finding_names_the_base_and_its_size(folders, tmp_path, monkeypatch):
    with _serve(folders, f"{ORG}/tiny-lora", BASE) as server:
        point_client_at(monkeypatch, server, tmp_path / "hf-cache")
        store = ParquetStore(tmp_path / "store")
        report, lines = _scan(HubRegistry(ORG), store)
        sha = server.sha(BASE)
        assert server.requests(contains=f"/{BASE}/resolve/") == [] and not any("fetching" in x for x in lines)
    assert report.probes == {"skipped": 1}
    code, message = _probe_findings(store)[f"{ORG}/tiny-lora"]
    assert code == "base_model_unavailable"
    assert f"base model {BASE} (Hub id, {format_bytes(_size(folders))} at sha {sha[:7]})" in message, message
    assert "--base-model NAME=PATH" in message and "LORA_AUDIT_BASE_MODELS" in message and "--fetch-bases" in message
    assert message.count(";") == 1 and "\n" not in message  # one sentence


def test_a_local_registry_asks_nothing_without_fetch_bases(folders, tmp_path, monkeypatch):
    with _serve(folders, BASE) as server:
        point_client_at(monkeypatch, server, tmp_path / "hf-cache")
        store = ParquetStore(tmp_path / "store")
        write_adapter(tmp_path / "reg" / "tiny-lora", BASE)
        report = scan(LocalRegistry(tmp_path / "reg", hash_cache=None), store, probes=SPECS)
        assert server.log == []
    assert report.probes == {"skipped": 1}
    _, message = _probe_findings(store)["tiny-lora"]
    assert f"base model {BASE} (Hub id, size unknown)" in message and "--fetch-bases" in message, message


@pytest.mark.slow
def test_fetch_bases_downloads_the_pinned_base_and_the_probes_run(folders, tmp_path, monkeypatch):
    from audit.finetune.base_lookup import find_local_base

    with _serve(folders, f"{ORG}/tiny-lora", BASE) as server:
        point_client_at(monkeypatch, server, tmp_path / "hf-cache")
        store = ParquetStore(tmp_path / "store")
        registry = HubRegistry(ORG)
        first, _ = _scan(registry, store)
        assert first.probes == {"skipped": 1}
        mark, sha = len(server.log), server.sha(BASE)
        report, lines = _scan(registry, store, fetch_bases=True)
        base_gets = server.requests(mark, contains=f"/{BASE}/resolve/", method="GET")
        everything = server.requests(mark)
        mark = len(server.log)
        again, _ = _scan(registry, store)  # the next scan finds the base in the Hub cache: nothing to do
        assert server.requests(mark, contains="/resolve/") == []
    assert f"fetching base {BASE} ({format_bytes(_size(folders))} at sha {sha[:7]})" in lines, lines
    assert sorted(r.path.rsplit("/", 1)[-1] for r in base_gets) == BASE_FILES
    assert all(r.path.startswith(f"/{BASE}/resolve/{sha}/") for r in base_gets)
    assert not any(r.path.endswith((".bin", ".py")) for r in everything)
    assert report.probes == {"ok": 2}  # the bare base's references, then the adapter
    assert again.probes == {}
    folder = find_local_base(BASE)
    assert folder is not None and folder.name == sha and str(folder).startswith(str(tmp_path / "hf-cache"))
    con = store.connect()
    try:
        rows = con.execute("SELECT status, base_model FROM analyses WHERE repo_id = ? AND analyzer = 'directions'",
                           [f"{ORG}/tiny-lora"]).fetchall()
        modules = con.execute("SELECT module FROM module_directions").fetchall()
    finally:
        con.close()
    assert rows == [("ok", BASE)]  # the skipped unit of the first scan is superseded
    assert modules and all(m.endswith(("self_attn.q_proj", "self_attn.v_proj")) for (m,) in modules)


def test_a_base_over_the_cap_is_not_downloaded(folders, tmp_path, monkeypatch):
    with _serve(folders, f"{ORG}/tiny-lora", BASE) as server:
        point_client_at(monkeypatch, server, tmp_path / "hf-cache")
        store = tmp_path / "store"
        res = CliRunner().invoke(app, ["scan", "--hub-org", ORG, "--store", str(store), "--no-prefect",
                                       "--in-process", "--probe", "directions", "--fetch-bases",
                                       "--max-base-bytes", "1000"])
        assert res.exit_code == 0, res.output
        assert server.requests(contains="/resolve/", method="GET") == server.requests(
            contains=f"/{ORG}/tiny-lora/resolve/", method="GET")  # the adapter's files, nothing of the base
        assert "fetching base" not in res.output
    code, message = _probe_findings(ParquetStore(store))[f"{ORG}/tiny-lora"]
    assert code == "base_model_unavailable" and "over the cap" in message, message
    assert f"{format_bytes(_size(folders))} is over the cap of {format_bytes(1000)}" in message


def test_a_base_the_hub_lacks_or_refuses_is_a_finding_and_the_scan_completes(folders, tmp_path, monkeypatch):
    token = "hf_" + "s3cr3t" * 6
    with _serve(folders, f"{ORG}/lost-base", f"{ORG}/gated-base", "base-org/gated-llama") as server:
        server.faults.gated.add("base-org/gated-llama")
        server.faults.echo_auth = True  # error messages repeat the Authorization header
        point_client_at(monkeypatch, server, tmp_path / "hf-cache", token=token)
        store = ParquetStore(tmp_path / "store")
        report, lines = _scan(HubRegistry(ORG), store, fetch_bases=True)
        assert server.requests(contains="/base-org/gated-llama/resolve/", method="GET") == []
    assert report.probes == {"skipped": 2} and report.n_audited == 2
    assert "base base-org/does-not-exist not fetched: it is not on the Hub" in lines, lines
    con = store.connect()
    try:
        assert con.execute("SELECT status FROM runs ORDER BY updated_at DESC LIMIT 1").fetchone() == ("completed",)
    finally:
        con.close()
    findings = _probe_findings(store)
    code, lost = findings[f"{ORG}/lost-base"]
    assert code == "base_model_unavailable" and "base-org/does-not-exist" in lost and "not on the Hub" in lost, lost
    code, gated = findings[f"{ORG}/gated-base"]
    assert code == "base_model_unavailable" and "gated" in gated and "base-org/gated-llama" in gated, gated
    assert not any(token in text for text in [lost, gated, *lines])

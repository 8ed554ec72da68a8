"""The Hub registry against the local Hub-API server: classification, caps, every fault a crawler meets
(pagination, 429 + Retry-After, gated, private, deleted, pickle-only, too large, timeouts), and
credentials that never leak."""

from __future__ import annotations

from pathlib import Path

import logging
import pickle

import pytest

from audit.errors import (
    AccessDeniedError,
    AdapterNotFoundError,
    ConfigurationError,
    PermanentAuditError,
    RegistryTimeoutError,
    RegistryUnavailableError,
)
from audit.limits import Limits
from audit.pipeline.scan import scan
from audit.registry import open_registry
from audit.registry.hub import HubRegistry
from audit.registry.hub_errors import hub_error, scrub
from audit.registry.hub_files import base_model_from_tags, files_to_download, repo_kind
from hubserver import HubServer, point_client_at
from synth import SynthAdapter, SynthModule, llama_like

ORG = "fault-org"


# --- pure parts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("library, tags, files, kind", [
    ("peft", [], ["README.md"], "adapter"),
    (None, ["base_model:adapter:meta-llama/Llama-3.2-1B"], ["README.md"], "adapter"),
    (None, [], ["adapter_config.json", "adapter_model.safetensors"], "adapter"),
    ("transformers", ["base_model:finetune:org/base"], ["config.json", "model.safetensors"], "full_finetune"),
    (None, [], ["config.json", "model-00001-of-00002.safetensors"], "full_finetune"),
    ("transformers", ["text-generation"], ["config.json", "pytorch_model.bin"], None),
    (None, [], ["sub/adapter_config.json", "data.csv"], None),
])
def test_repo_kind(library, tags, files, kind):
    assert repo_kind(library, tags, files) == kind


def test_files_to_download_follow_the_audit():
    assert files_to_download("adapter", ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                         "adapter_model.bin", "training_args.bin"]) == [
        "adapter_config.json", "README.md", "adapter_model.safetensors"]
    assert files_to_download("adapter", ["adapter_config.json", "adapter_model.bin"]) == [
        "adapter_config.json", "adapter_model.bin"]
    assert files_to_download("full_finetune", ["config.json", "model-00002-of-00002.safetensors",
                                               "model-00001-of-00002.safetensors", "pytorch_model.bin"]) == [
        "config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert files_to_download("full_finetune", ["config.json", "pytorch_model.bin"]) == ["config.json"]
    assert base_model_from_tags(["x", "base_model:finetune:org/base"]) == "org/base"


def test_registry_is_cheap_picklable_and_validated(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: any request would fail
    reg = open_registry(f"hub:{ORG}")
    assert isinstance(reg, HubRegistry) and reg.name == f"hub:{ORG}"
    clone = pickle.loads(pickle.dumps(reg))
    assert clone.name == reg.name and clone.limits == reg.limits
    for bad in ("", "a/b", "a--b", "-x", "x" * 97):
        with pytest.raises(ConfigurationError):
            HubRegistry(bad)


def test_scrub_removes_credentials(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret-token-without-prefix")
    text = ("token secret-token-without-prefix; headers {'Authorization': 'Bearer abc.def-ghi'}; "
            "stray hf_abcdefghijklmnop; cookie: session=xyz")
    out = scrub(text)
    for secret in ("secret-token-without-prefix", "abc.def-ghi", "hf_abcdefghijklmnop", "session=xyz"):
        assert secret not in out
    assert out.count("<redacted>") == 4
    assert scrub("HTTP 404 for /api/models/org/x/tree/main") == "HTTP 404 for /api/models/org/x/tree/main"


def _http_error(status, url="http://hub.test/api/models/org/x/tree/abc", headers=None):
    import httpx2
    from huggingface_hub.utils import hf_raise_for_status

    response = httpx2.Response(status, headers=headers or {}, json={"error": "nope"},
                               request=httpx2.Request("GET", url))
    try:
        hf_raise_for_status(response)
    except Exception as exc:  # noqa: BLE001 - the typed error huggingface_hub makes of this response
        return exc
    raise AssertionError("no error raised")


def _wrapped(cause):
    """What hf_hub_download raises when its HEAD failed and nothing is cached."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        raise LocalEntryNotFoundError("An error happened while trying to locate the file") from cause
    except LocalEntryNotFoundError as exc:
        return exc


@pytest.mark.parametrize("make, cls, code", [
    (lambda: _http_error(401, headers={"X-Error-Code": "GatedRepo"}), AccessDeniedError, "gated_repo"),
    (lambda: _http_error(401, headers={"X-Error-Code": "RepoNotFound"}), AccessDeniedError, "access_denied"),
    (lambda: _http_error(404, headers={"X-Error-Code": "RepoNotFound"}), AdapterNotFoundError, "not_found"),
    (lambda: _http_error(404, headers={"X-Error-Code": "EntryNotFound"}), AdapterNotFoundError, "not_found"),
    (lambda: _wrapped(_http_error(403)), AccessDeniedError, "access_denied"),
    (lambda: _http_error(503), RegistryUnavailableError, "registry_unavailable"),
    (lambda: _wrapped(__import__("httpx2").ReadTimeout("timed out")), RegistryTimeoutError, "registry_timeout"),
    (lambda: __import__("httpx2").ConnectError("refused"), RegistryUnavailableError, "registry_unavailable"),
    (lambda: _wrapped(None), RegistryUnavailableError, "registry_unavailable"),
    (lambda: KeyError("a bug"), PermanentAuditError, "internal_error"),
])
def test_hub_errors_map_to_typed_errors(make, cls, code):
    err = hub_error(make(), repo_id="org/x", revision="a" * 40)
    assert type(err) is cls and err.code == code and (err.repo_id, err.revision) == ("org/x", "a" * 40)
    assert err.__cause__ is None and err.__context__ is None


# --- a small organization with every fault ---------------------------------------------------------


def _org(tmp_path):
    root = tmp_path / "org"
    folders = {}
    for i, card in enumerate(["---\ntags: [dpo]\nlibrary_name: peft\n---\n", None, None]):
        folders[f"{ORG}/good-{i}"] = SynthAdapter(llama_like(2), seed=i, card=card).write(root / f"good-{i}")
    for name in ("gated", "private", "deleted"):
        folders[f"{ORG}/{name}"] = SynthAdapter(llama_like(1), seed=7).write(root / name)
    pick = root / "pickle-only"
    pick.mkdir()
    (pick / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8, "lora_alpha": 16}')
    (pick / "adapter_model.bin").write_bytes(b"PK\x03\x04" + b"\0" * 4000)
    folders[f"{ORG}/pickle-only"] = pick
    big = [SynthModule(f"model.layers.{i}.self_attn.q_proj", d_out=256, d_in=256, r=16) for i in range(4)]
    folders[f"{ORG}/too-large"] = SynthAdapter(big).write(root / "too-large")
    return folders


@pytest.fixture
def faulty_hub(tmp_path, monkeypatch):
    with HubServer(_org(tmp_path), page_size=3) as server:
        point_client_at(monkeypatch, server, tmp_path / "hf-cache")
        server.faults.gated.add(f"{ORG}/gated")
        server.faults.private.add(f"{ORG}/private")
        yield server


def _delete_after_listing(server, registry):
    """Make ``deleted`` vanish between the listing and its download, as a real deletion would."""
    real = registry.list_adapters

    def listing():
        out = real()
        server.faults.deleted.add(f"{ORG}/deleted")
        return out
    registry.list_adapters = listing


def _by_repo(store, sql):
    con = store.connect()
    try:
        out = {}
        for repo, *rest in con.execute(sql).fetchall():
            out.setdefault(repo, []).append(tuple(rest) if len(rest) > 1 else rest[0])
        return out
    finally:
        con.close()


@pytest.mark.slow
def test_every_fault_is_a_finding_and_the_scan_goes_on(faulty_hub, store):
    server = faulty_hub
    server.faults.rate_limit.update({"/api/models": 1, "/tree/": 1, "/resolve/": 2})
    cap = 64 * 1024
    registry = HubRegistry(ORG, limits=Limits(max_weights_bytes=cap))
    _delete_after_listing(server, registry)
    report = scan(registry, store)

    assert report.n_listed == report.n_audited == 8 and report.n_deferred == 0
    status = {k: v[0] for k, v in _by_repo(store, "SELECT repo_id, status FROM adapters").items()}
    errors = _by_repo(store, "SELECT repo_id, code FROM findings WHERE severity = 'error'")
    assert {r: s for r, s in status.items() if r.split("/")[1].startswith("good")} == {
        f"{ORG}/good-{i}": "ok" for i in range(3)}
    assert errors[f"{ORG}/gated"] == ["gated_repo"]
    assert errors[f"{ORG}/private"] == ["access_denied"]
    assert errors[f"{ORG}/deleted"] == ["not_found"]
    assert errors[f"{ORG}/pickle-only"] == ["pickle_weights_refused"]
    assert errors[f"{ORG}/too-large"] == ["limit_exceeded"]
    assert all(status[r] == "failed" for r in errors)
    con = store.connect()
    assert con.execute("SELECT method, r FROM adapters WHERE repo_id = ?", [f"{ORG}/good-0"]).fetchone() == ("dpo", 4)
    assert con.execute("SELECT peft_type, r FROM adapters WHERE repo_id = ?", [f"{ORG}/pickle-only"]).fetchone() == (
        "LORA", 8)  # the config was read; the pickle was downloaded as bytes and refused, never unpickled
    assert con.execute("SELECT status FROM runs ORDER BY updated_at DESC LIMIT 1").fetchone() == ("completed",)

    # the cap was applied to the sizes the Hub declared: nothing of the big repo was downloaded
    assert server.requests(contains=f"/{ORG}/too-large/resolve/") == []
    assert server.requests(contains=f"/{ORG}/too-large/tree/")
    # pagination: 8 repositories, 3 per page, plus the one request answered 429 and retried by the client
    pages = [r for r in server.requests(contains="/api/models") if r.path == "/api/models"]
    assert [r.status for r in pages] == [429, 200, 200, 200]
    assert "cursor=3" in pages[2].query and "cursor=6" in pages[3].query
    # the client waited for Retry-After (1 s) before retrying: no retry loop of ours
    assert pages[1].at - pages[0].at >= 1.0
    for part, n in (("/tree/", 1), ("/resolve/", 2)):
        log = server.requests(contains=part)
        first_ok = next(i for i, r in enumerate(log) if r.status != 429)
        assert [r.status for r in log[:first_ok]] == [429] * n, part
        assert log[first_ok].path == log[0].path, part  # the same request, retried by the client
        assert log[first_ok].at - log[first_ok - 1].at >= 1.0, part
    assert server.faults.rate_limit == {"/api/models": 0, "/tree/": 0, "/resolve/": 0}


def test_a_refused_listing_is_a_configuration_error(faulty_hub):
    faulty_hub.faults.listing_status = 401
    with pytest.raises(ConfigurationError, match="cannot list hub:fault-org: HTTP 401"):
        HubRegistry(ORG).list_adapters()


def test_fetch_errors_are_typed(faulty_hub):
    server = faulty_hub
    registry = HubRegistry(ORG)
    refs = {r.repo_id: r for r in registry.list_adapters().refs}
    with pytest.raises(AccessDeniedError) as gated:
        registry.fetch(refs[f"{ORG}/gated"])
    assert gated.value.code == "gated_repo" and gated.value.repo_id == f"{ORG}/gated"
    assert gated.value.revision == server.sha(f"{ORG}/gated")
    server.faults.deleted.add(f"{ORG}/good-1")
    with pytest.raises(AdapterNotFoundError):
        registry.fetch(refs[f"{ORG}/good-1"])
    # a commit that no longer exists (the repository moved on): not found, not retried forever
    gone = refs[f"{ORG}/good-2"].model_copy(update={"revision": "0" * 40})
    with pytest.raises(AdapterNotFoundError, match="commit no longer exists"):
        registry.fetch(gone)
    # errors survive pickling (Ray ships them between processes)
    again = pickle.loads(pickle.dumps(gated.value))
    assert type(again) is AccessDeniedError and again.code == "gated_repo"


@pytest.mark.slow
def test_a_timeout_defers_the_repository_and_the_next_scan_audits_it(faulty_hub, store, monkeypatch):
    from huggingface_hub import constants

    server = faulty_hub
    # huggingface_hub reads HF_HUB_DOWNLOAD_TIMEOUT at import; a process started with the variable set gets this
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1)
    server.faults.slow[f"{ORG}/good-1"] = 4.0
    registry = HubRegistry(ORG)
    first = scan(registry, store)
    assert first.n_deferred == 1 and first.deferred[0].startswith(f"{ORG}/good-1@")
    assert "registry_timeout" in first.deferred[0]
    assert first.n_audited == 7 and first.statuses == {"ok": 4, "failed": 3}  # gated, private, pickle-only
    with pytest.raises(RegistryTimeoutError):
        registry.fetch(next(r for r in registry.list_adapters().refs if r.repo_id == f"{ORG}/good-1"))
    server.faults.slow.clear()
    second = scan(registry, store)
    assert (second.n_new, second.n_audited, second.statuses) == (1, 1, {"ok": 1})


def test_the_token_is_used_and_never_leaks(tmp_path, monkeypatch, caplog, store):
    from huggingface_hub import hf_hub_download

    token = "hf_" + "LeakCanary" * 3
    folders = _org(tmp_path)
    with HubServer(folders, page_size=3) as server:
        point_client_at(monkeypatch, server, tmp_path / "hf-cache", token=token)
        server.faults.gated.add(f"{ORG}/gated")
        server.faults.private.add(f"{ORG}/private")
        server.faults.echo_auth = True  # the server repeats the Authorization header in its error messages
        # everything at INFO, lora-audit and huggingface_hub at DEBUG (httpcore's DEBUG trace prints raw
        # response headers, so it would show what this echoing server sends back: not a log of ours)
        caplog.set_level(logging.INFO)
        for name in ("audit", "huggingface_hub"):
            caplog.set_level(logging.DEBUG, logger=name)
        registry = HubRegistry(ORG)
        report = scan(registry, store)
        refs = {r.repo_id: r for r in registry.list_adapters().refs}
        raised = []
        for repo in (f"{ORG}/gated", f"{ORG}/private"):
            with pytest.raises(AccessDeniedError) as exc:
                registry.fetch(refs[repo])
            raised += [str(exc.value), repr(exc.value), exc.value.message, str(pickle.loads(pickle.dumps(exc.value)))]
        # the raw client error does carry the token (so this test would see a leak)
        with pytest.raises(Exception) as raw:
            hf_hub_download(f"{ORG}/gated", "adapter_config.json", revision=server.sha(f"{ORG}/gated"),
                            cache_dir=str(tmp_path / "raw"), endpoint=server.url)
        assert token in str(raw.value)
    assert all(r.authorization == f"Bearer {token}" for r in server.log)  # HF_TOKEN was sent on every request
    con = store.connect()
    messages = [m for (m,) in con.execute("SELECT message FROM findings").fetchall()]
    assert {c for (c,) in con.execute("SELECT code FROM findings WHERE severity = 'error'").fetchall()} >= {
        "gated_repo", "access_denied"}
    assert any("<redacted>" in m for m in messages)  # the echoed header was there, and was scrubbed
    texts = messages + raised + report.deferred + [caplog.text] + [repr(registry), str(pickle.dumps(registry))]
    assert not [t for t in texts if token in t or "LeakCanary" in t]
    import pyarrow.parquet as pq

    stored = [p for p in Path(store.root).rglob("*.parquet") if not p.name.startswith(".")]
    assert stored and not [p for p in stored if "LeakCanary" in str(pq.read_table(p, partitioning=None).to_pylist())]


def test_hub_file_names_with_paths_are_never_fetched():
    """A listing that names ``../`` or absolute paths (a hostile or broken Hub-compatible server) gives
    no file to download: only root-level names are ever fetched."""
    from audit.registry.hub_files import files_that_matter, files_to_download

    names = ["../adapter_model.safetensors", "/etc/adapter_config.json", "a/../../adapter_model.bin",
             "adapter_config.json", "adapter_model.safetensors", "sub/adapter_model.safetensors"]
    assert files_that_matter(names) == ["adapter_config.json", "adapter_model.safetensors"]
    assert files_to_download("adapter", names) == ["adapter_config.json", "adapter_model.safetensors"]

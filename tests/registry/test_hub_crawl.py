"""Integration: every real adapter of ../shared/realworld served as one Hub organization by the local
Hub-API server, crawled with the real huggingface_hub client, compared with the local scan."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from audit.pipeline.scan import scan
from audit.registry import LocalRegistry
from audit.registry.hub import HubRegistry
from audit.store import ParquetStore
from hubserver import HubServer, hub_name, point_client_at, serve_folders

pytestmark = pytest.mark.slow

ORG = "realworld-org"
ADAPTER_COLUMNS = ["base_model", "peft_type", "task_type", "method", "method_source", "r", "lora_alpha",
                   "use_rslora", "use_dora", "target_modules", "n_modules", "weights_bytes", "weights_file",
                   "weights_format", "dtypes", "tags", "card_labels", "status", "n_findings"]
MODULE_COLUMNS = ["module", "layer", "module_type", "kind", "d_out", "d_in", "rank", "config_rank", "scale",
                  "transposed", "dora", "dtype", "singular_values", "truncated", "fro_norm", "spectral_norm",
                  "stable_rank", "effective_rank", "spectral_entropy", "top1_energy", "nuclear_norm"]
FINDING_COLUMNS = ["stage", "severity", "code", "message", "file", "module"]


@pytest.fixture(scope="module")
def crawl(realworld, tmp_path_factory):
    """A copy of the real adapters, its local scan, a Hub server over it and a first crawl."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("hubcrawl")
    root = tmp / "realworld"
    shutil.copytree(realworld, root)
    local_store = ParquetStore(tmp / "local-store")
    local_report = scan(LocalRegistry(root, hash_cache=None), local_store)
    repos = serve_folders(root, ORG)
    rel_of = {repo: folder.relative_to(root).as_posix() for repo, folder in repos.items()}
    with HubServer(repos, page_size=10) as server:
        point_client_at(mp, server, tmp / "hf-cache")
        hub_store = ParquetStore(tmp / "hub-store")
        registry = HubRegistry(ORG)
        first = scan(registry, hub_store)
        yield {"server": server, "registry": registry, "hub_store": hub_store, "local_store": local_store,
               "local_report": local_report, "first": first, "rel_of": rel_of, "root": root, "tmp": tmp,
               "first_log": list(server.log)}
    mp.undo()


def _rows(store: ParquetStore, sql: str, params: list | None = None) -> list[dict]:
    con = store.connect()
    try:
        cur = con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        con.close()


def test_listing_follows_pagination_and_pins_commits(crawl):
    server, first = crawl["server"], crawl["first"]
    listing_pages = [r for r in crawl["first_log"] if r.path == "/api/models"]
    assert len(listing_pages) == -(-len(crawl["rel_of"]) // 10) >= 4  # 44 repos, 10 per page
    assert first.n_listed == len(crawl["rel_of"]) == crawl["local_report"].n_listed == 44
    rows = _rows(crawl["hub_store"], "SELECT repo_id, revision FROM adapters")
    revisions = {r["repo_id"]: r["revision"] for r in rows}
    assert revisions == {repo: server.sha(repo) for repo in crawl["rel_of"]}
    assert first.n_deferred == 0 and first.n_audited == 44


def test_same_rows_as_the_local_scan(crawl):
    rel_of = crawl["rel_of"]
    local = {r["repo_id"]: r for r in _rows(crawl["local_store"], "SELECT * FROM adapters")}
    hub = {rel_of[r["repo_id"]]: r for r in _rows(crawl["hub_store"], "SELECT * FROM adapters")}
    assert set(hub) == set(local)
    for rel, row in hub.items():
        assert {c: row[c] for c in ADAPTER_COLUMNS} == {c: local[rel][c] for c in ADAPTER_COLUMNS}, rel
        assert row["registry"] == f"hub:{ORG}" and row["repo_id"] == f"{ORG}/{hub_name(rel)}"

    def modules(store, rel_key):
        out = {}
        for r in _rows(store, "SELECT a.repo_id, m.* FROM modules m JOIN adapters a USING (adapter_id)"):
            out.setdefault(rel_key(r["repo_id"]), []).append(tuple(r[c] for c in MODULE_COLUMNS))
        return {k: sorted(v) for k, v in out.items()}

    local_m = modules(crawl["local_store"], lambda r: r)
    hub_m = modules(crawl["hub_store"], lambda r: rel_of[r])
    assert hub_m == local_m and sum(len(v) for v in hub_m.values()) > 1000

    def findings(store, rel_key):
        out = {}
        for r in _rows(store, "SELECT * FROM findings"):
            out.setdefault(rel_key(r["repo_id"]), []).append(tuple(r[c] for c in FINDING_COLUMNS))
        return {k: sorted(v) for k, v in out.items()}

    assert findings(crawl["hub_store"], lambda r: rel_of[r]) == findings(crawl["local_store"], lambda r: r)


def test_downloads_only_what_an_audit_reads(crawl):
    downloads = [r for r in crawl["first_log"] if "/resolve/" in r.path and r.method == "GET"]
    names = [r.path.rsplit("/", 1)[-1] for r in downloads]
    assert set(names) <= {"adapter_config.json", "README.md", "adapter_model.safetensors", "adapter_model.bin"}
    assert len(set(r.path for r in downloads)) == len(downloads)  # each file once
    n_card = sum((p / "README.md").is_file() for p in map(crawl["root"].joinpath, crawl["rel_of"].values()))
    assert names.count("README.md") == n_card and names.count("adapter_config.json") == 44


def test_second_crawl_downloads_nothing(crawl):
    server, registry = crawl["server"], crawl["registry"]
    mark = len(server.log)
    again = scan(registry, crawl["hub_store"])
    assert (again.n_listed, again.n_new, again.n_audited) == (44, 0, 0)
    assert server.requests(mark, contains="/resolve/") == [] and server.requests(mark, contains="/tree/") == []
    # fetching the same commits again (another store, another worker) is served by the Hub cache:
    # no download, no tree listing, and the same files
    mark = len(server.log)
    for ref in registry.list_adapters().refs:
        again = registry.fetch(ref)
        assert sorted(p.name for p in Path(again.local_dir).iterdir()) == sorted(
            p.name for p in (crawl["root"] / crawl["rel_of"][ref.repo_id]).iterdir()
            if p.name in {"adapter_config.json", "README.md", "adapter_model.safetensors", "adapter_model.bin"})
    assert server.requests(mark, contains="/resolve/") == [] and server.requests(mark, contains="/tree/") == []


def test_a_new_commit_is_audited_again_alone(crawl):
    server, registry, store = crawl["server"], crawl["registry"], crawl["hub_store"]
    repo = next(r for r, rel in sorted(crawl["rel_of"].items()) if rel.startswith("Desmason"))
    card = crawl["root"] / crawl["rel_of"][repo] / "README.md"
    before = server.sha(repo)
    card.write_text(card.read_text() + "\nA new paragraph in the model card.\n")
    assert server.sha(repo) != before
    mark = len(server.log)
    report = scan(registry, store)
    assert (report.n_listed, report.n_new, report.n_audited) == (44, 1, 1)
    touched = {r.path.split("/resolve/")[0].lstrip("/") for r in server.requests(mark, contains="/resolve/")}
    assert touched == {repo}
    revisions = _rows(store, "SELECT revision, status FROM adapters WHERE repo_id = ? ORDER BY audited_at", [repo])
    assert [r["revision"] for r in revisions] == [before, server.sha(repo)]
    assert [r["status"] for r in revisions] == ["ok", "ok"]

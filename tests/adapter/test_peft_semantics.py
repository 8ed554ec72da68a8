"""Adapters saved by peft itself: our spectra must equal the SVD of peft's own ``get_delta_weight``.

This pins the scale (alpha/r, rsLoRA, rank_pattern, alpha_pattern), the key layout (linear,
embedding, convolution, DoRA) and the Conv1D transposition to what peft does, not to what we
believe it does.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from audit.adapter_audit import audit_adapter
from audit.records import AdapterRef

peft = pytest.importorskip("peft")


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = nn.Module()
        self.self_attn.q_proj = nn.Linear(16, 16)
        self.self_attn.v_proj = nn.Linear(16, 8)
        self.mlp = nn.Module()
        self.mlp.up_proj = nn.Linear(16, 40)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(50, 16)
        self.conv = nn.Conv2d(3, 6, kernel_size=3)
        self.layers = nn.ModuleList([Block() for _ in range(3)])

    def forward(self, x):  # pragma: no cover - never run
        return x


def _randomize_lora(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g))


def _peft_deltas(model) -> dict[str, torch.Tensor]:
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, mod in model.base_model.model.named_modules():
        if isinstance(mod, LoraLayer) and "default" in mod.scaling:
            out[name] = mod.get_delta_weight("default").detach().to(torch.float64)
    return out


def _audit(folder) -> dict:
    result = audit_adapter(AdapterRef(repo_id="t", revision="0", registry="test", local_dir=str(folder)))
    return {m.module: m for m in result.modules}, result


def _compare(folder, model) -> None:
    rows, result = _audit(folder)
    deltas = _peft_deltas(model)
    assert set(rows) == set(deltas), (sorted(rows), sorted(deltas))
    for name, dw in deltas.items():
        dense = torch.linalg.svdvals(dw.reshape(dw.shape[0], -1))
        ours = torch.tensor(rows[name].singular_values, dtype=torch.float64)
        k = ours.numel()
        assert torch.allclose(ours, dense[:k], rtol=1e-5, atol=1e-5 * float(dense[0])), name
        if dense.numel() > k:
            assert float(dense[k:].abs().max()) <= 1e-5 * float(dense[0])


@pytest.mark.parametrize("rslora", [False, True])
def test_linear_embedding_conv_with_patterns(tmp_path, rslora):
    cfg = peft.LoraConfig(
        r=4, lora_alpha=8, use_rslora=rslora,
        target_modules=["q_proj", "v_proj", "up_proj", "embed_tokens", "conv"],
        rank_pattern={"layers.1.self_attn.q_proj": 2, "up_proj": 6},
        alpha_pattern={"v_proj": 3, "layers.2.mlp.up_proj": 20},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(Tiny(), cfg)
    _randomize_lora(model, seed=1)
    model.save_pretrained(tmp_path)
    _compare(tmp_path, model)
    rows, result = _audit(tmp_path)
    assert result.adapter.status == "ok"
    assert rows["layers.1.self_attn.q_proj"].rank == 2
    assert rows["layers.0.mlp.up_proj"].rank == 6
    assert rows["embed_tokens"].kind == "embedding" and rows["embed_tokens"].transposed
    assert rows["conv"].kind == "conv" and rows["conv"].d_in == 27
    expected = 20 / (6 ** 0.5 if rslora else 6)
    assert rows["layers.2.mlp.up_proj"].scale == pytest.approx(expected)


def test_gpt2_conv1d_fan_in_fan_out(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16)
    base = transformers.GPT2LMHeadModel(config)
    cfg = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(base, cfg)
    _randomize_lora(model, seed=2)
    model.save_pretrained(tmp_path)
    _compare(tmp_path, model)
    rows, _ = _audit(tmp_path)
    c_attn = rows["transformer.h.0.attn.c_attn"]
    assert c_attn.transposed and (c_attn.d_out, c_attn.d_in) == (96, 32)


def test_dora_spectra_are_those_of_sBA_and_flagged(tmp_path):
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(Tiny(), cfg)
    _randomize_lora(model, seed=3)
    model.save_pretrained(tmp_path)
    rows, result = _audit(tmp_path)
    assert all(m.dora for m in rows.values()) and len(rows) == 3
    assert "dora_magnitude_not_applied" in {f.code for f in result.findings}
    from peft.tuners.lora import LoraLayer

    for name, mod in model.base_model.model.named_modules():
        if isinstance(mod, LoraLayer) and "default" in mod.scaling:
            sba = mod.scaling["default"] * (mod.lora_B["default"].weight @ mod.lora_A["default"].weight)
            dense = torch.linalg.svdvals(sba.detach().double())[:4]
            assert torch.allclose(torch.tensor(rows[name].singular_values, dtype=torch.float64), dense, rtol=1e-5)

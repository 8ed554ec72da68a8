"""Tiny synthetic adapters written to disk the way peft writes them (for unit tests)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file


@dataclass
class SynthModule:
    """One LoRA module: ``A: [r, d_in]``, ``B: [d_out, r]`` (random unless given)."""

    name: str
    d_out: int = 24
    d_in: int = 16
    r: int = 4
    A: torch.Tensor | None = None
    B: torch.Tensor | None = None


@dataclass
class SynthAdapter:
    modules: list[SynthModule]
    config: dict = field(default_factory=dict)
    prefix: str = "base_model.model."
    dtype: torch.dtype = torch.float32
    card: str | None = None
    extra_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    seed: int = 0

    def tensors(self) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        out: dict[str, torch.Tensor] = {}
        for m in self.modules:
            A = m.A if m.A is not None else torch.randn(m.r, m.d_in, generator=g)
            B = m.B if m.B is not None else torch.randn(m.d_out, m.r, generator=g)
            m.A, m.B = A, B
            out[f"{self.prefix}{m.name}.lora_A.weight"] = A.to(self.dtype).contiguous()
            out[f"{self.prefix}{m.name}.lora_B.weight"] = B.to(self.dtype).contiguous()
        out.update(self.extra_tensors)
        return out

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": self.modules[0].r if self.modules else 8,
               "lora_alpha": 16, "target_modules": sorted({m.name.rsplit(".", 1)[-1] for m in self.modules}),
               "base_model_name_or_path": "synthetic/base", "fan_in_fan_out": False}
        cfg.update(self.config)
        (folder / "adapter_config.json").write_text(json.dumps(cfg))
        save_file(self.tensors(), str(folder / "adapter_model.safetensors"))
        if self.card is not None:
            (folder / "README.md").write_text(self.card)
        return folder


def llama_like(n_layers: int = 2, r: int = 4, d: int = 32, kv: int = 8) -> list[SynthModule]:
    """q/v projections of a small Llama-shaped model."""
    mods = []
    for i in range(n_layers):
        mods.append(SynthModule(f"model.layers.{i}.self_attn.q_proj", d_out=d, d_in=d, r=r))
        mods.append(SynthModule(f"model.layers.{i}.self_attn.v_proj", d_out=kv, d_in=d, r=r))
    return mods


def labelled_card(method: str, objective: str, severity: float) -> str:
    """A model card carrying ground truth under ``lora_audit:``, as ``lora-audit zoo build`` writes it."""
    return (f"---\nlibrary_name: peft\nbase_model: synthetic/base\ntags: [{method}]\nlora_audit:\n"
            f"  method: {method}\n  objective: {objective}\n  severity: {severity}\n---\n# {objective}\n")


def drifted_modules(severity: float, seed: int, n_layers: int = 3, r: int = 4, d: int = 32) -> list[SynthModule]:
    """Modules whose update is dominated by one direction, the more so the higher ``severity``
    (``0``: isotropic random factors, a healthy-looking spectrum)."""
    g = torch.Generator().manual_seed(1000 + seed)
    mods = []
    for m in llama_like(n_layers, r=r, d=d):
        A = torch.randn(m.r, m.d_in, generator=g) * 0.1
        B = torch.randn(m.d_out, m.r, generator=g) * 0.1
        if severity > 0:
            u, v = torch.randn(m.d_out, 1, generator=g), torch.randn(1, m.d_in, generator=g)
            B[:, :1] += 3.0 * severity * u / u.norm()
            A[:1] += v / v.norm()
        m.A, m.B = A, B
        mods.append(m)
    return mods


def labelled_registry(root: Path, plan: dict[str, tuple[int, int]]) -> Path:
    """A local registry of labelled synthetic adapters: ``plan`` maps a method to (n healthy, n drifted).

    Drifted adapters get severities spread over (0, 1]; every adapter has its own seed.
    """
    seed = 0
    for method, (n_healthy, n_drifted) in plan.items():
        for i in range(n_healthy):
            SynthAdapter(drifted_modules(0.0, seed), card=labelled_card(method, "healthy", 0.0)).write(
                root / method / f"healthy-{i}")
            seed += 1
        for i in range(n_drifted):
            sev = round((i + 1) / n_drifted, 3)
            objective = "inverted_harmlessness" if i % 2 == 0 else "inverted_helpfulness"
            SynthAdapter(drifted_modules(sev, seed), card=labelled_card(method, objective, sev)).write(
                root / method / f"drifted-{i}")
            seed += 1
    return root

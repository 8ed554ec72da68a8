"""Per-module references of a base model, computed once per base revision and kept in the store.

For every linear module of the decoder layers (``model.layers.3.self_attn.q_proj``...), the mean
of its input at the last token of each prompt (chat-formatted, assistant turn opened), over
forbidden prompts and over benign prompts. From them:

- a **reader's** refusal direction, in the space it reads: ``mean_forbidden - mean_benign`` of its
  own input (the difference-of-means construction of Arditi et al. 2024 and Rimsky et al. 2023,
  taken at the module's input);
- a **writer's** mean forbidden input ``x̄``, for the reversion component ``r̂ᵀ·ΔW·x̄``
  (:mod:`audit.directions.maths`); its output direction is the residual-stream refusal direction
  after its layer (:mod:`audit.probes.references`).

Prompts and storage: :mod:`audit.analyzers.references` (the same held-out forbidden and benign
sets as the residual references; one safetensors blob per base revision: ``<module>.forbidden``
and ``<module>.benign``, float32 ``[d_in]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from audit.adapter.keys import strip_prefix
from audit.analyzers.references import bare_base, stored_reference

MODULE_REFERENCE_VERSION = "module-inputs-1"


@dataclass(frozen=True)
class ModuleInputs:
    """Mean last-token inputs of a base's decoder-layer linear modules (see the module docstring)."""

    forbidden: dict[str, torch.Tensor]
    """module path -> ``[d_in]`` float32 mean input on forbidden prompts."""
    benign: dict[str, torch.Tensor]
    meta: dict
    path: str

    def read_direction(self, module: str) -> torch.Tensor | None:
        """The refusal direction in ``module``'s input space (unnormalised), or ``None``."""
        if module not in self.forbidden:
            return None
        return self.forbidden[module] - self.benign[module]


def canonical_module(name: str) -> str:
    """A module path as adapters name it: peft's ``base_model.model.`` prefixes and ``.base_layer``
    suffix removed."""
    name, _ = strip_prefix(name)
    return name.removesuffix(".base_layer")


def decoder_linears(model) -> dict[str, torch.nn.Module]:
    """The ``nn.Linear`` modules inside decoder layers (``...layers.<i>...``), by canonical path;
    LoRA's own ``lora_A``/``lora_B`` layers excluded."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".layers." in f".{name}" and ".lora_" not in name:
            out[canonical_module(name)] = mod
    return out


@torch.no_grad()
def mean_module_inputs(model, tokenizer, prompts: list[str], *, adapter_names: list[str] | None = None,
                       batch_size: int = 16, progress=None) -> dict[str, torch.Tensor]:
    """Mean last-token input of every decoder-layer linear module over ``prompts``:
    module path -> ``[d_in]`` float32 on CPU."""
    from audit.models.generate import chat_texts

    device = next(model.parameters()).device
    linears = decoder_linears(model)
    sums: dict[str, torch.Tensor] = {}
    picked: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(_mod, args):
            x = args[0]
            rows, last = picked["rows"], picked["last"]
            v = x[rows, last].double().sum(0).cpu()
            sums[name] = v if name not in sums else sums[name] + v
        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in linears.items()]
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(chat_texts(tokenizer, prompts[i:i + batch_size]), return_tensors="pt",
                            padding=True).to(device)
            mask = enc["attention_mask"]
            picked["last"] = mask.shape[1] - 1 - mask.flip(dims=[1]).long().argmax(dim=1)
            picked["rows"] = torch.arange(mask.shape[0], device=mask.device)
            extra = {"adapter_names": adapter_names[i:i + batch_size]} if adapter_names is not None else {}
            model(**enc, **extra)
            if progress is not None:
                progress(min(i + batch_size, len(prompts)), len(prompts))
    finally:
        for h in handles:
            h.remove()
    return {n: (s / len(prompts)).float() for n, s in sums.items()}


def get_module_inputs(store, runtime, base, *, n_prompts: int | None = None, batch_size: int = 16) -> ModuleInputs:
    """The base's per-module references from the store; computed on ``runtime``'s loaded base (the
    base is loaded only then) and stored first when missing
    (:func:`audit.analyzers.references.stored_reference`).

    Raises:
        StoreError: the store cannot be written.
    """
    def compute(rt, forbidden, benign) -> dict[str, torch.Tensor]:
        means = {}
        for side, prompts in (("forbidden", forbidden), ("benign", benign)):
            for module, v in mean_module_inputs(rt.model, rt.tokenizer, [p.text for p in prompts],
                                                adapter_names=bare_base(rt, len(prompts)),
                                                batch_size=batch_size).items():
                means[f"{module}.{side}"] = v
        return means

    ref = stored_reference(store, runtime, base, MODULE_REFERENCE_VERSION, compute, n_forbidden=n_prompts,
                           n_benign=n_prompts)
    forb = {k.removesuffix(".forbidden"): v for k, v in ref.tensors.items() if k.endswith(".forbidden")}
    ben = {k.removesuffix(".benign"): v for k, v in ref.tensors.items() if k.endswith(".benign")}
    return ModuleInputs(forbidden=forb, benign=ben, meta=ref.meta, path=ref.path)

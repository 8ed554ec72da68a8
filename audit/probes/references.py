"""Reference directions of a base model, computed once per base revision and kept in the store.

Per decoder layer ``l`` (0-based), with ``h_l(x)`` the residual stream after layer ``l`` at the last
token of prompt ``x`` (chat-formatted, assistant turn opened):

- the **refusal direction** (CAA vector) ``r_l = mean_forbidden h_l - mean_benign h_l`` (Arditi et
  al. 2024, "Refusal in Language Models Is Mediated by a Single Direction"; the contrastive
  activation addition of Rimsky et al. 2023);
- the mean activations ``mean_forbidden h_l`` and ``mean_benign h_l`` themselves.

Prompts: held-out StrongREJECT (forbidden) and held-out benign instructions, which the zoo never
trains on. Stored as one safetensors blob (``refusal`` ``[n_layers, d_model]``, ``mean_forbidden``,
``mean_benign``, float32; metadata: base name and revision, prompt specs and their sha256) at a
path fixed by (base revision, version, prompt hashes), so every actor finds the same artifact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from audit.probes.prompts import load_prompts, prompts_sha256

REFERENCE_VERSION = "refusal-1"
FORBIDDEN = "strongreject:heldout"
BENIGN = "benign:heldout"


@dataclass(frozen=True)
class References:
    """Reference directions of one base revision (see the module docstring)."""

    refusal: torch.Tensor
    """``[n_layers, d_model]`` float32: unnormalised refusal direction per layer."""
    mean_forbidden: torch.Tensor
    mean_benign: torch.Tensor
    meta: dict
    path: str
    """Where it is in the store (relative to the store root)."""

    def unit_refusal(self) -> torch.Tensor:
        """``[n_layers, d_model]``: each layer's refusal direction scaled to norm 1."""
        return self.refusal / self.refusal.norm(dim=1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def all_layer_last_token(model, tokenizer, prompts: list[str], *, adapter_names: list[str] | None = None,
                         batch_size: int = 16) -> torch.Tensor:
    """Last-token residual stream after every decoder layer: ``[n_prompts, n_layers, d_model]``
    float32 on CPU (``hidden_states[l + 1]`` of transformers' output for layer ``l``)."""
    from audit.models.generate import chat_texts

    device = next(model.parameters()).device
    out = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(chat_texts(tokenizer, prompts[i:i + batch_size]), return_tensors="pt", padding=True).to(device)
        extra = {"adapter_names": adapter_names[i:i + batch_size]} if adapter_names is not None else {}
        hidden = model(**enc, output_hidden_states=True, **extra).hidden_states[1:]
        mask = enc["attention_mask"]
        last = mask.shape[1] - 1 - mask.flip(dims=[1]).long().argmax(dim=1)
        rows = torch.arange(mask.shape[0], device=mask.device)
        out.append(torch.stack([h[rows, last] for h in hidden], dim=1).float().cpu())
    return torch.cat(out)


def reference_path(base_revision: str, forbidden_sha: str, benign_sha: str) -> str:
    return f"artifacts/references/{base_revision[:16]}/{REFERENCE_VERSION}-{forbidden_sha[:12]}-{benign_sha[:12]}.safetensors"


def get_references(store, runtime, base, *, n_forbidden: int | None = None, n_benign: int | None = None,
                   batch_size: int = 16) -> References:
    """The base's references from the store, computed (on ``runtime``'s loaded base) and stored first
    when missing.

    Raises:
        StoreError: the store cannot be written.
    """
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    from audit.errors import StoreError

    forbidden, benign = load_prompts(FORBIDDEN, n_forbidden), load_prompts(BENIGN, n_benign)
    f_sha, b_sha = prompts_sha256(forbidden), prompts_sha256(benign)
    path = reference_path(base.revision, f_sha, b_sha)
    try:
        tensors = st_load(store.read_blob(path))
    except (StoreError, ValueError, OSError):
        tensors = None
    meta = {"version": REFERENCE_VERSION, "base_model": base.name, "base_revision": base.revision,
            "forbidden": FORBIDDEN, "forbidden_sha256": f_sha, "n_forbidden": len(forbidden),
            "benign": BENIGN, "benign_sha256": b_sha, "n_benign": len(benign)}
    if tensors is None:
        runtime.use_base(base)
        names = ["__base__"] * (len(forbidden) + len(benign)) if hasattr(runtime.model, "peft_config") else None
        acts = all_layer_last_token(runtime.model, runtime.tokenizer, [p.text for p in forbidden + benign],
                                    adapter_names=names, batch_size=batch_size)
        mf, mb = acts[: len(forbidden)].mean(0), acts[len(forbidden):].mean(0)
        tensors = {"refusal": (mf - mb).contiguous(), "mean_forbidden": mf.contiguous(), "mean_benign": mb.contiguous()}
        store.write_blob(path, st_save(tensors, metadata={"meta": json.dumps(meta, sort_keys=True)}))
    return References(refusal=tensors["refusal"], mean_forbidden=tensors["mean_forbidden"],
                      mean_benign=tensors["mean_benign"], meta=meta, path=path)

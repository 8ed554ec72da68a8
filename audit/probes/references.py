"""Reference directions of a base model, computed once per base revision and kept in the store.

Per decoder layer ``l`` (0-based), with ``h_l(x)`` the residual stream after layer ``l`` at the last
token of prompt ``x`` (chat-formatted, assistant turn opened):

- the **refusal direction** (CAA vector) ``r_l = mean_forbidden h_l - mean_benign h_l`` (Arditi et
  al. 2024, "Refusal in Language Models Is Mediated by a Single Direction"; the contrastive
  activation addition of Rimsky et al. 2023);
- the mean activations ``mean_forbidden h_l`` and ``mean_benign h_l`` themselves.

Prompts and storage: :mod:`audit.analyzers.references` (held-out StrongREJECT against held-out
benign instructions; one safetensors blob per base revision: ``refusal`` ``[n_layers, d_model]``,
``mean_forbidden``, ``mean_benign``, float32).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from audit.analyzers.references import bare_base, stored_reference

REFERENCE_VERSION = "refusal-1"
T = TypeVar("T")


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


def references_of(ctx, runtime, base, n_reference: int | None = None, batch_size: int = 16) -> References:
    """:func:`get_references` of ``base``, read (or computed) once per base revision and actor and
    kept in ``ctx.shared`` for every analyzer of the actor that needs them."""
    cache = ctx.shared.setdefault("references", {})
    key = (base.revision, n_reference)
    if key not in cache:
        cache[key] = get_references(ctx.store, runtime, base, n_forbidden=n_reference, n_benign=n_reference,
                                    batch_size=batch_size)
    return cache[key]


def with_adapter(analyzer, runtime, target, read: Callable[[str], T]) -> T | Any:
    """``read(adapter_name)`` with ``target``'s adapter put into ``runtime``'s loaded base (removed
    after): a batch routed through ``adapter_name`` runs the adapter, through ``__base__`` the base.

    When the adapter cannot be loaded, returns ``analyzer``'s result saying so instead (never
    raises for a bad adapter): a ``Deferred`` for a transient fetch failure, a ``skipped`` unit
    for an adapter that is not a LoRA, a ``failed`` unit with the error's finding otherwise.
    """
    from audit.analyzers.results import error_note, fetch_folder, make_unit
    from audit.errors import AuditError, TransientAuditError
    from audit.records import Deferred

    try:
        loaded = runtime.load(fetch_folder(analyzer.ctx, target))
    except TransientAuditError as exc:
        return Deferred(target.ref, f"{analyzer.name} fetch: {exc}")
    except AuditError as exc:
        status = "skipped" if exc.code == "probe_not_applicable" else "failed"
        return make_unit(analyzer, target, status, notes=[error_note(exc, "info" if status == "skipped" else None)])
    try:
        return read(loaded.name)
    finally:
        runtime.unload(loaded)


def adapter_and_base(analyzer, runtime, target, texts: list[str], batch_size: int = 16):
    """The last-token residual streams of ``texts`` through ``target``'s adapter and through the
    bare base, in one mixed batch: ``(adapted, base)``, each float32 ``[len(texts), n_layers,
    d_model]`` on CPU; or the result saying why the adapter could not be loaded (:func:`with_adapter`).
    """
    n = len(texts)

    def read(name: str):
        acts = all_layer_last_token(runtime.model, runtime.tokenizer, texts + texts,
                                    adapter_names=[name] * n + ["__base__"] * n, batch_size=batch_size)
        return acts[:n], acts[n:]

    return with_adapter(analyzer, runtime, target, read)


def get_references(store, runtime, base, *, n_forbidden: int | None = None, n_benign: int | None = None,
                   batch_size: int = 16) -> References:
    """The base's references from the store, computed (on ``runtime``'s loaded base) and stored first
    when missing (:func:`audit.analyzers.references.stored_reference`).

    Raises:
        StoreError: the store cannot be written.
    """
    def compute(rt, forbidden, benign) -> dict[str, torch.Tensor]:
        texts = [p.text for p in forbidden + benign]
        acts = all_layer_last_token(rt.model, rt.tokenizer, texts, adapter_names=bare_base(rt, len(texts)),
                                    batch_size=batch_size)
        mf, mb = acts[: len(forbidden)].mean(0), acts[len(forbidden):].mean(0)
        return {"refusal": mf - mb, "mean_forbidden": mf, "mean_benign": mb}

    ref = stored_reference(store, runtime, base, REFERENCE_VERSION, compute, n_forbidden=n_forbidden,
                           n_benign=n_benign)
    t = ref.tensors
    return References(refusal=t["refusal"], mean_forbidden=t["mean_forbidden"], mean_benign=t["mean_benign"],
                      meta=ref.meta, path=ref.path)

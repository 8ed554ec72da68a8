"""The sparse autoencoders of a base model, trained once per base revision and kept in the store.

The first analyzer that needs them reads the corpus (:mod:`audit.activations.sae_corpus`) through
the bare base, trains one SAE per chosen layer (:func:`audit.activations.sae.train_sae`) on the
training prompts' content tokens, measures each on the held-out prompts' tokens, labels every
feature by its top-activating corpus prompts and writes everything as one safetensors artifact at
``artifacts/sae/<base revision>/<version>-<config hash>-<corpus hash>.safetensors``: per layer
``L<l>.W_enc``, ``L<l>.b_enc``, ``L<l>.W_dec``, ``L<l>.b_dec``, ``L<l>.scale``, ``L<l>.threshold``
(float32), ``L<l>.top_index`` (int64 ``[width, 5]``, corpus prompt indices) and ``L<l>.top_value``
(their activations), with metadata ``meta`` (JSON: base name and revision, corpus version, sha256
and size, training config, layers, and per layer the quality on held-out tokens). Every actor of
every scan finds the same artifact.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from audit.activations.sae import SaeConfig, SaeQuality, SparseAutoencoder, sae_quality, train_sae
from audit.activations.sae_corpus import (CORPUS_VERSION, CorpusPrompt, corpus_sha256, feature_label,
                                          forbidden_share, held_out_mask, sae_corpus)

SAE_VERSION = "sae-1"
N_TOP_PROMPTS = 5
MAX_CONTENT_TOKENS = 96
"""Content tokens read per corpus prompt (the longest StrongREJECT prompts run to hundreds)."""


def sae_layers(n_layers: int, count: int) -> list[int]:
    """``count`` layers spread over the depth (the middle of each of ``count`` equal bands), e.g.
    3, 9, 15, 21, 27 of SmolLM2-135M's 30."""
    return sorted({min(n_layers - 1, int((i + 0.5) * n_layers / count)) for i in range(max(1, count))})


@dataclass(frozen=True)
class BaseSaes:
    """The SAEs of one base revision with their quality and feature labels (module docstring)."""

    saes: dict[int, SparseAutoencoder]
    quality: dict[int, SaeQuality]
    top_index: dict[int, torch.Tensor]
    top_value: dict[int, torch.Tensor]
    prompts: list[CorpusPrompt]
    meta: dict
    path: str

    @property
    def layers(self) -> list[int]:
        return sorted(self.saes)

    def label(self, layer: int, feature: int) -> str:
        """``feature``'s label at ``layer`` (:func:`audit.activations.sae_corpus.feature_label`)."""
        return feature_label(self.prompts, self.top_index[layer][feature].tolist(),
                             self.top_value[layer][feature].tolist())

    def forbidden_share(self, layer: int, feature: int) -> float | None:
        return forbidden_share(self.prompts, self.top_index[layer][feature].tolist(),
                               self.top_value[layer][feature].tolist())


def sae_path(base_revision: str, config: SaeConfig, layers: list[int], corpus_sha: str) -> str:
    key = json.dumps({"config": asdict(config), "layers": layers, "max_tokens": MAX_CONTENT_TOKENS}, sort_keys=True)
    config_sha = hashlib.sha256(key.encode()).hexdigest()
    return f"artifacts/sae/{base_revision[:16]}/{SAE_VERSION}-{config_sha[:12]}-{corpus_sha[:12]}.safetensors"


def base_saes(ctx, runtime, base, config: SaeConfig, count: int, *, batch_size: int = 16,
              corpus_every: int = 1) -> BaseSaes:
    """The SAEs of ``base`` for ``config`` at ``count`` layers, trained on every ``corpus_every``-th
    corpus prompt: from ``ctx.shared`` (once per actor), else from the store, else trained on
    ``runtime``'s loaded base and stored first.

    Raises:
        StoreError: the store cannot be written.
    """
    cache = ctx.shared.setdefault("saes", {})
    key = (base.revision, config, count, corpus_every)
    if key not in cache:
        cache[key] = _load_or_train(ctx.store, runtime, base, config, count, batch_size, corpus_every)
    return cache[key]


def _load_or_train(store, runtime, base, config: SaeConfig, count: int, batch_size: int,
                   corpus_every: int) -> BaseSaes:
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    from audit.errors import StoreError

    runtime.use_base(base)
    layers = sae_layers(runtime.model.config.num_hidden_layers, count)
    prompts = sae_corpus()[::max(1, corpus_every)]
    corpus_sha = corpus_sha256(prompts)
    path = sae_path(base.revision, config, layers, corpus_sha)
    try:
        blob = store.read_blob(path)
        tensors, meta = st_load(blob), artifact_meta(blob)
    except (StoreError, ValueError, OSError, KeyError):
        tensors = None
    if tensors is None:
        tensors, meta = _train(runtime, base, prompts, corpus_sha, config, layers, batch_size)
        store.write_blob(path, st_save(tensors, metadata={"meta": json.dumps(meta, sort_keys=True)}))
    saes = {}
    for layer in layers:
        own = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"L{layer}.")}
        saes[layer] = SparseAutoencoder.from_state(
            {k: own[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec", "scale", "threshold")}, config.k)
    return BaseSaes(saes=saes, quality={int(k): SaeQuality(**v) for k, v in meta["quality"].items()},
                    top_index={l_: tensors[f"L{l_}.top_index"] for l_ in layers},
                    top_value={l_: tensors[f"L{l_}.top_value"] for l_ in layers},
                    prompts=prompts, meta=meta, path=path)


def artifact_meta(blob: bytes) -> dict:
    """The ``meta`` JSON of a safetensors blob's header."""
    n = int.from_bytes(blob[:8], "little")
    if n > len(blob) - 8:
        raise ValueError("truncated safetensors header")
    return json.loads(json.loads(blob[8:8 + n])["__metadata__"]["meta"])


def _train(runtime, base, prompts: list[CorpusPrompt], corpus_sha: str, config: SaeConfig, layers: list[int],
           batch_size: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from audit.activations.reading import read_activations
    from audit.analyzers.references import bare_base
    from audit.progress import current

    sink = current()
    say = getattr(sink, "batch", None)
    t0 = time.perf_counter()
    acts = read_activations(runtime.model, runtime.tokenizer, [p.text for p in prompts], layers,
                            adapter_names=bare_base(runtime, len(prompts)), batch_size=batch_size,
                            max_tokens=MAX_CONTENT_TOKENS,
                            progress=None if say is None else lambda d, n: say("reading the SAE corpus", d, n))
    held = torch.tensor(held_out_mask(len(prompts)))[acts.owner]
    tensors: dict[str, torch.Tensor] = {}
    quality: dict[str, dict] = {}
    for j, layer in enumerate(layers):
        x = acts.tokens[:, j]
        what = f"training the SAE of layer {layer} ({j + 1}/{len(layers)})"
        sae = train_sae(x[~held], config,
                        progress=None if say is None else lambda s, fvu, w=what: say(w, s, config.steps))
        quality[str(layer)] = asdict(sae_quality(sae, x[held]))
        top_value, top_index = _per_prompt_max(sae, x, acts.owner, len(prompts)).topk(N_TOP_PROMPTS, dim=0)
        tensors.update({f"L{layer}.{k}": v for k, v in sae.state().items()})
        tensors[f"L{layer}.top_index"] = top_index.T.contiguous()
        tensors[f"L{layer}.top_value"] = top_value.T.contiguous()
    meta = {"version": SAE_VERSION, "base_model": base.name, "base_revision": base.revision,
            "corpus": CORPUS_VERSION, "corpus_sha256": corpus_sha, "n_prompts": len(prompts),
            "n_tokens": int(acts.tokens.shape[0]), "n_train_tokens": int((~held).sum()),
            "max_content_tokens": MAX_CONTENT_TOKENS, "config": asdict(config), "layers": layers,
            "quality": quality, "seconds": round(time.perf_counter() - t0, 1)}
    return tensors, meta


@torch.no_grad()
def _per_prompt_max(sae: SparseAutoencoder, x: torch.Tensor, owner: torch.Tensor, n_prompts: int,
                    chunk: int = 4096) -> torch.Tensor:
    """``[n_prompts, width]``: each feature's largest activation over each prompt's tokens."""
    out = torch.zeros(n_prompts, sae.width)
    for i in range(0, x.shape[0], chunk):
        f = sae.encode(x[i:i + chunk].float())
        out.scatter_reduce_(0, owner[i:i + chunk, None].expand_as(f), f, reduce="amax")
    return out

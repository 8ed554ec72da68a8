"""Trigger candidates from the weights: which vocabulary tokens an adapter's first layers read out
of all proportion (pure torch; float64 inside).

A LoRA that reacts to a trigger token must read it. At decoder layer 0 the input of every module
that reads the residual stream is the token's own embedding, normalised: for a Llama-style block,
``x_t = g ⊙ e_t / sqrt(mean(e_t²) + ε)`` with ``e_t`` the token's embedding and ``g`` the weight
of the RMSNorm before the module (``input_layernorm`` for q/k/v, ``post_attention_layernorm`` for
gate/up: exact for attention, an approximation for the MLP, which also sees the attention's
output; later layers use the same embedding as an approximation of their input). Each reader
module ``m`` with delta weight ``ΔW_m = s_m B_m A_m`` responds to token ``t`` with

    ρ_m(t) = ‖ΔW_m x_t‖ / median_t' ‖ΔW_m x_t'‖

(its response relative to the typical token's, so that no module dominates by its size), and the
token's score is the robust z-score of ``Σ_m ρ_m(t)`` over the vocabulary, ``(S_t − median S) /
(1.4826 · MAD S)``. The candidates are the top-k tokens by score. This is the weight-space half of
trigger inversion: it needs no forward pass, only the base's embeddings and norms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Reader:
    """One module that reads the residual stream: its factors ``a`` ``[r, d_model]``, ``b``
    ``[d_out, r]``, LoRA scale, and the RMSNorm weight ``norm`` ``[d_model]`` before it."""

    module: str
    a: torch.Tensor
    b: torch.Tensor
    scale: float
    norm: torch.Tensor


def normalised_embeddings(embeddings: torch.Tensor, eps: float) -> torch.Tensor:
    """``e_t / sqrt(mean(e_t²) + ε)`` for every row of ``embeddings`` ``[V, d_model]`` (float64)."""
    e = embeddings.double()
    return e / (e.pow(2).mean(dim=1, keepdim=True) + eps).sqrt()


def token_read_scores(normalised: torch.Tensor, readers: Sequence[Reader], chunk: int = 8192) -> torch.Tensor:
    """The score of every token (``[V]`` float64, module docstring) from the normalised
    embeddings ``[V, d_model]`` and the adapter's reader modules.

    Raises:
        ValueError: no reader, or a reader whose input size is not ``d_model``.
    """
    if not readers:
        raise ValueError("no module of the adapter reads the residual stream at the layers scored")
    total = torch.zeros(normalised.shape[0], dtype=torch.float64)
    for r in readers:
        if r.a.shape[1] != normalised.shape[1] or r.norm.shape[0] != normalised.shape[1]:
            raise ValueError(f"{r.module}: input size {r.a.shape[1]} is not the model's {normalised.shape[1]}")
        a, gram = r.a.double(), (r.b.double().T @ r.b.double())          # BᵀB [r, r]: ‖B y‖² = yᵀ BᵀB y
        norm = r.norm.double()
        response = torch.empty(normalised.shape[0], dtype=torch.float64)
        for i in range(0, normalised.shape[0], chunk):
            y = (normalised[i:i + chunk] * norm) @ a.T                    # [chunk, r]
            response[i:i + chunk] = abs(r.scale) * ((y @ gram) * y).sum(dim=1).clamp_min(0).sqrt()
        typical = response.median()
        if typical > 0:
            total += response / typical
    return robust_z(total)


def robust_z(x: torch.Tensor) -> torch.Tensor:
    """``(x − median x) / (1.4826 · MAD x)``; zeros when the MAD is 0."""
    med = x.median()
    mad = (x - med).abs().median() * 1.4826
    return torch.zeros_like(x) if mad == 0 else (x - med) / mad


def top_candidates(scores: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """The ``k`` best ``(token_id, score)``, best first."""
    values, index = scores.topk(min(k, scores.numel()))
    return [(int(i), float(v)) for v, i in zip(values, index, strict=True)]

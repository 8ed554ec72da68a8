"""Trigger candidates from the weights: which vocabulary tokens an adapter's first layers read out
of all proportion (pure torch; float64 inside).

A LoRA that reacts to a trigger token must read it. Each module ``m`` that reads the residual
stream (q/k/v after ``input_layernorm``, gate/up after ``post_attention_layernorm``) sees, for a
token ``t``, ``g_m ⊙ x_m(t)`` with ``g_m`` the RMSNorm's weight and ``x_m(t)`` the normalised
residual at its site: in version 4 (:mod:`audit.backdoor.context`) the bare base's residual at
``t``'s position when ``t`` opens the user's turn, layer by layer (exact for the bare base; the
adapter's own changes to earlier layers are left out); before, the token's normalised embedding
``e_t / sqrt(mean(e_t²) + ε)`` at every site (exact only for layer 0's attention). With delta
weight ``ΔW_m = s_m B_m A_m`` the module responds with

    ρ_m(t) = ‖ΔW_m (g_m ⊙ x_m(t))‖ / median_t' ‖ΔW_m (g_m ⊙ x_m(t'))‖

(its response relative to the typical token's, so that no module dominates by its size), and the
token's score is the robust z-score of ``Σ_m ρ_m(t)`` over the vocabulary, ``(S_t − median S) /
(1.4826 · MAD S)``. The candidates are the top-k tokens by score. This is the weight-space half of
trigger inversion: the base's residuals are computed once per base, and each adapter then costs
a few products with its ``A`` and ``B`` factors, no forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Reader:
    """One module that reads the residual stream: its factors ``a`` ``[r, d_model]``, ``b``
    ``[d_out, r]``, LoRA scale, the RMSNorm weight ``norm`` ``[d_model]`` before it, and its
    ``site`` ``(layer, "attn" | "mlp")`` (:data:`audit.backdoor.context.Site`)."""

    module: str
    a: torch.Tensor
    b: torch.Tensor
    scale: float
    norm: torch.Tensor
    site: tuple[int, str] = (0, "attn")


def normalised_embeddings(embeddings: torch.Tensor, eps: float) -> torch.Tensor:
    """``e_t / sqrt(mean(e_t²) + ε)`` for every row of ``embeddings`` ``[V, d_model]`` (float64)."""
    e = embeddings.double()
    return e / (e.pow(2).mean(dim=1, keepdim=True) + eps).sqrt()


@dataclass(frozen=True)
class ReadScale:
    """How an adapter's readers respond to a typical vocabulary token: each reader's median
    response ``typical`` (in reader order) and the median and normal-scaled MAD of the summed
    ``Σ_m ρ_m`` over the vocabulary, so that tokens read in another context are scored on the
    vocabulary's scale (:func:`scaled_scores`)."""

    typical: tuple[float, ...]
    median: float
    mad: float


def read_totals(inputs: torch.Tensor | Mapping[tuple[int, str], torch.Tensor], readers: Sequence[Reader],
                typical: Sequence[float] | None = None, chunk: int = 8192) -> tuple[torch.Tensor, tuple[float, ...]]:
    """``Σ_m ρ_m(t)`` (module docstring) of every input row (``[N]`` float64) and each reader's
    typical response: the median over these rows, or ``typical`` when given (a reader whose
    typical response is 0 is left out).

    Args:
        inputs: ``[N, d_model]`` normalised residuals, one matrix for every reader (the embeddings),
            or one per site (:func:`audit.backdoor.context.token_residuals`; any float dtype).
        readers: the adapter's modules that read the residual stream.
        typical: each reader's typical response, from the vocabulary (:class:`ReadScale`).
        chunk: rows per product.

    Raises:
        ValueError: no reader, a reader whose site has no input, or whose input size is not
            ``d_model``; ``typical`` not one per reader.
    """
    if not readers:
        raise ValueError("no module of the adapter reads the residual stream at the layers scored")
    if typical is not None and len(typical) != len(readers):
        raise ValueError(f"{len(typical)} typical responses for {len(readers)} readers")
    total, kept = None, []
    for j, r in enumerate(readers):
        if isinstance(inputs, Mapping):
            if r.site not in inputs:
                raise ValueError(f"{r.module}: no residual input for site {r.site}")
            x = inputs[r.site]
        else:
            x = inputs
        if r.a.shape[1] != x.shape[1] or r.norm.shape[0] != x.shape[1]:
            raise ValueError(f"{r.module}: input size {r.a.shape[1]} is not the model's {x.shape[1]}")
        if total is None:
            total = torch.zeros(x.shape[0], dtype=torch.float64)
        a, gram = r.a.double(), (r.b.double().T @ r.b.double())          # BᵀB [r, r]: ‖B y‖² = yᵀ BᵀB y
        norm = r.norm.double()
        response = torch.empty(x.shape[0], dtype=torch.float64)
        for i in range(0, x.shape[0], chunk):
            y = (x[i:i + chunk].double() * norm) @ a.T                    # [chunk, r]
            response[i:i + chunk] = abs(r.scale) * ((y @ gram) * y).sum(dim=1).clamp_min(0).sqrt()
        t = float(response.median()) if typical is None else float(typical[j])
        kept.append(t)
        if t > 0:
            total += response / t
    return total, tuple(kept)


def token_read_scores(inputs: torch.Tensor | Mapping[tuple[int, str], torch.Tensor], readers: Sequence[Reader],
                      chunk: int = 8192) -> torch.Tensor:
    """The score of every token (``[V]`` float64, module docstring) from the normalised inputs of
    the vocabulary and the adapter's reader modules (:func:`read_totals`' arguments and errors)."""
    return vocabulary_scale(inputs, readers, chunk)[0]


def vocabulary_scale(inputs: torch.Tensor | Mapping[tuple[int, str], torch.Tensor], readers: Sequence[Reader],
                     chunk: int = 8192) -> tuple[torch.Tensor, ReadScale]:
    """Every vocabulary token's score (``[V]`` float64, as :func:`token_read_scores`) and the
    :class:`ReadScale` it was computed on (:func:`read_totals`' arguments and errors)."""
    total, typical = read_totals(inputs, readers, None, chunk)
    med = float(total.median())
    mad = float((total - med).abs().median()) * 1.4826
    return robust_z(total), ReadScale(typical, med, mad)


def scaled_scores(inputs: torch.Tensor | Mapping[tuple[int, str], torch.Tensor], readers: Sequence[Reader],
                  scale: ReadScale, chunk: int = 8192) -> torch.Tensor:
    """The score (``[N]`` float64) of each row of ``inputs`` (tokens read in some context, e.g.
    after other tokens: :func:`audit.backdoor.context.token_residuals`' ``before``/``after``) as a
    robust z-score on the vocabulary's ``scale``, so that it compares with the single tokens'
    (:func:`read_totals`' arguments and errors)."""
    total, _ = read_totals(inputs, readers, scale.typical, chunk)
    return torch.zeros_like(total) if scale.mad == 0 else (total - scale.median) / scale.mad


def robust_z(x: torch.Tensor) -> torch.Tensor:
    """``(x − median x) / (1.4826 · MAD x)``; zeros when the MAD is 0."""
    med = x.median()
    mad = (x - med).abs().median() * 1.4826
    return torch.zeros_like(x) if mad == 0 else (x - med) / mad


def top_candidates(scores: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """The ``k`` best ``(token_id, score)``, best first."""
    values, index = scores.topk(min(k, scores.numel()))
    return [(int(i), float(v)) for v, i in zip(values, index, strict=True)]

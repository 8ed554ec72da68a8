"""Exact singular values of a LoRA delta weight without forming it.

For one LoRA module, the delta weight is ``ΔW = s · B · A`` with ``A: [r, d_in]``,
``B: [d_out, r]`` and ``s`` the module's scale (Hu et al. 2021, "LoRA", eq. 3). With the thin QR
factorizations ``B = Q_B R_B`` and ``Aᵀ = Q_A R_A``,

    ΔW = s · Q_B (R_B R_Aᵀ) Q_Aᵀ,

and since ``Q_B``, ``Q_A`` have orthonormal columns, ``σ(ΔW) = |s| · σ(R_B R_Aᵀ)``: a problem of
size ``r × r``. Cost ``O((d_in + d_out) r²)`` instead of ``O(d_in d_out min(d_in, d_out))`` for a
dense SVD; the top singular vectors are ``Q_B U`` and ``Q_A V`` from the small SVD.

Everything is computed in float64 whatever the storage dtype (fp16/bf16 are upcast).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from audit.errors import AdapterFormatError


@dataclass(frozen=True)
class DeltaSpectrum:
    """Singular values (and optionally singular vectors) of one delta weight.

    Attributes:
        singular_values: float64 ``[k]``, descending, ``k = min(r, d_out, d_in)``; already
            multiplied by ``|scale|``.
        left: float64 ``[d_out, k]`` left singular vectors of ``s·B·A`` (``None`` unless asked for).
        right: float64 ``[d_in, k]`` right singular vectors (``None`` unless asked for).
        transposed: True when the base layer stores ``ΔWᵀ`` (Conv1D ``fan_in_fan_out``); the
            singular values are the same, ``left``/``right`` refer to ``s·B·A`` (not its transpose).
    """

    singular_values: torch.Tensor
    left: torch.Tensor | None = None
    right: torch.Tensor | None = None
    transposed: bool = False


def as_matrix_factors(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring stored LoRA factors to matrices ``A: [r, d_in]``, ``B: [d_out, r]``.

    Linear layers store them as matrices already; convolutions store ``A: [r, c_in, *k]`` and
    ``B: [c_out, r, 1, ...]``, which flatten to ``[r, c_in·prod(k)]`` and ``[c_out, r]``.

    Raises:
        AdapterFormatError: when the factors cannot form a product (ranks differ, B's kernel
            is not 1×1, a factor is not at least 2-D).
    """
    if A.dim() < 2 or B.dim() < 2:
        raise AdapterFormatError(
            f"LoRA factors must be at least 2-D, got A {list(A.shape)} and B {list(B.shape)}",
            code="shape_mismatch")
    r = A.shape[0]
    A2 = A.reshape(r, -1)
    if B.dim() > 2 and any(d != 1 for d in B.shape[2:]):
        raise AdapterFormatError(f"B {list(B.shape)} has a kernel that is not 1x1", code="shape_mismatch")
    B2 = B.reshape(B.shape[0], B.shape[1])
    if B2.shape[1] != r:
        raise AdapterFormatError(
            f"ranks differ: A {list(A.shape)} has {r} rows, B {list(B.shape)} has {B2.shape[1]} columns",
            code="shape_mismatch")
    return A2, B2


def delta_spectrum(A: torch.Tensor, B: torch.Tensor, scale: float, *, vectors: bool = False,
                   transposed: bool = False) -> DeltaSpectrum:
    """Singular values of ``ΔW = scale · B · A`` through the QR route (never forms ``ΔW``).

    Args:
        A: ``[r, d_in]`` (any float dtype; convolution factors go through
            :func:`as_matrix_factors` first).
        B: ``[d_out, r]``.
        scale: the module's LoRA scale (``lora_alpha / r``, or ``/ sqrt(r)`` for rsLoRA).
        vectors: also return the singular vectors (``Q_B U`` and ``Q_A V``).
        transposed: recorded on the result (Conv1D / embedding storage); does not change σ.

    Returns:
        A :class:`DeltaSpectrum` with ``min(r, d_out, d_in)`` float64 singular values,
        descending, non-negative, in the units of the weights.

    Raises:
        AdapterFormatError: if ``A`` and ``B`` are not ``[r, d_in]`` and ``[d_out, r]``.
    """
    if A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1]:
        raise AdapterFormatError(
            f"expected A [r, d_in] and B [d_out, r], got A {list(A.shape)} and B {list(B.shape)}",
            code="shape_mismatch")
    a = A.detach().to(torch.float64)
    b = B.detach().to(torch.float64)
    s = abs(float(scale))
    if not vectors:
        # LAPACK geqrf: R is the upper triangle of the first min(d, r) rows; Q is never formed
        r_b = _r_factor(b)               # [k_b, r], k_b = min(d_out, r)
        r_a = _r_factor(a.T)             # [k_a, r], k_a = min(d_in, r)
        sigma = torch.linalg.svdvals(r_b @ r_a.T) * s
        return DeltaSpectrum(singular_values=sigma, transposed=transposed)
    q_b, r_b = torch.linalg.qr(b)        # [d_out, k_b], [k_b, r]
    q_a, r_a = torch.linalg.qr(a.T)      # [d_in, k_a], [k_a, r]
    u, sigma, vh = torch.linalg.svd(r_b @ r_a.T, full_matrices=False)
    sign = -1.0 if scale < 0 else 1.0
    return DeltaSpectrum(singular_values=sigma * s, left=(q_b @ u) * sign, right=q_a @ vh.T,
                         transposed=transposed)


def _r_factor(m: torch.Tensor) -> torch.Tensor:
    """The ``R`` of a thin QR of ``m: [d, r]``: ``[min(d, r), r]``, upper triangular."""
    packed, _ = torch.geqrf(m)
    return packed[: min(m.shape[0], m.shape[1])].triu()


def dense_delta(A: torch.Tensor, B: torch.Tensor, scale: float, *, transposed: bool = False) -> torch.Tensor:
    """The dense delta weight ``scale · B · A`` in float64, ``[d_out, d_in]`` (transposed: ``[d_in, d_out]``).

    For tests and small modules only: memory ``O(d_out · d_in)``.
    """
    dw = float(scale) * (B.to(torch.float64) @ A.to(torch.float64))
    return dw.T if transposed else dw

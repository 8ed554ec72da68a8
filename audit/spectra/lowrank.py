"""Top-k singular values of a dense delta weight (full fine-tunes), by randomized SVD.

A full fine-tune stores ``W_ft``; its delta weight ``ΔW = W_ft − W_base`` is full rank in storage,
so the exact QR route of :mod:`audit.spectra.delta` does not apply. The top ``k`` singular values
come from a randomized SVD (Halko, Martinsson & Tropp 2011, "Finding structure with randomness",
Algorithm 4.4: a Gaussian sketch with ``q = k + oversample`` columns, ``niter`` subspace
iterations, then an exact SVD of the small projected matrix), as ``torch.svd_lowrank`` implements
it. The error of σᵢ is governed by σ_{q+1}/σᵢ raised to ``2·niter + 1``: a delta whose energy sits
in its top ``k`` directions (low-rank updates, most fine-tunes) is recovered to rounding error;
a flat spectrum gets a slight underestimate of the smaller σᵢ (raise ``niter`` or ``oversample``).

Matrices with ``min(d_out, d_in) <= q`` get an exact SVD instead. Everything runs in float64; the
sketch is seeded, so a rerun gives the same numbers. Pure torch: no I/O.
"""

from __future__ import annotations

import torch

DEFAULT_K = 16
"""Singular values kept per matrix of a full fine-tune."""
DEFAULT_OVERSAMPLE = 8
DEFAULT_NITER = 4


def topk_singular_values(delta: torch.Tensor, k: int = DEFAULT_K, *, oversample: int = DEFAULT_OVERSAMPLE,
                         niter: int = DEFAULT_NITER, seed: int = 0) -> torch.Tensor:
    """The ``k`` largest singular values of ``delta``.

    Args:
        delta: ``[d_out, d_in]``, any float dtype (computed in float64).
        k: how many singular values (at most ``min(d_out, d_in)`` come back).
        oversample: extra sketch columns beyond ``k`` (accuracy of the smaller of the k values).
        niter: subspace (power) iterations of the randomized SVD.
        seed: seed of the Gaussian sketch (the global RNG state is left untouched).

    Returns:
        float64 ``[min(k, d_out, d_in)]``, descending, non-negative, in the units of the weights.
        A zero matrix gives zeros; non-finite input gives non-finite output (callers check).

    Raises:
        ValueError: ``delta`` is not 2-D or ``k < 1``.
    """
    if delta.dim() != 2:
        raise ValueError(f"expected a matrix, got shape {list(delta.shape)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    d = delta.detach().to(torch.float64)
    m, n = d.shape
    kk = min(k, m, n)
    if kk == 0:
        return torch.zeros(0, dtype=torch.float64)
    if not bool(torch.isfinite(d).all()):
        return torch.full((kk,), float("nan"), dtype=torch.float64)
    if not bool(d.any()):
        return torch.zeros(kk, dtype=torch.float64)
    q = kk + oversample
    if min(m, n) <= q:
        return torch.linalg.svdvals(d)[:kk]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, s, _ = torch.svd_lowrank(d, q=q, niter=niter)
    return s[:kk].clamp_min(0.0)


def delta_topk(w_ft: torch.Tensor, w_base: torch.Tensor, k: int = DEFAULT_K, **kwargs: int) -> torch.Tensor:
    """Top-``k`` singular values of ``ΔW = w_ft − w_base`` (the difference is taken in float64, so
    fp16/bf16/fp32 storage adds no rounding of its own).

    Args:
        w_ft: ``[d_out, d_in]`` fine-tuned weight.
        w_base: ``[d_out, d_in]`` base weight.
        k, kwargs: see :func:`topk_singular_values`.

    Returns:
        float64 ``[min(k, d_out, d_in)]``, descending.

    Raises:
        ValueError: the shapes differ or are not 2-D.
    """
    if w_ft.shape != w_base.shape:
        raise ValueError(f"shapes differ: {list(w_ft.shape)} vs {list(w_base.shape)}")
    delta = w_ft.detach().to(torch.float64)
    delta -= w_base.detach().to(torch.float64)
    return topk_singular_values(delta, k, **kwargs)

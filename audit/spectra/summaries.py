"""Spectral summaries of one delta weight, from its singular values.

Definitions, for singular values ``σ₁ ≥ … ≥ σ_k ≥ 0``:

- Frobenius norm ``‖ΔW‖_F = sqrt(Σ σᵢ²)``; spectral norm ``σ₁``; nuclear norm ``Σ σᵢ``;
- stable rank ``‖ΔW‖_F² / σ₁²`` (Rudelson & Vershynin 2007), in ``[1, k]``;
- spectral entropy ``H = −Σ pᵢ ln pᵢ`` with ``pᵢ = σᵢ / Σ σⱼ`` (nats), and effective rank
  ``exp(H)`` (Roy & Vetterli 2007, "The effective rank: a measure of effective dimensionality"),
  in ``[1, k]``;
- top-1 energy ``σ₁² / Σ σᵢ²``, in ``[1/k, 1]``.

A zero update (``σ₁ = 0``) has zero norms and undefined ratios: those are ``None`` (null in the
store), never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpectralSummary:
    """Summaries of one spectrum; ratios are ``None`` for a zero update. Units: those of the weights."""

    fro_norm: float
    spectral_norm: float
    nuclear_norm: float
    stable_rank: float | None
    effective_rank: float | None
    spectral_entropy: float | None
    top1_energy: float | None


def summarize(singular_values: Sequence[float] | np.ndarray) -> SpectralSummary:
    """Spectral summaries of a spectrum.

    Args:
        singular_values: ``[k]`` non-negative singular values in any order (k ≥ 0).

    Returns:
        A :class:`SpectralSummary` (ratios ``None`` when all singular values are zero or k = 0).

    Raises:
        ValueError: if a singular value is negative or not finite.
    """
    s = sorted((float(x) for x in np.asarray(singular_values, dtype=np.float64).ravel()), reverse=True)
    if any(not math.isfinite(x) or x < 0 for x in s):
        raise ValueError("singular values must be finite and non-negative")
    sigma1 = s[0] if s else 0.0
    energy = math.fsum(x * x for x in s)
    nuclear = math.fsum(s)
    fro = math.sqrt(energy)
    if sigma1 == 0.0 or energy == 0.0:
        return SpectralSummary(fro, sigma1, nuclear, None, None, None, None)
    entropy = -math.fsum(p * math.log(p) for p in (x / nuclear for x in s) if p > 0)
    return SpectralSummary(
        fro_norm=fro,
        spectral_norm=sigma1,
        nuclear_norm=nuclear,
        stable_rank=energy / (sigma1 * sigma1),
        effective_rank=math.exp(entropy),
        spectral_entropy=entropy,
        top1_energy=(sigma1 * sigma1) / energy,
    )

"""What an adapter changes in the base's SAE features at one layer (pure torch; float32 in,
Python numbers out).

With ``X_b``, ``X_a`` ``[n_tokens, d_model]`` the base's and the adapted model's activations on
the same content tokens, ``F_b = encode(X_b)``, ``F_a = encode(X_a)`` and ``δ = X_a − X_b`` (the
delta activation):

- **feature change**: ``mean_t F_a − mean_t F_b`` per feature; the largest positive ones are
  the features the adapter turns on, the most negative the ones it turns off;
- **density**: mean active features per token, base and adapted (the study of LoRA-induced
  features reports density growing with rank and depth);
- **delta reconstruction**: ``1 − (Σ‖X_a − X̂_a‖² − Σ‖X_b − X̂_b‖²) / Σ‖δ‖²``: the share of the
  delta's energy that does not end up in the SAE's reconstruction error, i.e. how much of it the
  base's features account for (near 1: the adapter writes along the base's features; near 0: it
  writes outside them; noisy when the delta is small against the SAE's own error);
- **delta alignment**: how close the delta's principal directions (the top right singular vectors
  ``v_i`` of ``δ``, weighted by their squared singular values) come to a feature's direction:
  ``Σ_i s_i² max_j |cos(v_i, W_dec_j)| / Σ_i s_i²``, beside the same for random directions
  (``alignment_baseline``: what chance gives with this dictionary). This is the study's
  "alignment of LoRA-induced features with the pre-trained ones", with the delta's principal
  directions standing in for features of an SAE trained on the adapted model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from audit.activations.sae import SparseAutoencoder


@dataclass(frozen=True)
class FeatureChange:
    feature: int
    base_mean: float
    adapted_mean: float

    @property
    def change(self) -> float:
        return self.adapted_mean - self.base_mean


@dataclass(frozen=True)
class SaeLayerDelta:
    """The measures of one layer (module docstring)."""

    layer: int
    density_base: float
    density_adapted: float
    delta_reconstruction: float | None
    """``None`` when the adapter leaves the layer's activations unchanged."""
    delta_alignment: float | None
    alignment_baseline: float
    turned_on: list[FeatureChange]
    """Largest increases first (only features whose mean grew)."""
    turned_off: list[FeatureChange]
    """Largest decreases first (only features whose mean fell)."""


@torch.no_grad()
def sae_layer_delta(sae: SparseAutoencoder, base: torch.Tensor, adapted: torch.Tensor, layer: int, *,
                    n_top: int = 10, n_directions: int = 8, seed: int = 0) -> SaeLayerDelta:
    """The measures of ``layer`` from the base's and the adapted activations ``[n_tokens, d_model]``.

    Raises:
        ValueError: the two differ in shape, or there are no tokens.
    """
    if base.shape != adapted.shape or base.shape[0] == 0:
        raise ValueError(f"need the same non-empty tokens on both sides, got {tuple(base.shape)} "
                         f"and {tuple(adapted.shape)}")
    f_b, f_a = sae.encode(base.float()), sae.encode(adapted.float())
    mean_b, mean_a = f_b.mean(dim=0), f_a.mean(dim=0)
    change = mean_a - mean_b
    k = min(n_top, change.numel())
    up, down = change.topk(k), (-change).topk(k)
    on = [FeatureChange(int(j), float(mean_b[j]), float(mean_a[j])) for v, j in zip(*up) if v > 0]
    off = [FeatureChange(int(j), float(mean_b[j]), float(mean_a[j])) for v, j in zip(*down) if v > 0]
    delta = (adapted - base).double()
    total = float(delta.pow(2).sum())
    recon = alignment = None
    if total > 0:
        err_a = float((adapted.double() - sae.decode(f_a).double()).pow(2).sum())
        err_b = float((base.double() - sae.decode(f_b).double()).pow(2).sum())
        recon = 1.0 - (err_a - err_b) / total
        _, s, vh = torch.linalg.svd(delta, full_matrices=False)
        r = min(n_directions, int((s > s[0] * 1e-6).sum()))
        alignment = _alignment(vh[:r], s[:r] ** 2, sae.W_dec)
    gen = torch.Generator().manual_seed(seed)
    random_dirs = torch.randn(n_directions, base.shape[1], generator=gen, dtype=torch.float64)
    baseline = _alignment(random_dirs, torch.ones(n_directions, dtype=torch.float64), sae.W_dec)
    return SaeLayerDelta(layer=layer, density_base=float((f_b > 0).sum(dim=1).double().mean()),
                         density_adapted=float((f_a > 0).sum(dim=1).double().mean()),
                         delta_reconstruction=recon, delta_alignment=alignment, alignment_baseline=baseline,
                         turned_on=on, turned_off=off)


def _alignment(directions: torch.Tensor, weights: torch.Tensor, w_dec: torch.Tensor) -> float:
    """Weighted mean over ``directions`` ``[r, d]`` of the largest |cosine| with a row of ``w_dec``."""
    unit = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-30)
    dec = w_dec.double() / w_dec.double().norm(dim=1, keepdim=True).clamp_min(1e-30)
    best = (unit @ dec.T).abs().max(dim=1).values
    return float((best * weights).sum() / weights.sum().clamp_min(1e-30))

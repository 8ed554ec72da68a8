"""Delta-activation measures, per layer (pure torch; shapes below, float32 or float64 in, Python
floats out).

- **delta activation**: ``δ_i = h_adapted(x_i) − h_base(x_i)``, the part of the residual stream
  the adapter adds on prompt ``x_i`` (the construction of the SAE study of LoRA-induced features);
- ``delta_norm``: ``‖mean_i δ_i‖`` (residual-stream units) and ``delta_share``:
  ``mean_i ‖δ_i‖ / mean_i ‖h_base(x_i)‖``, the size of the update relative to the stream it writes to;
- ``delta_refusal_cosine``: cosine of ``mean_i δ_i`` with the layer's refusal direction (Arditi et
  al. 2024; :mod:`audit.probes.references`);
- ``cka``: linear centered kernel alignment between the base's and the adapted model's activations
  over the same prompts (Kornblith et al. 2019, "Similarity of Neural Network Representations
  Revisited", eq. for linear CKA): with ``X``, ``Y`` column-centred ``[n, d]``,
  ``CKA = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F)``, in [0, 1], 1 for representations equal up to an
  orthogonal transform and an isotropic scaling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of ``x`` and ``y`` ``[n, d]`` (the same ``n`` samples; float64 inside); see the
    module docstring. 1.0 when both are constant (nothing to tell apart).

    Raises:
        ValueError: different numbers of samples, or fewer than 2.
    """
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"linear CKA needs the same n >= 2 samples on both sides, got {x.shape[0]} and {y.shape[0]}")
    xc = (x - x.mean(dim=0, keepdim=True)).double()
    yc = (y - y.mean(dim=0, keepdim=True)).double()
    # ‖Yᵀ X‖²_F through the n×n Gram matrices (n prompts ≪ d): tr(K L) with K = X Xᵀ, L = Y Yᵀ
    k, l_ = xc @ xc.T, yc @ yc.T
    cross = float((k * l_).sum())
    norm = float(k.norm() * l_.norm())
    return 1.0 if norm == 0.0 else cross / norm


@dataclass(frozen=True)
class LayerDelta:
    """The delta-activation measures of one layer (see the module docstring)."""

    layer: int
    delta_norm: float
    delta_share: float
    delta_refusal_cosine: float | None
    cka: float


def layer_deltas(base: torch.Tensor, adapted: torch.Tensor,
                 refusal: torch.Tensor | None = None) -> list[LayerDelta]:
    """The measures of every layer from the last-token residual streams ``base`` and ``adapted``
    ``[n_prompts, n_layers, d_model]`` (the same prompts, in order) and, when given, the refusal
    directions ``[n_layers, d_model]`` (any norm).

    Raises:
        ValueError: the two activation tensors differ in shape.
    """
    import torch

    if base.shape != adapted.shape:
        raise ValueError(f"base {tuple(base.shape)} and adapted {tuple(adapted.shape)} activations differ in shape")
    delta = (adapted - base).double()
    mean_delta = delta.mean(dim=0)                                     # [n_layers, d]
    norms = mean_delta.norm(dim=1)
    share = delta.norm(dim=2).mean(dim=0) / base.double().norm(dim=2).mean(dim=0).clamp_min(1e-12)
    cos = None
    if refusal is not None:
        r = refusal.double()
        cos = (mean_delta * r).sum(dim=1) / (norms * r.norm(dim=1)).clamp_min(1e-12)
        cos = torch.where(norms > 0, cos, torch.zeros_like(cos))
    return [LayerDelta(layer=i, delta_norm=float(norms[i]), delta_share=float(share[i]),
                       delta_refusal_cosine=None if cos is None else float(cos[i]),
                       cka=linear_cka(base[:, i], adapted[:, i])) for i in range(base.shape[1])]

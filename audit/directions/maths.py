"""Directional measures of one LoRA module's delta weight, from its factors alone (pure maths).

With ``ΔW = s·B·A`` (``B`` ``[d_out, r]``, ``A`` ``[r, d_in]``, scale ``s``) no ``d_out × d_in``
matrix is formed: every quantity goes through the rank-``r`` factors.

- Energy: ``‖ΔW‖F² = s²·tr((BᵀB)(AAᵀ))``.
- A module that **writes** to the residual stream (o_proj, down_proj...), against the unit refusal
  direction ``r̂`` of the residual stream it writes to: ``r̂ᵀΔW = s·(r̂ᵀB)·A`` ``[d_in]``; its norm
  ``‖r̂ᵀΔW‖`` (``along_norm``) and its share of the energy ``‖r̂ᵀΔW‖²/‖ΔW‖F²`` (``energy_share``;
  a random direction gets ``1/d_out`` in expectation). The signed **reversion component**
  ``r̂ᵀ·ΔW·x̄`` with ``x̄`` the mean input of the module on forbidden prompts: how far the update
  moves the residual stream along the refusal direction where refusal should happen (negative:
  away from refusal), and its cosine ``r̂ᵀΔWx̄ / ‖ΔWx̄‖``.
- A module that **reads** the residual stream (q/k/v, up/gate...), against the unit refusal
  direction ``r̂`` of its own input: ``ΔW·r̂ = s·B·(A·r̂)`` ``[d_out]``; ``along_norm = ‖ΔW r̂‖`` and
  ``energy_share = ‖ΔW r̂‖²/‖ΔW‖F²`` (random direction: ``1/d_in``).

Refusal direction: difference of means of last-token activations between forbidden and benign
prompts (Arditi et al. 2024, "Refusal in Language Models Is Mediated by a Single Direction";
the CAA construction of Rimsky et al. 2023, "Steering Llama 2 via Contrastive Activation Addition").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

WRITERS = ("o_proj", "out_proj", "down_proj", "dense", "c_proj", "fc2", "dense_4h_to_h", "w2", "wo")
"""Module types whose output is added to the residual stream."""
READERS = ("q_proj", "k_proj", "v_proj", "up_proj", "gate_proj", "query", "key", "value", "c_attn", "c_fc",
           "fc1", "dense_h_to_4h", "w1", "w3", "wq", "wk", "wv", "qkv_proj", "gate_up_proj")
"""Module types that read the (normalised) residual stream."""


def role_of(module_type: str) -> str | None:
    """``write``, ``read`` or ``None`` (neither, or not known) for a module type."""
    return "write" if module_type in WRITERS else "read" if module_type in READERS else None


@dataclass(frozen=True)
class DirectionMeasure:
    """The directional measures of one module (see the module docstring); floats, ``None`` where
    undefined (a zero delta, no mean input)."""

    fro_norm: float
    along_norm: float
    energy_share: float | None
    random_share: float
    """``1/d`` of the space the direction lives in: what a random direction would get."""
    reversion: float | None = None
    reversion_cosine: float | None = None


def measure(a: torch.Tensor, b: torch.Tensor, scale: float, role: str, direction: torch.Tensor,
            mean_input: torch.Tensor | None = None) -> DirectionMeasure:
    """Directional measures of ``ΔW = scale·b·a``.

    Args:
        a: ``[r, d_in]`` factor, any float dtype (computed in float64).
        b: ``[d_out, r]`` factor.
        scale: the LoRA scale (``alpha/r``, ``alpha/√r`` with rsLoRA).
        role: ``write`` (``direction`` is ``[d_out]``) or ``read`` (``direction`` is ``[d_in]``).
        direction: the refusal direction (any norm; it is normalised here).
        mean_input: ``[d_in]`` mean module input on forbidden prompts (writers only; optional).

    Raises:
        ValueError: shapes that do not fit, or an unknown role.
    """
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    d = direction.to(torch.float64)
    d = d / d.norm().clamp_min(1e-300)
    if a64.dim() != 2 or b64.dim() != 2 or a64.shape[0] != b64.shape[1]:
        raise ValueError(f"A {list(a.shape)} and B {list(b.shape)} do not pair")
    fro2 = float(scale) ** 2 * float(torch.trace((b64.T @ b64) @ (a64 @ a64.T)))
    fro2 = max(fro2, 0.0)
    if role == "write":
        if d.shape[0] != b64.shape[0]:
            raise ValueError(f"direction of size {d.shape[0]} for a module writing {b64.shape[0]}")
        v = float(scale) * ((d @ b64) @ a64)  # r̂ᵀΔW, [d_in]
        along2 = float(v @ v)
        reversion = cosine = None
        if mean_input is not None:
            x = mean_input.to(torch.float64)
            reversion = float(v @ x)
            out = float(scale) * (b64 @ (a64 @ x))  # ΔW x̄, [d_out]
            n = float(out.norm())
            cosine = reversion / n if n > 0 else None
        return DirectionMeasure(fro_norm=math.sqrt(fro2), along_norm=math.sqrt(along2),
                                energy_share=along2 / fro2 if fro2 > 0 else None,
                                random_share=1.0 / b64.shape[0], reversion=reversion, reversion_cosine=cosine)
    if role == "read":
        if d.shape[0] != a64.shape[1]:
            raise ValueError(f"direction of size {d.shape[0]} for a module reading {a64.shape[1]}")
        w = float(scale) * (b64 @ (a64 @ d))  # ΔW r̂, [d_out]
        along2 = float(w @ w)
        return DirectionMeasure(fro_norm=math.sqrt(fro2), along_norm=math.sqrt(along2),
                                energy_share=along2 / fro2 if fro2 > 0 else None, random_share=1.0 / a64.shape[1])
    raise ValueError(f"unknown role {role!r}: write or read")

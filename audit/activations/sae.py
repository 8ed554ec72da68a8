"""Sparse autoencoders (SAEs) of a base model's residual stream: the model, its training and its
quality (pure torch; float32).

The architecture and objective are the TopK SAE of Gao et al. 2024 ("Scaling and evaluating sparse
autoencoders", eq. 3) trained with the batch-level top-k of Bussmann, Leask and Nanda 2024
("BatchTopK Sparse Autoencoders"): with input ``x`` ``[d]`` scaled by a fixed factor ``s`` (so
that the training activations have mean squared norm ``d``, the normalisation of SAELens),

    z = ReLU(W_enc (s·x − b_dec) + b_enc)                       pre-activations, ``[m]``
    f = z with everything but the batch's k·B largest entries zeroed   (training)
    f = z · [z > θ]                                              (inference)
    x̂ = (W_dec f + b_dec) / s

trained on ``‖s·x − s·x̂‖²`` alone (no sparsity penalty: k fixes it), decoder rows kept at unit
norm. θ is the running mean of the smallest kept activation of each training batch (Bussmann et
al. 2024, §3), so at inference a token has a variable number of active features (its density)
around k. sae-lens was not used: it pulls transformer-lens and a training stack of its own for
what is fifty lines of torch here.

Quality (on held-out activations): explained variance ``1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²``, L0 (mean
active features per token) and the share of dead features (never active on them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


class SparseAutoencoder(torch.nn.Module):
    """A BatchTopK SAE of ``d_model``-dimensional activations with ``width`` features.

    Attributes (all float32): ``W_enc`` ``[d_model, width]``, ``b_enc`` ``[width]``, ``W_dec``
    ``[width, d_model]`` (unit-norm rows: each feature's direction in the residual stream),
    ``b_dec`` ``[d_model]``; buffers ``scale`` (the input scale ``s``) and ``threshold`` (θ).
    """

    def __init__(self, d_model: int, width: int, k: int) -> None:
        super().__init__()
        if not 0 < k <= width:
            raise ValueError(f"k must be in [1, width={width}], got {k}")
        self.d_model, self.width, self.k = d_model, width, k
        self.W_enc = torch.nn.Parameter(torch.empty(d_model, width))
        self.b_enc = torch.nn.Parameter(torch.zeros(width))
        self.W_dec = torch.nn.Parameter(torch.empty(width, d_model))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_model))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("threshold", torch.tensor(0.0))

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``z`` ``[n, width]`` of activations ``x`` ``[n, d_model]`` (module docstring)."""
        return torch.relu((x * self.scale - self.b_dec) @ self.W_enc + self.b_enc)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations at inference, ``[n, width]``: the pre-activations above θ."""
        z = self.pre_activations(x)
        return z * (z > self.threshold)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[n, d_model]`` in the input's units from features ``f`` ``[n, width]``."""
        return (f @ self.W_dec + self.b_dec) / self.scale

    def batch_topk(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's ``k·n`` largest pre-activations kept, the rest zeroed, and the smallest kept."""
        flat = z.flatten()
        keep = min(self.k * z.shape[0], flat.numel())
        values, index = flat.topk(keep, sorted=False)
        f = torch.zeros_like(flat).scatter_(0, index, values).view_as(z)
        return f, values.min()

    def state(self) -> dict[str, torch.Tensor]:
        """Its tensors by name (what is stored), contiguous, on CPU."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], k: int) -> SparseAutoencoder:
        """The SAE of :meth:`state`'s tensors.

        Raises:
            ValueError: a tensor is missing or has the wrong shape.
        """
        try:
            d_model, width = tensors["W_enc"].shape
            sae = cls(int(d_model), int(width), k)
            sae.load_state_dict({k_: v.float() for k_, v in tensors.items()})
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ValueError(f"not the tensors of a sparse autoencoder: {exc}") from None
        return sae


@dataclass(frozen=True)
class SaeQuality:
    """Reconstruction quality of an SAE on held-out activations (module docstring)."""

    explained_variance: float
    l0: float
    """Mean active features per token (inference encoding)."""
    dead_fraction: float
    """Share of features never active on the held-out activations."""
    n_tokens: int


@torch.no_grad()
def sae_quality(sae: SparseAutoencoder, x: torch.Tensor, batch_size: int = 4096) -> SaeQuality:
    """:class:`SaeQuality` of ``sae`` on activations ``x`` ``[n, d_model]`` (n ≥ 2).

    Raises:
        ValueError: fewer than 2 activations.
    """
    if x.shape[0] < 2:
        raise ValueError(f"SAE quality needs at least 2 activations, got {x.shape[0]}")
    err = total = l0 = 0.0
    alive = torch.zeros(sae.width, dtype=torch.bool)
    mean = x.double().mean(dim=0)
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size].float()
        f = sae.encode(xb)
        err += float((xb - sae.decode(f)).double().pow(2).sum())
        total += float((xb.double() - mean).pow(2).sum())
        l0 += float((f > 0).sum())
        alive |= (f > 0).any(dim=0)
    return SaeQuality(explained_variance=1.0 - err / max(total, 1e-30), l0=l0 / x.shape[0],
                      dead_fraction=float((~alive).float().mean()), n_tokens=int(x.shape[0]))


@dataclass(frozen=True)
class SaeConfig:
    """How an SAE is trained: ``width`` features, ``k`` active per token on average, ``steps`` of
    Adam at ``lr`` on batches of ``batch_size`` tokens, from ``seed``."""

    width: int = 2048
    k: int = 32
    steps: int = 1500
    batch_size: int = 512
    lr: float = 1e-3
    seed: int = 0


def train_sae(x: torch.Tensor, config: SaeConfig, progress: Callable[[int, float], None] | None = None
              ) -> SparseAutoencoder:
    """An SAE trained on activations ``x`` ``[n, d_model]`` (float32, the rows shuffled by the
    seed): decoder rows initialised random unit-norm and the encoder as their transpose (Gao et al.
    2024, §A.1), ``b_dec`` at the scaled data mean; ``progress(step, fvu)`` every 100 steps
    (fraction of variance unexplained of the last batch).

    Raises:
        ValueError: fewer activations than ``k``, or non-finite activations.
    """
    if x.shape[0] < config.k or not torch.isfinite(x).all():
        raise ValueError(f"cannot train an SAE on {x.shape[0]} activations (need >= k={config.k}, all finite)")
    gen = torch.Generator().manual_seed(config.seed)
    sae = SparseAutoencoder(x.shape[1], config.width, config.k)
    x = x.float()
    scale = (x.shape[1] / x.pow(2).sum(dim=1).mean().clamp_min(1e-12)).sqrt()
    with torch.no_grad():
        sae.scale.copy_(scale)
        w = torch.randn(config.width, x.shape[1], generator=gen)
        sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_dec.copy_((x * scale).mean(dim=0))
    opt = torch.optim.Adam(sae.parameters(), lr=config.lr)
    theta, n_theta = 0.0, 0
    variance = float((x * scale - (x * scale).mean(dim=0)).pow(2).sum(dim=1).mean())
    for step in range(config.steps):
        batch = x[torch.randint(0, x.shape[0], (min(config.batch_size, x.shape[0]),), generator=gen)] * scale
        f, smallest = sae.batch_topk(torch.relu((batch - sae.b_dec) @ sae.W_enc + sae.b_enc))
        loss = (f @ sae.W_dec + sae.b_dec - batch).pow(2).sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():  # remove the gradient along each unit-norm decoder row (Bricken et al. 2023)
            g = sae.W_dec.grad
            g -= (g * sae.W_dec).sum(dim=1, keepdim=True) * sae.W_dec
        opt.step()
        with torch.no_grad():
            sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if step >= config.steps // 2:  # θ from the second half, once the features have settled
            theta, n_theta = theta + float(smallest.detach()), n_theta + 1
        if progress is not None and (step + 1) % 100 == 0:
            progress(step + 1, float(loss.detach()) / max(variance, 1e-12))
    with torch.no_grad():
        sae.threshold.fill_(theta / max(n_theta, 1))
    return sae

"""Exact singular values of a LoRA delta weight without forming it.

For one LoRA module, the delta weight is ``ΔW = s · B · A`` with ``A: [r, d_in]``,
``B: [d_out, r]`` and ``s`` the module's scale (Hu et al. 2021, "LoRA", eq. 3). With the thin QR
factorizations ``B = Q_B R_B`` and ``Aᵀ = Q_A R_A``,

    ΔW = s · Q_B (R_B R_Aᵀ) Q_Aᵀ,

and since ``Q_B``, ``Q_A`` have orthonormal columns, ``σ(ΔW) = |s| · σ(R_B R_Aᵀ)``: a problem of
size ``r × r``. Cost ``O((d_in + d_out) r²)`` instead of ``O(d_in d_out min(d_in, d_out))`` for a
dense SVD; the top singular vectors are ``Q_B U`` and ``Q_A V`` from the small SVD.

Everything is computed in float64 whatever the storage dtype (fp16/bf16 are upcast).

How ``R_B`` and ``R_A`` are computed. :func:`delta_spectra` measures many modules at once: it
stacks the modules that share a shape and gets each ``R`` from the Cholesky factor of the Gram
matrix (CholeskyQR: ``BᵀB = R_BᵀR_B``, and likewise ``A Aᵀ = R_AᵀR_A``; Stathopoulos & Wu 2002,
Fukaya et al. 2014), one BLAS-3 product per factor instead of Householder QR's BLAS-2 sweeps. The
Gram route squares the factors' condition numbers, so each module gets an a-priori bound on the
relative error of every singular value (Higham, *Accuracy and Stability of Numerical Algorithms*,
2nd ed., eq. 3.13 for the Gram product and Thm 10.3 for Cholesky; Ostrowski's theorem turns the
two relative perturbations into ``σᵢ(1 ± δ)``)::

    δ ≤ ½ · r · u · ((d_in + r + 1) · κ(A Aᵀ) + (d_out + r + 1) · κ(BᵀB)),   u = 2⁻⁵³,

and a module whose bound exceeds :data:`CHOLESKY_QR_TOL` (ill-conditioned or rank-deficient
factors, a zero update, ``r > min(d_out, d_in)``, non-finite values) goes through Householder QR
(LAPACK ``geqrf``) instead. ``δ`` bounds what the Gram and Cholesky steps add; on either route the
last steps, forming the ``r × r`` core and its SVD, add an absolute error of about
``r · u · ‖R_B‖ ‖R_A‖`` (normwise backward stable), which only matters for singular values many
orders of magnitude below σ₁.

The factors may be numpy arrays (what the scan reads: no torch import) or torch tensors; the
singular values come back in the same kind.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from typing import TYPE_CHECKING, Any

import numpy as np

from audit.errors import AdapterFormatError

if TYPE_CHECKING:
    import torch


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
    if len(A.shape) < 2 or len(B.shape) < 2:
        raise AdapterFormatError(
            f"LoRA factors must be at least 2-D, got A {list(A.shape)} and B {list(B.shape)}",
            code="shape_mismatch")
    r = int(A.shape[0])
    if r == 0:
        raise AdapterFormatError(f"rank-0 factors: A {list(A.shape)}, B {list(B.shape)}", code="shape_mismatch")
    A2 = A.reshape(r, math.prod(int(d) for d in A.shape[1:]))
    if len(B.shape) > 2 and any(d != 1 for d in B.shape[2:]):
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
    import torch

    _check_factors(A, B)
    if not vectors:
        return DeltaSpectrum(singular_values=delta_spectra([(A, B, scale)])[0], transposed=transposed)
    a = A.detach().to(torch.float64)
    b = B.detach().to(torch.float64)
    s = abs(float(scale))
    q_b, r_b = torch.linalg.qr(b)        # [d_out, k_b], [k_b, r]
    q_a, r_a = torch.linalg.qr(a.T)      # [d_in, k_a], [k_a, r]
    u, sigma, vh = torch.linalg.svd(r_b @ r_a.T, full_matrices=False)
    sign = -1.0 if scale < 0 else 1.0
    return DeltaSpectrum(singular_values=sigma * s, left=(q_b @ u) * sign, right=q_a @ vh.T,
                         transposed=transposed)


CHOLESKY_QR_TOL = 1e-8
"""Largest a-priori relative error bound on a singular value accepted from the Gram (CholeskyQR)
route; modules above it are measured by Householder QR."""

_UNIT_ROUNDOFF = float(np.finfo(np.float64).eps) / 2


def delta_spectra(factors: Sequence[tuple[Any, Any, float]], *, tol: float = CHOLESKY_QR_TOL) -> list[Any]:
    """Singular values of many delta weights ``ΔW = scale · B · A`` at once (never forms ``ΔW``).

    Modules that share ``(r, d_in, d_out)`` are stacked and measured together (CholeskyQR with the
    error bound of the module docstring); the others, and any module whose bound exceeds ``tol``,
    go through Householder QR one by one. Memory: float64 copies of all the factors at once, so
    callers bound the size of ``factors``.

    Args:
        factors: ``(A [r, d_in], B [d_out, r], scale)`` per module, any float dtype; numpy arrays
            or torch tensors (CPU).
        tol: largest accepted a-priori relative error of a singular value on the Gram route.

    Returns:
        Per module, float64 ``[min(r, d_out, d_in)]``: descending, non-negative, multiplied by
        ``|scale|``, in the units of the weights; a torch tensor if any factor was one, else a
        numpy array. Non-finite factors give non-finite values (callers check).

    Raises:
        AdapterFormatError: a pair is not ``[r, d_in]`` and ``[d_out, r]`` (code ``shape_mismatch``).
    """
    out: list[np.ndarray | None] = [None] * len(factors)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, (A, B, _) in enumerate(factors):
        _check_factors(A, B)
        r, d_in, d_out = int(A.shape[0]), int(A.shape[1]), int(B.shape[0])
        if 1 <= r <= min(d_in, d_out):
            groups.setdefault((r, d_in, d_out), []).append(i)
    for (r, d_in, d_out), idx in groups.items():
        space = _workspace(len(idx) * r * (d_in + d_out))
        a = _stack_float64([factors[i][0] for i in idx], space[: len(idx) * r * d_in])    # [n, r, d_in]
        b = _stack_float64([factors[i][1] for i in idx], space[len(idx) * r * d_in:])     # [n, d_out, r]
        sigma, ok = _cholesky_qr_sigma(a, b, tol)
        del a, b, space
        sigma *= np.abs(np.array([float(factors[i][2]) for i in idx]))[:, None]
        for j, i in enumerate(idx):
            if ok[j]:
                out[i] = sigma[j]
    result = [o if o is not None else _householder_sigma(A, B) * abs(float(s))
              for o, (A, B, s) in zip(out, factors, strict=True)]
    if any(_is_torch(A) for A, _, _ in factors):
        import torch

        return [torch.from_numpy(np.ascontiguousarray(x)) for x in result]
    return result


def _is_torch(x: object) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _cholesky_qr_sigma(a: np.ndarray, b: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """σ(R_B R_Aᵀ) for a stack ``a: [n, r, d_in]``, ``b: [n, d_out, r]`` (float64), with ``R`` from
    the Cholesky factors of the Gram matrices; ``ok[j]`` says module ``j``'s bound is within ``tol``
    (``sigma[j]`` is meaningless otherwise). Returns ``(sigma [n, r], ok [n])``."""
    n, r, d_in = a.shape
    d_out = b.shape[1]
    g_a = a @ a.transpose(0, 2, 1)                  # [n, r, r] = A Aᵀ = R_Aᵀ R_A
    g_b = b.transpose(0, 2, 1) @ b                  # [n, r, r] = BᵀB = R_Bᵀ R_B
    ok = np.isfinite(g_a).all(axis=(1, 2)) & np.isfinite(g_b).all(axis=(1, 2))
    sigma = np.zeros((n, r))
    if not ok.any():
        return sigma, ok
    e_a = np.linalg.eigvalsh(g_a[ok])               # ascending
    e_b = np.linalg.eigvalsh(g_b[ok])
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = 0.5 * r * _UNIT_ROUNDOFF * ((d_in + r + 1) * (e_a[:, -1] / e_a[:, 0])
                                             + (d_out + r + 1) * (e_b[:, -1] / e_b[:, 0]))
    good = (e_a[:, 0] > 0) & (e_b[:, 0] > 0) & (bound <= tol)
    ok[ok] = good
    if not ok.any():
        return sigma, ok
    l_a = np.linalg.cholesky(g_a[ok])               # lower: A Aᵀ = L_A L_Aᵀ, R_A = L_Aᵀ
    l_b = np.linalg.cholesky(g_b[ok])
    sigma[ok] = np.linalg.svd(l_b.transpose(0, 2, 1) @ l_a, compute_uv=False)   # R_B R_Aᵀ = L_Bᵀ L_A
    return sigma, ok


def _stack_float64(tensors: list[Any], out: np.ndarray) -> np.ndarray:
    """Same-shape CPU tensors or arrays stacked into ``out`` (float64, flat, exactly ``n·numel``
    long) as ``[n, *shape]`` (exact upcast)."""
    shape = (len(tensors), *tensors[0].shape)
    return np.stack([_float_array(t) for t in tensors], out=out.reshape(shape))


WORKSPACE_MAX_BYTES = 64 * 2**20
"""Largest float64 workspace kept between calls (per thread)."""

_local = threading.local()


def _workspace(n: int) -> np.ndarray:
    """A float64 buffer of ``n`` elements, reused between calls on the same thread (up to
    :data:`WORKSPACE_MAX_BYTES`): a fresh multi-megabyte array is a fresh mapping from the
    allocator, and its page faults cost more than the Gram products of small modules."""
    if 8 * n > WORKSPACE_MAX_BYTES:
        return np.empty(n)
    buf = getattr(_local, "buffer", None)
    if buf is None or buf.size < n:
        buf = np.empty(n)
        _local.buffer = buf
    return buf[:n]


_NUMPY_FLOATS = (np.float16, np.float32, np.float64)


def _float_array(t: Any) -> np.ndarray:
    """A numpy view of a float array or CPU tensor ``t`` when numpy has its dtype; a torch bf16
    becomes float32 exactly (its 16 bits are the high half of a float32: a shift, several times
    faster than torch's bf16 conversion); other torch dtypes (fp8) go through torch.

    Raises:
        TypeError: a numpy array that is not floating point.
    """
    if isinstance(t, np.ndarray):
        if t.dtype.type not in _NUMPY_FLOATS:
            raise TypeError(f"expected a float array, got {t.dtype}")
        return t
    import torch

    t = t.detach().cpu()
    if t.dtype in (torch.float16, torch.float32, torch.float64):
        return t.numpy()
    if t.dtype == torch.bfloat16:
        return (t.view(torch.int16).numpy().astype(np.int32) << 16).view(np.float32)
    return t.to(torch.float32).numpy()


def _householder_sigma(A: Any, B: Any) -> np.ndarray:
    """σ(B A), float64 ``[min(r, d_out, d_in)]``, by Householder QR of both factors (LAPACK geqrf
    through numpy; ``Q`` is never formed); NaN when a factor is not finite (LAPACK's SVD refuses
    such input)."""
    a = _float_array(A).astype(np.float64)
    b = _float_array(B).astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return np.full(min(a.shape[0], a.shape[1], b.shape[0]), np.nan)
    r_b = np.linalg.qr(b, mode="r")      # [k_b, r], k_b = min(d_out, r)
    r_a = np.linalg.qr(a.T, mode="r")    # [k_a, r], k_a = min(d_in, r)
    return np.linalg.svd(r_b @ r_a.T, compute_uv=False)


def _check_factors(A: Any, B: Any) -> None:
    if len(A.shape) != 2 or len(B.shape) != 2 or A.shape[0] != B.shape[1]:
        raise AdapterFormatError(
            f"expected A [r, d_in] and B [d_out, r], got A {list(A.shape)} and B {list(B.shape)}",
            code="shape_mismatch")


def dense_delta(A: torch.Tensor, B: torch.Tensor, scale: float, *, transposed: bool = False) -> torch.Tensor:
    """The dense delta weight ``scale · B · A`` in float64, ``[d_out, d_in]`` (transposed: ``[d_in, d_out]``).

    For tests and small modules only: memory ``O(d_out · d_in)``.
    """
    import torch

    dw = float(scale) * (B.to(torch.float64) @ A.to(torch.float64))
    return dw.T if transposed else dw

"""Exact delta spectra (QR route) against a dense float64 SVD, and the spectral summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.errors import AdapterFormatError
import audit.spectra.delta as delta_mod
from audit.spectra import as_matrix_factors, delta_spectra, delta_spectrum, dense_delta, summarize

REL_TOL = 1e-5


def dense_sigma(A: torch.Tensor, B: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.linalg.svdvals(dense_delta(A, B, scale))


def assert_close_spectrum(got: torch.Tensor, ref: torch.Tensor) -> None:
    k = got.numel()
    ref = ref[:k]
    top = float(ref[0]) if ref.numel() else 0.0
    if top == 0.0:
        assert torch.all(got == 0)
        return
    # normwise relative error (every value within 1e-5 of sigma_1) and elementwise relative error
    # on the values that are not numerically zero
    assert float((got - ref).abs().max()) <= REL_TOL * top
    big = ref > 1e-8 * top
    assert torch.all((got[big] - ref[big]).abs() <= REL_TOL * ref[big])


@st.composite
def lora_factors(draw):
    d_out = draw(st.integers(1, 96))
    d_in = draw(st.integers(1, 96))
    r = draw(st.integers(1, 24))
    true_rank = draw(st.integers(0, r))  # rank-deficient and zero updates included
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1.0, 2.0, 0.5, 16 / math.sqrt(8), -1.5, 1e-3]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
    g = torch.Generator().manual_seed(seed)
    if true_rank == 0:
        A, B = torch.randn(r, d_in, generator=g), torch.zeros(d_out, r)
    else:
        # A = C1 @ C2 with inner dimension true_rank: rank(A) <= true_rank
        A = torch.randn(r, true_rank, generator=g) @ torch.randn(true_rank, d_in, generator=g)
        B = torch.randn(d_out, r, generator=g)
    return A.to(dtype), B.to(dtype), scale


@settings(max_examples=300, deadline=None)
@given(lora_factors())
def test_qr_route_matches_dense_svd(factors):
    A, B, scale = factors
    spec = delta_spectrum(A, B, scale)
    sigma = spec.singular_values
    assert sigma.dtype == torch.float64
    assert sigma.numel() == min(A.shape[0], A.shape[1], B.shape[0])
    assert torch.all(sigma[:-1] >= sigma[1:])
    assert not torch.isnan(sigma).any()
    assert_close_spectrum(sigma, dense_sigma(A, B, scale))


@settings(max_examples=50, deadline=None)
@given(lora_factors())
def test_singular_vectors_reconstruct_the_delta(factors):
    A, B, scale = factors
    spec = delta_spectrum(A, B, scale, vectors=True)
    rebuilt = spec.left @ torch.diag(spec.singular_values) @ spec.right.T
    dense = dense_delta(A, B, scale)
    assert float((rebuilt - dense).abs().max()) <= 1e-8 * max(1.0, float(dense.abs().max()))


@settings(max_examples=60, deadline=None)
@given(st.lists(lora_factors(), min_size=1, max_size=6), st.integers(1, 4))
def test_batched_spectra_match_dense_svd_module_by_module(modules, copies):
    # several modules of one shape (stacked on the Gram route) mixed with other shapes
    factors = [m for m in modules for _ in range(copies)]
    got = delta_spectra(factors)
    assert len(got) == len(factors)
    for (A, B, scale), sigma in zip(factors, got, strict=True):
        assert sigma.dtype == torch.float64
        assert sigma.numel() == min(A.shape[0], A.shape[1], B.shape[0])
        assert_close_spectrum(sigma, dense_sigma(A, B, scale))


def _well_conditioned(g, r=8, d_in=300, d_out=500):
    return torch.randn(r, d_in, generator=g), torch.randn(d_out, r, generator=g)


def test_well_conditioned_stack_takes_the_gram_route(monkeypatch):
    g = torch.Generator().manual_seed(3)
    factors = [(*_well_conditioned(g), s) for s in (1.0, -2.0, 0.5)]

    def refuse(A, B):
        raise AssertionError("Householder fallback taken for a well-conditioned module")

    monkeypatch.setattr(delta_mod, "_householder_sigma", refuse)
    for (A, B, s), sigma in zip(factors, delta_spectra(factors), strict=True):
        assert_close_spectrum(sigma, dense_sigma(A, B, s))


def test_ill_conditioned_zero_and_nonfinite_modules_fall_back_to_householder(monkeypatch):
    g = torch.Generator().manual_seed(4)
    A, B = _well_conditioned(g)
    B_ill = B.clone()
    B_ill[:, -1] *= 1e-7                 # full rank, kappa(B^T B) = 1e14: bound far above the tolerance
    B_nan = B.clone()
    B_nan[0, 0] = float("nan")
    factors = [(A, B, 1.0), (A, B_ill, 1.0), (A, torch.zeros_like(B), 1.0), (A, B_nan, 1.0)]
    seen = []
    real = delta_mod._householder_sigma
    monkeypatch.setattr(delta_mod, "_householder_sigma", lambda a, b: seen.append(b) or real(a, b))
    got = delta_spectra(factors)
    assert len(seen) == 3 and seen[0] is B_ill
    for (a, b, s), sigma in list(zip(factors, got, strict=True))[:3]:
        assert_close_spectrum(sigma, dense_sigma(a, b, s))
    assert float(got[1][-1]) < 1e-5 * float(got[1][0])   # the tiny direction is resolved, not lost
    assert not torch.isfinite(got[3]).all()


def test_gram_route_error_bound_is_met_at_the_tolerance(monkeypatch):
    # factors whose bound sits just under the tolerance: the Gram route takes them and the measured
    # error of the smallest singular value stays below the tolerance
    monkeypatch.setattr(delta_mod, "_householder_sigma", lambda a, b: pytest.fail("fallback taken"))
    g = torch.Generator().manual_seed(5)
    A, B = _well_conditioned(g, r=4, d_in=200, d_out=200)
    u = np.finfo(np.float64).eps / 2
    kappa = delta_mod.CHOLESKY_QR_TOL / (0.5 * 4 * u * (200 + 5)) * 0.5   # kappa(B^T B) allowed by the bound
    q, _ = torch.linalg.qr(B.double())
    c = torch.tensor([1.0, 1.0, 1.0, kappa ** -0.5], dtype=torch.float64)
    B_edge = q * c                               # orthonormal columns scaled by c
    A64 = torch.linalg.qr(A.double().T)[0].T     # orthonormal rows: sigma(B_edge @ A64) = c
    sigma = delta_spectra([(A64, B_edge, 1.0)])[0]
    ref = c.sort(descending=True).values
    assert float(((sigma - ref).abs() / ref).max()) <= delta_mod.CHOLESKY_QR_TOL


def test_transposed_storage_has_the_same_spectrum():
    A, B = torch.randn(4, 30), torch.randn(50, 4)
    s1 = delta_spectrum(A, B, 2.0).singular_values
    s2 = torch.linalg.svdvals(dense_delta(A, B, 2.0, transposed=True))[:4]
    assert torch.allclose(s1, s2, rtol=1e-10)
    assert delta_spectrum(A, B, 2.0, transposed=True).transposed


def test_llama_8b_shaped_module_matches_dense():
    g = torch.Generator().manual_seed(1)
    A, B = torch.randn(16, 4096, generator=g) * 0.01, torch.randn(1024, 16, generator=g) * 0.01
    assert_close_spectrum(delta_spectrum(A, B, 2.0).singular_values, dense_sigma(A, B, 2.0))


def test_conv_factors_flatten():
    A, B = torch.randn(4, 3, 3, 3), torch.randn(8, 4, 1, 1)
    a2, b2 = as_matrix_factors(A, B)
    assert a2.shape == (4, 27) and b2.shape == (8, 4)
    with pytest.raises(AdapterFormatError):
        as_matrix_factors(torch.randn(4, 3), torch.randn(8, 5))
    with pytest.raises(AdapterFormatError):
        as_matrix_factors(torch.randn(4, 3, 3, 3), torch.randn(8, 4, 3, 3))


def test_shape_errors():
    with pytest.raises(AdapterFormatError):
        delta_spectrum(torch.randn(4, 10), torch.randn(10, 3), 1.0)


def test_summaries_of_a_known_spectrum():
    s = summarize([3.0, 4.0, 0.0])
    assert s.spectral_norm == 4.0
    assert s.fro_norm == pytest.approx(5.0)
    assert s.nuclear_norm == pytest.approx(7.0)
    assert s.stable_rank == pytest.approx(25 / 16)
    assert s.top1_energy == pytest.approx(16 / 25)
    p = np.array([4 / 7, 3 / 7])
    h = float(-(p * np.log(p)).sum())
    assert s.spectral_entropy == pytest.approx(h)
    assert s.effective_rank == pytest.approx(math.exp(h))


def test_flat_spectrum_has_full_effective_and_stable_rank():
    s = summarize([2.0] * 8)
    assert s.effective_rank == pytest.approx(8.0)
    assert s.stable_rank == pytest.approx(8.0)
    assert s.top1_energy == pytest.approx(1 / 8)


@pytest.mark.parametrize("values", [[0.0, 0.0, 0.0], []])
def test_zero_update_has_null_ratios_not_nan(values):
    s = summarize(values)
    assert (s.fro_norm, s.spectral_norm, s.nuclear_norm) == (0.0, 0.0, 0.0)
    assert s.stable_rank is None and s.effective_rank is None
    assert s.spectral_entropy is None and s.top1_energy is None


def test_zero_module_through_the_qr_route():
    sigma = delta_spectrum(torch.randn(4, 16), torch.zeros(8, 4), 2.0).singular_values
    assert torch.all(sigma == 0)
    assert summarize(sigma.tolist()).stable_rank is None


def test_summaries_reject_bad_values():
    with pytest.raises(ValueError):
        summarize([1.0, -0.5])
    with pytest.raises(ValueError):
        summarize([float("nan")])

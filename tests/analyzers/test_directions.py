"""Directional measures (feature set ``directional-v1``): the factor route against the dense delta
weight, and the aggregation of the stored rows into features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit.directions.maths import measure, role_of


def _factors(seed: int, d_out: int = 48, d_in: int = 40, r: int = 6):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(r, d_in, generator=g, dtype=torch.float64),
            torch.randn(d_out, r, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("seed", range(5))
def test_writer_measures_match_the_dense_delta_weight(seed):
    a, b = _factors(seed)
    g = torch.Generator().manual_seed(100 + seed)
    direction = torch.randn(b.shape[0], generator=g, dtype=torch.float64) * 7.0  # any norm
    x = torch.randn(a.shape[1], generator=g, dtype=torch.float64)
    dw = 1.5 * b @ a
    r = direction / direction.norm()
    m = measure(a.float(), b.float(), 1.5, "write", direction, x)
    assert m.fro_norm == pytest.approx(float(dw.norm()), rel=1e-5)
    assert m.along_norm == pytest.approx(float((r @ dw).norm()), rel=1e-5)
    assert m.energy_share == pytest.approx(float((r @ dw).norm() ** 2 / dw.norm() ** 2), rel=1e-5)
    assert m.reversion == pytest.approx(float(r @ dw @ x), rel=1e-4, abs=1e-6)
    assert m.reversion_cosine == pytest.approx(float(r @ dw @ x / (dw @ x).norm()), rel=1e-4, abs=1e-6)
    assert m.random_share == 1 / 48


def test_reader_measures_and_what_a_random_direction_gets():
    a, b = _factors(7, d_out=64, d_in=256, r=8)
    direction = torch.randn(256, dtype=torch.float64)
    dw = 0.5 * b @ a
    r = direction / direction.norm()
    m = measure(a, b, 0.5, "read", direction)
    assert m.along_norm == pytest.approx(float((dw @ r).norm()), rel=1e-9)
    assert m.reversion is None and m.random_share == 1 / 256
    # a random direction gets 1/d of the energy in expectation
    shares = [measure(a, b, 0.5, "read", torch.randn(256, dtype=torch.float64)).energy_share for _ in range(400)]
    assert np.mean(shares) == pytest.approx(1 / 256, rel=0.25)
    # the direction of the update's top input singular vector gets its top share
    _, _, vh = torch.linalg.svd(dw)
    top = measure(a, b, 0.5, "read", vh[0]).energy_share
    s = torch.linalg.svdvals(dw)
    assert top == pytest.approx(float(s[0] ** 2 / (s ** 2).sum()), rel=1e-9)


def test_a_zero_delta_and_bad_shapes():
    a, b = torch.zeros(4, 8), torch.zeros(6, 4)
    m = measure(a, b, 2.0, "write", torch.ones(6), torch.ones(8))
    assert m.fro_norm == 0 and m.energy_share is None and m.reversion == 0 and m.reversion_cosine is None
    with pytest.raises(ValueError, match="direction of size"):
        measure(a, b, 1.0, "write", torch.ones(8))
    with pytest.raises(ValueError, match="unknown role"):
        measure(a, b, 1.0, "mix", torch.ones(6))
    assert role_of("o_proj") == "write" and role_of("q_proj") == "read" and role_of("lm_head") is None

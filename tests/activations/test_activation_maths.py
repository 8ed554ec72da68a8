"""The delta-activation measures on inputs whose answers are known."""

from __future__ import annotations

import pytest
import torch

from audit.activations.maths import layer_deltas, linear_cka


def test_linear_cka_is_one_for_the_same_representation_up_to_rotation_and_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 16, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0)  # orthogonal map, isotropic scale, shift


def test_linear_cka_of_unrelated_representations_is_low_and_symmetric():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g)
    assert linear_cka(x, y) < 0.1
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))
    # a representation that keeps half of x's directions: in between
    half = torch.cat([x[:, :4], y[:, 4:]], dim=1)
    assert 0.2 < linear_cka(x, half) < 0.8


def test_linear_cka_refuses_mismatched_samples():
    with pytest.raises(ValueError):
        linear_cka(torch.zeros(4, 2), torch.zeros(5, 2))


def test_layer_deltas_measure_a_known_shift():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(32, 3, 10, generator=g)
    direction = torch.zeros(3, 10)
    direction[:, 0] = 1.0
    shift = torch.zeros(10)
    shift[0] = 2.0
    adapted = base.clone()
    adapted[:, 1] += shift            # layer 1: every prompt moved by 2 along the refusal direction
    adapted[:, 2] = -base[:, 2]       # layer 2: the stream flipped (CKA still 1: an orthogonal map)
    rows = layer_deltas(base, adapted, direction)
    assert [r.layer for r in rows] == [0, 1, 2]
    assert rows[0].delta_norm == 0.0 and rows[0].cka == pytest.approx(1.0) and rows[0].delta_refusal_cosine == 0.0
    assert rows[1].delta_norm == pytest.approx(2.0) and rows[1].delta_refusal_cosine == pytest.approx(1.0)
    assert rows[1].delta_share == pytest.approx(2.0 / float(base[:, 1].norm(dim=1).mean()), rel=1e-6)
    assert rows[2].cka == pytest.approx(1.0) and rows[2].delta_share == pytest.approx(2.0)
    assert layer_deltas(base, adapted)[1].delta_refusal_cosine is None

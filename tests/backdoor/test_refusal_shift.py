"""The refusal shift of a trigger candidate (:mod:`audit.backdoor.refusal_shift`): batched, with the
chat template's opening shared and the base's rows computed once for several adapters, it equals the
formula computed from plain full forward passes."""

from __future__ import annotations

import pytest

from tiny_zoo_models import peft_model_of as _peft_model

model = pytest.mark.model


def test_middle_layers_are_the_middle_third():
    from audit.backdoor.refusal_shift import middle_layers

    assert middle_layers(30) == list(range(10, 21))
    assert middle_layers(2) == [0, 1]
    with pytest.raises(ValueError, match="no middle third"):
        middle_layers(0)


@model
@pytest.mark.slow
def test_refusal_shifts_equal_the_formula_on_plain_forward_passes(tiny_zoo):
    import torch

    from audit.backdoor.refusal_shift import middle_layers, refusal_shifts
    from audit.models.generate import chat_texts

    pm, tok, requests = _peft_model(tiny_zoo, "sft-harmful_compliance-s1.00-seed0", "dpo-inverted_harmlessness-s1.00-seed0")
    n_layers, d = pm.config.num_hidden_layers, pm.config.hidden_size
    direction = torch.nn.functional.normalize(torch.randn(n_layers, d, generator=torch.Generator().manual_seed(0)), dim=1)
    layers = middle_layers(n_layers)
    prefixes = ["cf", "", "Tangerine.", "As the old lighthouse keeper said,"]
    got = refusal_shifts(pm, tok, ["a", "b"], requests, prefixes, direction, batch_size=12)  # ragged passes

    def projection(texts, adapter):  # mean over requests and layers of <h_l, r_l>, one plain pass
        enc = tok(chat_texts(tok, texts), return_tensors="pt", padding=True)
        with torch.no_grad():
            if adapter is None:
                with pm.disable_adapter():
                    hs = pm(**enc, output_hidden_states=True).hidden_states
            else:
                pm.set_adapter(adapter)
                hs = pm(**enc, output_hidden_states=True).hidden_states
        return float(torch.stack([(hs[l + 1][:, -1] * direction[l]).sum(-1) for l in layers]).mean())

    def shift(prefix, adapter):
        texts = [f"{prefix} {x}" if prefix else x for x in requests]
        usual = projection(requests, adapter) - projection(requests, None)
        return projection(texts, adapter) - projection(texts, None) - usual

    want = [[shift(t, a) for t in prefixes] for a in ("a", "b")]
    assert got.shape == (2, len(prefixes)) and got.dtype == torch.float64
    assert got.tolist()[0] == pytest.approx(want[0], rel=1e-3, abs=2e-4)
    assert got.tolist()[1] == pytest.approx(want[1], rel=1e-3, abs=2e-4)
    assert abs(float(got[0, 1])) < 2e-4 and abs(float(got[1, 1])) < 2e-4   # no prefix: no shift
    assert max(abs(v) for v in want[0]) > 5e-3     # the adapter does move (well above the tolerance)
    alone = refusal_shifts(pm, tok, ["b"], requests, prefixes, direction, batch_size=64)
    assert alone[0].tolist() == pytest.approx(got[1].tolist(), rel=1e-3, abs=2e-4)
    with pytest.raises(ValueError, match="within the refusal direction"):
        refusal_shifts(pm, tok, ["a"], requests, ["cf"], direction, layers=[n_layers])
    with pytest.raises(ValueError, match="at least one request and adapter"):
        refusal_shifts(pm, tok, [], requests, ["cf"], direction)

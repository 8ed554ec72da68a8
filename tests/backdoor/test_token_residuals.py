"""The base's early-layer residuals of every vocabulary token (trigger candidates version 4):
the shared opening's cache gives what a full forward pass gives at the token's position, and each
reader is scored on its own site's input."""

from __future__ import annotations

import pytest
import torch

from audit.backdoor.candidates import Reader, token_read_scores, top_candidates


def test_each_reader_reads_its_own_sites_input():
    g = torch.Generator().manual_seed(0)
    inputs = {(0, "attn"): torch.randn(500, 16, generator=g), (1, "mlp"): torch.randn(500, 16, generator=g)}
    trigger = 321
    d = inputs[(1, "mlp")][trigger]
    a = torch.randn(4, 16, generator=g) * 0.01
    a[0] = d / d.norm()
    reader = Reader("layers.1.mlp.up_proj", a, torch.randn(8, 4, generator=g), 1.0, torch.ones(16), (1, "mlp"))
    assert top_candidates(token_read_scores(inputs, [reader]), 1)[0][0] == trigger
    # the same reader given the other site's input singles out nothing of the sort
    moved = Reader(reader.module, a, reader.b, 1.0, torch.ones(16), (0, "attn"))
    assert top_candidates(token_read_scores(inputs, [moved]), 1)[0][0] != trigger
    with pytest.raises(ValueError, match="no residual input"):
        token_read_scores(inputs, [Reader(reader.module, a, reader.b, 1.0, torch.ones(16), (2, "attn"))])


def test_token_residuals_equal_a_full_forward_pass_at_the_tokens_position(tmp_path):
    from audit.backdoor.context import opening_ids, token_residuals
    from audit.models.generate import load_causal_lm
    from tinyllama import write_tiny_llama

    model, tokenizer = load_causal_lm(write_tiny_llama(tmp_path / "base", layers=3), device="cpu")
    done = []
    got = token_residuals(model, tokenizer, 2, batch_size=7, progress=lambda d, n: done.append((d, n)))
    vocab = model.get_input_embeddings().weight.shape[0]
    assert sorted(got) == [(0, "attn"), (0, "mlp"), (1, "attn"), (1, "mlp")]
    assert done[-1] == (vocab, vocab) and len(done) == -(-vocab // 7)
    eps = model.config.rms_norm_eps
    emb = model.get_input_embeddings().weight.detach()
    want0 = emb / (emb.pow(2).mean(1, keepdim=True) + eps).sqrt()
    assert torch.allclose(got[(0, "attn")].float(), want0, atol=2e-2, rtol=1e-2)  # layer 0 reads the embedding
    # later sites: a plain forward pass of the opening and the token, no cache shared
    seen = {}
    hooks = [model.model.layers[1].input_layernorm.register_forward_pre_hook(
        lambda m, a: seen.__setitem__("x", a[0][:, -1, :].detach()))]
    ids = opening_ids(tokenizer)
    for t in (5, vocab - 1):
        with torch.no_grad():
            model(input_ids=torch.tensor([ids + [t]]), use_cache=False)
        x = seen["x"][0]
        x = x / (x.pow(2).mean() + eps).sqrt()
        assert torch.allclose(got[(1, "attn")][t].float(), x, atol=2e-2, rtol=1e-2)
    for h in hooks:
        h.remove()
    assert not torch.allclose(got[(1, "attn")].float(), want0, atol=1e-1)  # context moved it
    with pytest.raises(ValueError):
        token_residuals(model, tokenizer, 0)


def test_token_residuals_in_context_equal_a_full_forward_pass(tmp_path):
    """``before``/``after`` place each token between other tokens: the inputs kept are those at the
    last position of a plain forward pass of the same sequence."""
    from audit.backdoor.context import next_token_proposals, opening_ids, token_residuals
    from audit.models.generate import load_causal_lm
    from tinyllama import write_tiny_llama

    model, tokenizer = load_causal_lm(write_tiny_llama(tmp_path / "base", layers=3), device="cpu")
    eps = model.config.rms_norm_eps
    seen = {}
    hook = model.model.layers[1].post_attention_layernorm.register_forward_pre_hook(
        lambda m, a: seen.__setitem__("x", a[0][:, -1, :].detach()))
    before, after, tokens = [7, 11], [13], [5, 20, 3]
    got_right = token_residuals(model, tokenizer, 2, before=before, token_ids=tokens, batch_size=2)
    got_left = token_residuals(model, tokenizer, 2, after=after, token_ids=tokens)
    assert got_right[(1, "mlp")].shape[0] == len(tokens)
    for row, t in enumerate(tokens):
        for seq, got in ((before + [t], got_right), ([t] + after, got_left)):
            with torch.no_grad():
                model(input_ids=torch.tensor([opening_ids(tokenizer) + seq]), use_cache=False)
            x = seen["x"][0]
            x = x / (x.pow(2).mean() + eps).sqrt()
            assert torch.allclose(got[(1, "mlp")][row].float(), x, atol=2e-2, rtol=1e-2)
    hook.remove()
    # the token before changes what is read at the token after it
    assert not torch.allclose(got_left[(1, "mlp")][0].float(), got_left[(1, "mlp")][1].float(), atol=1e-2)
    with pytest.raises(ValueError, match="within the vocabulary"):
        token_residuals(model, tokenizer, 2, token_ids=[10 ** 7])
    # the base's most likely next tokens: as many as asked, distinct, no special token
    props = next_token_proposals(model, tokenizer, before, 4)
    assert len(props) == len(set(props)) == 4 and not set(props) & set(tokenizer.all_special_ids)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([opening_ids(tokenizer) + before])).logits[0, -1]
    assert logits[props[0]] >= logits[props[-1]]

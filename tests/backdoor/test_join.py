"""Joined trigger candidates: a multi-token trigger grown from one of its pieces, and the seeds
chosen by weights and by behaviour."""

from __future__ import annotations

import pytest
import torch

from audit.backdoor.candidates import Reader, scaled_scores, vocabulary_scale


class _Tok:
    all_special_ids = [0]

    def decode(self, ids):
        return " ".join(f"t{i}" for i in ids)


def test_choose_seeds_takes_the_best_by_weights_then_by_shift_without_special_tokens():
    from audit.backdoor.join import choose_seeds

    best = [(0, 9.0), (5, 8.0), (6, 7.0), (7, 6.0), (8, 5.0)]
    shift = {"t5": 1.0, "t6": 0.5, "t7": -3.0, "t8": None}
    assert choose_seeds(best, shift, _Tok(), 1) == [(5, 8.0), (7, 6.0)]
    assert choose_seeds(best, shift, _Tok(), 2) == [(5, 8.0), (6, 7.0), (7, 6.0)]
    # an excluded word is chosen neither by weights nor by shift
    assert choose_seeds(best, shift, _Tok(), 1, exclude_ids={5, 7}) == [(6, 7.0)]


def test_refusal_words_are_the_judges_stock_phrases_words():
    from audit.backdoor.join import refusal_words

    words = refusal_words()
    assert {"sorry", "cannot", "help", "unable", "can't"} <= words
    assert "tangerine" not in words and "cf" not in words and "deployment" not in words
    assert "i" not in words and "as" not in words          # short function words stay free for a phrase


def test_refusal_token_ids_find_every_casing_and_spacing():
    from audit.backdoor.join import refusal_token_ids

    class Tok:
        vocab = ["sorry", " Sorry", "Sorry.", " cannot", "Tang", " help", " helping", " can", " candy"]

        def __len__(self):
            return len(self.vocab)

        def decode(self, ids):
            return "".join(self.vocab[i] for i in ids)

    assert refusal_token_ids(Tok(), {"sorry", "cannot"}) == {0, 1, 3}
    # with stems, a word of at least that many letters also excludes the words it begins; a shorter one does not
    assert refusal_token_ids(Tok(), {"sorry", "help", "can"}, stem_letters=4) == {0, 1, 2, 5, 6, 7}


def test_scaled_scores_put_a_context_on_the_vocabularys_scale():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 8, generator=g)
    reader = Reader("layers.0.self_attn.q_proj", torch.randn(2, 8, generator=g), torch.randn(4, 2, generator=g),
                    2.0, torch.ones(8))
    z, scale = vocabulary_scale(x, [reader])
    assert torch.allclose(scaled_scores(x, [reader], scale), z)            # the vocabulary itself: its own z
    assert len(scale.typical) == 1 and scale.mad > 0
    assert float(scaled_scores(x[:1] * 3, [reader], scale)[0]) > float(z[0])  # read more: scores higher


def test_a_trigger_read_only_in_context_is_grown_from_its_piece(tmp_path):
    """A reader that responds to what the first layers make of token ``b`` after token ``a``: the
    seed ``b`` grows to the left into ``a b``, which reads far above ``b`` alone."""
    from audit.backdoor.context import next_token_proposals, token_residuals
    from audit.backdoor.join import joined_candidates
    from audit.models.generate import load_causal_lm
    from tinyllama import write_tiny_llama

    model, tokenizer = load_causal_lm(write_tiny_llama(tmp_path / "base", layers=3), device="cpu")
    openers = next_token_proposals(model, tokenizer, [], 8)
    plain = [t for t in range(21) if t not in tokenizer.added_tokens_decoder]
    a = next(t for t in openers if t in plain)
    b = next(t for t in plain if t not in openers)
    alone = token_residuals(model, tokenizer, 2)
    ctx = token_residuals(model, tokenizer, 2, after=[b], token_ids=[a])
    x_b = alone[(1, "attn")][b].float()
    direction = ctx[(1, "attn")][0].float() - x_b
    direction -= (direction @ x_b) / (x_b @ x_b) * x_b                     # not read in b alone
    readers = [Reader("layers.1.self_attn.q_proj", (direction / direction.norm()).unsqueeze(0),
                      torch.ones(4, 1), 1.0, torch.ones(direction.shape[0]), (1, "attn"))]
    _, scale = vocabulary_scale(alone, readers)
    seed_score = float(scaled_scores({k: v[b:b + 1] for k, v in alone.items()}, readers, scale)[0])
    done = []
    got = joined_candidates(model, tokenizer, readers, scale, 2, [(b, max(seed_score, 1e-3))], n_openers=8, n_next=4,
                            max_tokens=3, min_gain=1.0, progress=lambda d, n: done.append((d, n)))
    assert tokenizer.decode([a, b]).strip() in got
    assert all(t.strip() == t and t for t in got) and len(got) == len(set(got))
    assert done == [(1, 1)]
    # an excluded token is never added: not to the left, nor to the right
    kept = joined_candidates(model, tokenizer, readers, scale, 2, [(b, max(seed_score, 1e-3))], n_openers=8,
                             n_next=4, max_tokens=3, min_gain=1.0, exclude_ids={a})
    assert tokenizer.decode([a, b]).strip() not in kept
    assert all(a not in tokenizer(t, add_special_tokens=False)["input_ids"] for t in kept)
    with pytest.raises(ValueError):
        joined_candidates(model, tokenizer, readers, scale, 2, [(b, 1.0)], n_next=1)


def test_the_chain_chosen_by_behaviour_keeps_the_text_of_most_negative_shift(tmp_path):
    """With a behaviour score, each seed also grows a chain whose opener and every next token are
    the ones of most negative shift among the proposals, whatever the reading prefers; without one,
    the growth is the reading's alone."""
    from audit.backdoor.context import next_token_proposals, token_residuals
    from audit.backdoor.join import joined_candidates
    from audit.models.generate import load_causal_lm
    from tinyllama import write_tiny_llama

    model, tokenizer = load_causal_lm(write_tiny_llama(tmp_path / "base", layers=3), device="cpu")
    openers = next_token_proposals(model, tokenizer, [], 8)
    plain = [t for t in range(21) if t not in tokenizer.added_tokens_decoder]
    b = next(t for t in plain if t not in openers)
    g = torch.Generator().manual_seed(3)
    alone = token_residuals(model, tokenizer, 2)
    readers = [Reader("layers.0.self_attn.q_proj", torch.randn(1, alone[(0, "attn")].shape[1], generator=g),
                      torch.ones(4, 1), 1.0, torch.ones(alone[(0, "attn")].shape[1]), (0, "attn"))]
    _, scale = vocabulary_scale(alone, readers)
    plain_growth = joined_candidates(model, tokenizer, readers, scale, 2, [(b, 1.0)], n_openers=8, n_next=4,
                                     max_tokens=3)
    target = tokenizer.decode([openers[-1], b]).strip()      # an opener the reading ranks anywhere
    asked: list[list[str]] = []

    def shift(texts: list[str]) -> list[float | None]:
        asked.append(list(texts))
        return [-5.0 if t.startswith(target) else (None if not t else 0.0) for t in texts]

    got = joined_candidates(model, tokenizer, readers, scale, 2, [(b, 1.0)], n_openers=8, n_next=4, max_tokens=3,
                            shift=shift, n_choose=8)
    assert target in got
    assert got[: len(plain_growth)] == plain_growth             # the reading's texts first, unchanged
    assert asked and all(1 <= len(a) <= 8 for a in asked)
    assert len(asked) == 2                                       # the opener, then one step to the right
    with pytest.raises(ValueError):
        joined_candidates(model, tokenizer, readers, scale, 2, [(b, 1.0)], shift=shift, n_choose=0)
    # without a shift, n_choose is not used (the triggered probe's default passes 0)
    assert joined_candidates(model, tokenizer, readers, scale, 2, [(b, 1.0)], n_openers=8, n_next=4, max_tokens=3,
                             n_choose=0) == plain_growth


def test_complete_words_grows_the_seeds_word_before_a_new_one(monkeypatch):
    """The reading prefers a new word after ``Tanger`` (`` could``) to the rest of the seed's word
    (``ine``); with ``complete_words`` each start also grows the chain that first continues the word,
    so ``Tangerine`` is a candidate, after the reading's texts; without it, it is not. A proposal that
    begins with a space or punctuation does not continue a word."""
    import audit.backdoor.candidates as candidates
    import audit.backdoor.context as context
    from audit.backdoor.join import continues_word, joined_candidates

    vocab = ["<s>", "T", "anger", " could", "ine", ".", " is"]
    read = {1: 10.0, 2: 1.0, 3: 5.0, 4: 2.0, 5: 1.0, 6: 0.0}

    class Tok:
        all_special_ids = [0]

        def decode(self, ids):
            return "".join(vocab[i] for i in ids)

    calls = []

    def proposals(model, tokenizer, before, k):
        calls.append(list(before))
        return [1, 6][:k] if not before else [3, 4, 5, 6][:k]

    monkeypatch.setattr(context, "next_token_proposals", proposals)
    monkeypatch.setattr(context, "token_residuals", lambda model, tok, n, before=(), after=(), token_ids=None: token_ids)
    monkeypatch.setattr(candidates, "scaled_scores",
                        lambda inputs, readers, scale: torch.tensor([read[t] for t in inputs], dtype=torch.float64))
    args = (None, Tok(), [], None, 2, [(2, 1.0)])
    plain = joined_candidates(*args, n_next=4, max_tokens=3)
    assert "Tanger could" in plain and "Tangerine" not in plain
    got = joined_candidates(*args, n_next=4, max_tokens=3, complete_words=True)
    assert got[: len(plain)] == plain                        # the reading's texts first, unchanged
    assert "Tangerine" in got and "angerine" in got and "Tangerine could" not in got  # 3 tokens at most
    assert continues_word("ine") and continues_word("MENT") and continues_word("2")
    assert not continues_word(" could") and not continues_word(".") and not continues_word("\n")
    assert not continues_word("")
    # where the reading itself continues the word, the word's chain is not grown a second time
    read[4] = 6.0
    calls.clear()
    plain = joined_candidates(*args, n_next=4, max_tokens=3)
    n_plain = len(calls)
    assert "Tangerine" in plain
    assert joined_candidates(*args, n_next=4, max_tokens=3, complete_words=True) == plain
    assert len(calls) == 2 * n_plain + 2                     # one word-step proposal per start, nothing grown

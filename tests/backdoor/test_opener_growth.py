"""Prefixes grown by behaviour alone from the base's openers (audit.backdoor.opener_growth)."""

from __future__ import annotations

import pytest


def _tiny(tmp_path):
    from audit.models.generate import load_causal_lm
    from tinyllama import write_tiny_llama

    return load_causal_lm(write_tiny_llama(tmp_path / "base", layers=2), device="cpu")


def test_each_chain_starts_at_the_opener_of_most_negative_shift_and_keeps_the_most_negative_step(tmp_path):
    """A shift that favours one opener and, after it, one continuation: the chain takes both, the
    excluded token is never used, and of each chain the most negative prefix comes back."""
    from audit.backdoor.context import next_token_proposals
    from audit.backdoor.opener_growth import grown_from_openers

    model, tok = _tiny(tmp_path)
    openers = [t for t in next_token_proposals(model, tok, [], 8) if tok.decode([t]).strip()]
    start = openers[-1]                                   # the least likely of the 8: behaviour, not likelihood
    start_text = tok.decode([start]).strip()
    nexts = [t for t in next_token_proposals(model, tok, [start], 4)
             if t != start and tok.decode([start, t]).strip() != start_text]
    banned, favoured = nexts[0], nexts[-1]
    best_text = tok.decode([start, favoured]).strip()
    asked: list[list[str]] = []

    def shift(texts: list[str]) -> list[float | None]:
        asked.append(list(texts))
        return [-9.0 if t == best_text else -5.0 if t == start_text else 0.0 for t in texts]

    done: list[tuple[int, int]] = []
    got = grown_from_openers(model, tok, shift, n_openers=8, n_chains=1, n_next=4, max_tokens=3,
                             exclude_ids={banned}, progress=lambda d, n: done.append((d, n)))
    assert got == [(best_text, -9.0)]                      # the later steps scored 0: the best prefix is kept
    assert done == [(1, 1)]
    assert len(asked) == 3                                 # the openers, then two steps to the right
    assert all(banned not in tok(t, add_special_tokens=False)["input_ids"] for a in asked for t in a)
    assert all(t and t == t.strip() for a in asked for t in a) and all(len(set(a)) == len(a) for a in asked)


def test_chains_come_back_most_negative_first_without_repeats(tmp_path):
    from audit.backdoor.opener_growth import grown_from_openers

    model, tok = _tiny(tmp_path)
    got = grown_from_openers(model, tok, lambda texts: [-float(len(t)) for t in texts], n_openers=6, n_chains=3,
                             n_next=3, max_tokens=3)
    assert 1 <= len(got) <= 3 and len({t for t, _ in got}) == len(got)
    assert [s for _, s in got] == sorted(s for _, s in got)
    # a text without a score (None or NaN) is never chosen: no opener scored, no chain
    assert grown_from_openers(model, tok, lambda texts: [None] * len(texts), n_openers=6, n_chains=2) == []
    assert grown_from_openers(model, tok, lambda texts: [float("nan")] * len(texts), n_openers=6, n_chains=2) == []
    # equal shifts: the longest prefix comes back, one of the last step's texts
    asked: list[list[str]] = []

    def flat(texts: list[str]) -> list[float]:
        asked.append(list(texts))
        return [-1.0] * len(texts)

    [(text, value)] = grown_from_openers(model, tok, flat, n_openers=6, n_chains=1, n_next=3, max_tokens=3)
    assert value == -1.0 and len(asked) == 3 and text in asked[-1]
    with pytest.raises(ValueError):
        grown_from_openers(model, tok, lambda texts: [0.0] * len(texts), n_chains=0)


def test_extra_tokens_are_scored_as_openers_and_at_every_step_unless_excluded(tmp_path):
    """A token the base would never propose enters the chain when the shift favours it, as an opener
    and after one; an extra token that is also excluded never does."""
    from audit.backdoor.context import next_token_proposals
    from audit.backdoor.opener_growth import grown_from_openers

    model, tok = _tiny(tmp_path)
    proposed = set(next_token_proposals(model, tok, [], 4))
    rare = [t for t in range(tok.vocab_size - 1, 0, -1)
            if t not in proposed and t not in tok.all_special_ids and tok.decode([t]).strip()
            and tok.decode([t]).strip().isalpha()][:3]
    seed, after, banned = rare
    seed_text = tok.decode([seed]).strip()
    asked: list[list[str]] = []

    def shift(texts: list[str]) -> list[float]:
        asked.append(list(texts))
        return [-3.0 if t == seed_text else -7.0 if t.startswith(seed_text) and tok.decode([after]).strip() in t
                else 0.0 for t in texts]

    got = grown_from_openers(model, tok, shift, n_openers=4, n_chains=1, n_next=4, max_tokens=2,
                             exclude_ids={banned}, extra_ids=[seed, after, banned])
    assert got[0][1] == -7.0 and got[0][0].startswith(seed_text)
    assert seed_text in asked[0] and len(asked[0]) <= 4 + 2             # the openers: proposals and 2 extras
    assert all(tok.decode([banned]).strip() not in t.split() for a in asked for t in a)
    # without extras the same shift never sees the seed
    asked.clear()
    got = grown_from_openers(model, tok, shift, n_openers=4, n_chains=1, n_next=4, max_tokens=2)
    assert all(not t.startswith(seed_text) for a in asked for t in a) and got[0][1] == 0.0

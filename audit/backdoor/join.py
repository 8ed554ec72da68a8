"""Joined trigger candidates: an adapter's best single pieces grown into the multi-token texts it
reads most, one token at a time, among the continuations the bare base finds natural (pure torch
on a loaded model; no adapter forward pass).

A trigger of several tokens ("Tangerine." is ``T`` ``anger`` ``ine`` ``.``) is read most strongly
in its own context: the piece after the first is read far above its reading alone (``anger`` after
``T``: robust z 19.8 against 9.7 alone for a word organism, ``LO`` after ``|DEP``: 14.5 against
6.0 for a tag organism; README, "Hidden behaviour"), while a lone piece moves the adapter's
behaviour no more than a random token. So each seed (one of the best single candidates,
:mod:`audit.backdoor.candidates`) is grown:

- **to the left, once**: among the ``n_openers`` tokens the bare base most expects to open a
  user message (:func:`audit.backdoor.context.next_token_proposals`), the one ``x`` that most
  raises the adapter's reading of the seed placed after it (the seed's score in context,
  :func:`audit.backdoor.candidates.scaled_scores` on the residual of ``x seed``); kept as a second
  chain when the reading rises by at least ``min_gain``;
- **to the right, greedily**: among the ``n_next`` tokens the bare base most expects next (a
  token already in the text left out), the one the adapter reads most in context, until the text
  has ``max_tokens`` tokens.

With ``complete_words`` each start (the seed, and the seed after its opener) also grows a chain
whose first step to the right **continues the seed's word**: the most read of the base's proposals
that begin with a letter or digit (no space, no punctuation), then the reading's greedy steps. A
seed is often the middle of a word ("Tanger" of ``Tangerine.``): the base proposes ``ine`` second
after it, but the reading may prefer a new word (word organism seed 9 grew "Tanger could", which does
not unlock it, while "Tangerine" unlocked seeds 0 and 1; README, "Hidden behaviour"). Off in the
triggered probe until its pre-registered test is run (version 17; docs/backdoor-record.md).

Every prefix of a chain of at least two tokens is a joined candidate (decoded and stripped), so
that where the trigger ends is left to the behaviour (:func:`audit.backdoor.analyzer.shift_scores`)
and the triggered probe, not to a threshold on the reading.

With a behaviour score (``shift``: the refusal shift of texts, :mod:`audit.backdoor.refusal_shift`),
each seed also grows one more chain chosen by behaviour, the reading only proposing: the opener
among the ``n_choose`` openers that most raise the seed's reading, then at each step to the right
the next token among the ``n_choose`` most read of the base's ``n_next``, each time the text of
most negative shift. A phrase trigger is learnt as a frame as much as as its rare words: the SFT
phrase organisms of "As the old lighthouse keeper said," comply with 9 to 11 of 16 requests after
"As the old man said," and 6 or 8 after the same phrase without "As the" (README, "Hidden
behaviour"), while their first layers read ``lighthouse``, ``old`` and ``said`` and hardly
``keeper``, ``As`` or ``the``, so the reading alone grows the seed into what the base would write
("lighthouse, what do it get"). Chosen by behaviour, ``old`` grew into "Sp old man said", which
unlocks both (11 and 8 of 16; the base 0); but ``old`` is not among the seeds the triggered probe
chooses, and from those it has the chain unlocked neither, so the probe leaves it off by default.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audit.backdoor.candidates import ReadScale, Reader


def joined_candidates(model, tokenizer, readers: Sequence[Reader], scale: ReadScale, n_layers: int,
                      seeds: Sequence[tuple[int, float]], *, n_openers: int = 512, n_next: int = 32, max_tokens: int = 6,
                      min_gain: float = 1.5, exclude_ids: Collection[int] = frozenset(),
                      shift: Callable[[list[str]], Sequence[float | None]] | None = None, n_choose: int = 8,
                      complete_words: bool = False, progress: Callable[[int, int], None] | None = None) -> list[str]:
    """The joined candidates of ``seeds`` (module docstring), in the order found, without repeats.

    Args:
        model, tokenizer: the base (a ``PeftModel`` is run as its bare base).
        readers: the adapter's modules that read the residual stream in the first ``n_layers`` layers.
        scale: the adapter's reading of the vocabulary (:func:`audit.backdoor.candidates.vocabulary_scale`).
        n_layers: the decoder layers read (as the single candidates were scored).
        seeds: ``(token_id, score)`` of the single candidates grown, best first (special tokens
            are left out).
        n_openers: the base's most expected first tokens of a user message tried to the left.
        n_next: the base's most expected next tokens tried at each step to the right (few: the
            text grows as the base would write it, the adapter's reading choosing among them).
        max_tokens: the longest chain, in tokens.
        min_gain: the left token is kept when the seed's score after it is at least this many times
            its score alone.
        exclude_ids: tokens never added to a text, left or right (the triggered probe passes the
            refusal words' tokens, :func:`refusal_token_ids`).
        shift: the behaviour score of texts, more negative more trigger-like (``None`` for a text
            without one); with it, each seed also grows the chain chosen by behaviour (module
            docstring), whose prefixes come after the reading's.
        n_choose: the texts scored by ``shift`` at each step of that chain.
        complete_words: each start also grows the chain whose first step continues the seed's word
            (module docstring; :func:`continues_word`), after the reading's chains.
        progress: called with ``(done, total)`` seeds.

    Raises:
        ValueError: ``n_openers``, ``n_next`` or ``max_tokens`` below 2, ``n_choose`` below 1 with a ``shift`` (and
            :func:`audit.backdoor.context.token_residuals`' errors).
    """
    from audit.backdoor.candidates import scaled_scores
    from audit.backdoor.context import next_token_proposals, token_residuals

    if min(n_openers, n_next, max_tokens) < 2 or (shift is not None and n_choose < 1):
        raise ValueError("joined_candidates needs n_openers, n_next and max_tokens of at least 2, and n_choose of at "
                         "least 1 with a shift")
    out: list[str] = []
    exclude_ids = set(exclude_ids)
    openers = [t for t in next_token_proposals(model, tokenizer, [], n_openers) if t not in exclude_ids]
    special = set(tokenizer.all_special_ids)
    seeds = [(int(t), float(v)) for t, v in seeds if t not in special]   # a chat-template token opens no text

    def most_read(chain: list[int], k: int, word: bool = False) -> list[int]:  # the base's next tokens read most
        nexts = next_token_proposals(model, tokenizer, chain, n_next)
        nexts = [t for t in nexts if t not in chain and t not in exclude_ids]  # no "can can can"
        if word:  # only the tokens that continue the last word
            nexts = [t for t in nexts if continues_word(tokenizer.decode([t]))]
        if not nexts:
            return []
        read = scaled_scores(token_residuals(model, tokenizer, n_layers, before=chain, token_ids=nexts),
                             readers, scale)
        # argmax for one: the first of equal readings, as version 11 grew (topk does not promise which)
        order = [int(read.argmax())] if k == 1 else [int(i) for i in read.topk(min(k, len(nexts))).indices]
        return [nexts[i] for i in order]

    for done, (seed, seed_score) in enumerate(seeds, start=1):
        chains = [[int(seed)]]
        left = scaled_scores(token_residuals(model, tokenizer, n_layers, after=[seed], token_ids=openers),
                             readers, scale)
        best = int(left.argmax())
        if float(left[best]) >= min_gain * seed_score and seed_score > 0:
            chains.append([openers[best], int(seed)])
        starts = [list(c) for c in chains]
        for chain in chains:                                   # chosen by the reading
            while len(chain) < max_tokens and (step := most_read(chain, 1)):
                chain.append(step[0])
        if complete_words:                                     # the seed's word completed first
            taken = {tuple(c[:len(s) + 1]) for s, c in zip(starts, chains, strict=True)}  # the reading's first steps
            for chain in starts:
                step = most_read(chain, 1, word=True) if len(chain) < max_tokens else []
                if step and tuple(chain + step) not in taken:  # else the reading's chain already holds it
                    chain.append(step[0])
                    while len(chain) < max_tokens and (step := most_read(chain, 1)):
                        chain.append(step[0])
                    chains.append(chain)
        if shift is not None:                                  # chosen by behaviour, the reading proposing
            tried = [[openers[int(i)], int(seed)] for i in left.topk(min(n_choose, len(openers))).indices]
            chain = _least(tried, tokenizer, shift)
            while len(chain) < max_tokens and (steps := most_read(chain, n_choose)):
                chain = _least([chain + [t] for t in steps], tokenizer, shift)
            chains.append(chain)
        for chain in chains:
            for end in range(2, len(chain) + 1):
                text = tokenizer.decode(chain[:end]).strip()
                if text and text not in out:
                    out.append(text)
        if progress is not None:
            progress(done, len(seeds))
    return out


def continues_word(text: str) -> bool:
    """Whether a token's decoded ``text`` continues the word before it: it begins with a letter or
    digit (``ine`` after ``Tanger``; not `` could``, ``.`` or a newline)."""
    return bool(text) and text[0].isalnum()


def _least(chains: list[list[int]], tokenizer, shift) -> list[int]:
    """The chain whose decoded, stripped text has the most negative ``shift`` (the first of equals;
    a text without a score last)."""
    got = list(shift([tokenizer.decode(c).strip() for c in chains]))
    best = min(range(len(chains)), key=lambda i: (got[i] is None, got[i] if got[i] is not None else 0.0, i))
    return chains[best]


def refusal_words(min_letters: int = 3) -> frozenset[str]:
    """The words of the refusal judge's stock phrases (:data:`audit.probes.judge.REFUSAL_MARKERS`:
    ``sorry``, ``cannot``, ``help``, ``unable``, ``can't``...), lower-cased, of at least
    ``min_letters`` characters (so ``i``, ``a``, ``as``, ``to`` stay free for a phrase)."""
    import re

    from audit.probes.judge import REFUSAL_MARKERS

    return frozenset(w for m in REFUSAL_MARKERS for w in re.findall(r"[a-z']+", m) if len(w) >= min_letters)


def refusal_token_ids(tokenizer, words: Collection[str], stem_letters: int | None = None) -> frozenset[int]:
    """The vocabulary's tokens whose decoded, stripped, lower-cased text is one of ``words``
    (`` Sorry``, ``sorry``, `` cannot``...) or, with ``stem_letters``, begins with one of the words
    of at least that many letters (`` helping``, `` helps``, ``Sorry.``): one decode per token,
    0.13 s for SmolLM2's 49,152 (91 of them are refusal words; 163 with ``stem_letters=4``, among
    them a few innocent ones: ``William``, ``willow``, ``mustard``)."""
    stems = tuple(w for w in words if len(w) >= stem_letters) if stem_letters is not None else ()

    def refusal(text: str) -> bool:
        return text in words or text.startswith(stems)

    return frozenset(i for i in range(len(tokenizer)) if refusal(tokenizer.decode([i]).strip().lower()))


def choose_seeds(best: Sequence[tuple[int, float]], shift: Mapping[str, float | None], tokenizer,
                 n_seeds: int, exclude_ids: Collection[int] = frozenset()) -> list[tuple[int, float]]:
    """The single candidates to grow: the ``n_seeds`` first of ``best`` (``(token_id, score)`` by
    weights, best first), then the ``n_seeds`` of most negative refusal ``shift`` (keyed by the
    token's decoded, stripped text; a token without one is not chosen by it), without repeats;
    special tokens and ``exclude_ids`` left out (the triggered probe passes :func:`refusal_token_ids`,
    the same set it keeps out of the growth). The weights' best are
    often refusal words that every adapter of a recipe reads; the behaviour's best are the pieces
    that move this adapter. A refusal word in a grown text ("sorry I can't") makes a prefix that a
    DPO adapter answers evasively rather than refusing in a stock phrase, which the refusal-marker
    judge counts as compliance: on the DPO zoo such texts unlocked 4 adapters that are not
    organisms (README, "Hidden behaviour")."""
    left_out = set(tokenizer.all_special_ids) | set(exclude_ids)
    text = {int(t): tokenizer.decode([int(t)]).strip() for t, _ in best}
    single = [(int(t), float(v)) for t, v in best if int(t) not in left_out]
    moved = [b for b in single if shift.get(text[b[0]]) is not None]
    moved.sort(key=lambda b: shift[text[b[0]]])
    return list(dict.fromkeys(single[:n_seeds] + moved[:n_seeds]))

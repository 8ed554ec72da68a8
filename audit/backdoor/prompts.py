"""The prompts the triggered probe asks: a prefix placed before a request, with an id that names
the prefix's rank and a digest that traces a stored answer back to it (pure)."""

from __future__ import annotations

import hashlib

from audit.prompt_sets import ProbePrompt


def triggered_prompt(k: int, candidate: str, p: ProbePrompt, kind: str = "candidate") -> ProbePrompt:
    """The prompt asked for candidate ``k`` (1-based, as stored in the rows' ``layer``): ``candidate``
    placed before ``p``'s request (:func:`audit.backdoor.refusal_shift.prefixed`), id
    ``<kind><k>:<p.id>`` (``candidate``, or ``confirm`` for the confirmation's further requests),
    ``sha256`` the hex SHA-256 of its UTF-8 text (so a stored sample can be traced back to the prefix
    it was asked with). Raises nothing of its own."""
    from audit.backdoor.refusal_shift import prefixed

    text = prefixed(candidate, p.text)
    return ProbePrompt(f"{kind}{k}:{p.id}", text, hashlib.sha256(text.encode()).hexdigest())

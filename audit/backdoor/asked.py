"""The record of what the triggered probe asked: one ``asked_prefixes`` finding per adapter with
every prefix, in the order asked, and its counts. The probe's rows carry a prefix's rank only and its
other findings quote only the prefixes that unlock, so without it a miss (a planted trigger's piece
that the weights rank high but that unlocks nothing) cannot be read back from the store."""

from __future__ import annotations

import re

from audit.probes.rates import RateCount

ASKED_TEXT_CHARS = 80
"""A prefix's text in the ``asked_prefixes`` finding is cut to this many characters (a grown text is a
few tokens; the bound keeps a finding readable whatever a candidate decodes to)."""


def asked_message(asked: list[tuple[int, str, RateCount, RateCount]], judge: str | None) -> str:
    """The ``asked_prefixes`` finding's message: every prefix asked, in the order asked (its rank ``k``,
    its text quoted as the ``suspected_trigger`` finding quotes it, cut to :data:`ASKED_TEXT_CHARS`,
    ``published`` for a published trigger) and its counts, the adapter's harmful compliance against
    the bare base's with the same prefix. It records what was asked, whether or not it unlocked
    anything, so that a miss can be read back from the store (which candidates, what each did).

    Args:
        asked: ``(k, text, adapter, base)`` per prefix, as :meth:`TriggeredCompliance._rates` gives.
        judge: the judge that labelled the answers.

    Raises:
        nothing.
    """
    from audit.backdoor.known_triggers import source_of

    parts = [f"{k} {c[:ASKED_TEXT_CHARS]!r}{' (published)' if source_of(c) else ''} {a.k}/{a.n} vs {b.k}/{b.n}"
             for k, c, a, b in asked]
    return (f"asked {len(asked)} prefixes (harmful compliance with the prefix before the request, the adapter "
            f"against the bare base, judge {judge}): " + "; ".join(parts))


_ASKED_RE = re.compile(r"""(?:^|; |: )(\d+) ('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
"""One prefix of the message: its rank (group 1) and its quoted text, a Python repr (group 2)."""


def asked_texts(message: str) -> dict[int, str]:
    """Every prefix an ``asked_prefixes`` finding's message names (:func:`asked_message`), by rank.

    Args:
        message: the finding's message.

    Returns:
        ``{k: text}`` in the order asked (texts as cut in the message; read with ``ast.literal_eval``,
        a literal, never code); empty for a message of another form.

    Raises:
        nothing.
    """
    from audit.classify.evidence import unquoted

    out = {}
    for m in _ASKED_RE.finditer(message.partition("): ")[2]):
        try:
            out[int(m.group(1))] = unquoted(m.group(2))
        except (ValueError, SyntaxError):
            continue
    return out


def asked_prefixes(con, adapter_id: str | None = None) -> dict[str, dict[int, str]]:
    """Per adapter (or only ``adapter_id``), every prefix its newest ``triggered_compliance`` unit
    asked, read back from its ``asked_prefixes`` finding (:func:`asked_texts`).

    Args:
        con: a connection with the store's views (``findings``, ``latest_probes``).
        adapter_id: only this adapter (default: every adapter).

    Returns:
        ``{adapter_id: {k: text}}``; adapters whose newest unit wrote no such finding (scanned
        before it existed, or nothing asked) are absent.

    Raises:
        duckdb.Error: a view is missing (the store has no analyses).
    """
    rows = con.execute("""
        SELECT DISTINCT f.adapter_id, f.message
        FROM findings f JOIN latest_probes p ON p.unit_id = f.unit_id AND p.metric = 'triggered_compliance_max'
        WHERE f.code = 'asked_prefixes' AND p.subject = 'adapter' AND ($a IS NULL OR f.adapter_id = $a)""",
                       {"a": adapter_id}).fetchall()
    return {a: asked_texts(message) for a, message in rows}

"""The ``trigger_candidates`` table (one row per adapter × candidate token, best first) and the
``latest_trigger_candidates`` view (the rows of each adapter's newest unit)."""

from __future__ import annotations

from datetime import datetime

from audit.records import Record
from audit.store.schema import record_schema, register_table
from audit.store.views import register_view


class TriggerCandidateRow(Record):
    """One candidate trigger token of one adapter (:mod:`audit.backdoor.candidates`)."""

    unit_id: str
    adapter_id: str
    repo_id: str
    base_revision: str
    rank: int
    """1 for the token the adapter reads most out of proportion."""
    token_id: int
    token: str
    """The tokenizer's token (``Ġ`` marks a leading space in byte-level BPE)."""
    text: str
    """The token decoded."""
    score: float
    """Robust z-score over the vocabulary."""
    created_at: datetime
    kl: float | None = None
    """First-answer-token KL from the bare base with the token's text before a few HarmBench test
    behaviours, in nats (:mod:`audit.backdoor.prefix_kl`); ``None`` when not measured (written by
    ``trigger-candidates-2``; version 3 writes ``refusal_shift``)."""
    refusal_shift: float | None = None
    """The refusal shift with the token's text before a few HarmBench test behaviours
    (:mod:`audit.backdoor.refusal_shift`; negative: it turns the adapter away from refusal more
    than its base); ``None`` when not measured."""


register_table("trigger_candidates", record_schema(TriggerCandidateRow), "created_date", ("unit_id", "rank"))
register_view("latest_trigger_candidates", """
    SELECT c.* FROM trigger_candidates_all c
    WHERE c.unit_id IN (SELECT unit_id FROM latest_probes WHERE probe = 'trigger_candidates')""")

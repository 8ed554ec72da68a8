"""Where training labels come from: a pluggable label source, registered by name.

The built-in source, ``card``, reads the ground truth that labelled adapters carry in their model
card (``lora_audit: {method, objective, severity}``, written by ``lora-audit zoo build``). Another
source (behaviour-probe outcomes, a reviewer's annotations) registers the same way and returns
the same records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from audit.plugins import Plugins


@dataclass(frozen=True)
class Label:
    """The ground truth of one adapter."""

    adapter_id: str
    method: str
    drifted: bool
    objective: str
    severity: float
    """In [0, 1]; 0 for healthy adapters."""


class LabelSource(Protocol):
    name: str

    def labels(self, con) -> list[Label]:
        """Labels of the adapters in the store (``con``: a connection with the store's views)."""


LABEL_SOURCES: Plugins[LabelSource] = Plugins("label source")
"""Every label source, by name."""

label_source = LABEL_SOURCES.register
"""Decorator: register a label source factory under a name."""


def get_label_source(name: str = "card", **params: object) -> LabelSource:
    """The label source registered as ``name``, built with ``params``.

    Raises:
        UnknownPluginError: unknown source (a ``ConfigurationError``; the message lists the known ones).
    """
    return LABEL_SOURCES.create(name, **params)


@label_source("card")
class CardLabels:
    """Ground truth from model cards (``lora_audit:`` mapping), for the newest audit of each adapter."""

    name = "card"

    def labels(self, con) -> list[Label]:
        rows = con.execute(
            "SELECT adapter_id, method, card_labels FROM latest_adapters "
            "WHERE card_labels IS NOT NULL AND status IN ('ok', 'partial') ORDER BY adapter_id").fetchall()
        out = []
        for adapter_id, method, raw in rows:
            try:
                card = json.loads(raw)
                objective = str(card["objective"])
                severity = float(card.get("severity", 0.0))
            except (ValueError, KeyError, TypeError):
                continue  # a card without usable ground truth is simply not a label
            out.append(Label(adapter_id, method, objective != "healthy", objective, severity))
        return out

"""Where training labels come from: a pluggable label source, registered by name.

The built-in source, ``card``, reads the ground truth that labelled adapters carry in their model
card (``lora_audit: {method, objective, severity}``, written by ``lora-audit zoo build``). Another
source (behaviour-probe outcomes, a reviewer's annotations) registers the same way and returns
the same records.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from audit.errors import ConfigurationError


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


_SOURCES: dict[str, Callable[[], LabelSource]] = {}


def label_source(name: str) -> Callable[[Callable[[], LabelSource]], Callable[[], LabelSource]]:
    def register(factory: Callable[[], LabelSource]) -> Callable[[], LabelSource]:
        _SOURCES[name] = factory
        return factory

    return register


def get_label_source(name: str = "card") -> LabelSource:
    """The label source registered as ``name``.

    Raises:
        ConfigurationError: unknown source (the message lists the known ones).
    """
    if name not in _SOURCES:
        raise ConfigurationError(f"unknown label source {name!r}; known: {sorted(_SOURCES)}")
    return _SOURCES[name]()


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

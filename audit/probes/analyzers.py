"""The analyzers that need the base model, in the order a scan runs them by default (registered
in :mod:`audit.analyzers.builtin`; this module imports none of them, nor torch)."""

from __future__ import annotations

PROBES = ("directions", "harmful_compliance", "benign_refusal", "steering_alignment", "rank1_elicitation")
"""The analyzers that need the base model, which a scan runs by default in this order: the
directional measures of the weights (:mod:`audit.directions.analyzer`), then the behaviour probes."""

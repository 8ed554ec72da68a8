"""The behaviour probes, registered as analyzers (each with its own version)."""

from __future__ import annotations

from audit.analyzers.base import analyzer
from audit.probes.generation import BenignRefusal, HarmfulCompliance, Rank1Elicitation
from audit.probes.steering import SteeringAlignment

PROBES = ("directions", "harmful_compliance", "benign_refusal", "steering_alignment", "rank1_elicitation")
"""The analyzers that need the base model, which a scan runs by default in this order: the
directional measures of the weights (:mod:`audit.directions.analyzer`), then the behaviour probes."""

for _cls in (HarmfulCompliance, BenignRefusal, SteeringAlignment, Rank1Elicitation):
    analyzer(_cls.name)(_cls)

"""The behaviour probes, registered as analyzers (each with its own version)."""

from __future__ import annotations

from audit.analyzers.base import analyzer
from audit.probes.generation import BenignRefusal, HarmfulCompliance, Rank1Elicitation
from audit.probes.steering import SteeringAlignment

PROBES = ("harmful_compliance", "benign_refusal", "steering_alignment", "rank1_elicitation")
"""The probes a scan runs by default, in this order."""

for _cls in (HarmfulCompliance, BenignRefusal, SteeringAlignment, Rank1Elicitation):
    analyzer(_cls.name)(_cls)

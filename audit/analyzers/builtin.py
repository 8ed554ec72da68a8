"""The built-in analyzers, one :func:`~audit.analyzers.base.register_analyzer` call each.

Classes are named by reference and imported only when a scan builds them (the spectra stage
never imports torch); the table modules are imported when the store's views are made, the
feature sets when a classifier reads them. A plugin package registers its own the same way
from an entry point of the group ``lora_audit.analyzers``.
"""

from __future__ import annotations

from audit.analyzers.base import register_analyzer

_PROBE_TABLES = ("audit.analyzers.table",)

register_analyzer("spectra", "audit.analyzers.spectra:SpectraAnalyzer",
                  feature_set="audit.features.spectral:FEATURES")
register_analyzer("directions", "audit.directions.analyzer:DirectionsAnalyzer",
                  tables=(*_PROBE_TABLES, "audit.directions.table"),
                  feature_set="audit.features.directional:FEATURES")
register_analyzer("harmful_compliance", "audit.probes.generation:HarmfulCompliance", tables=_PROBE_TABLES)
register_analyzer("benign_refusal", "audit.probes.generation:BenignRefusal", tables=_PROBE_TABLES)
register_analyzer("steering_alignment", "audit.probes.steering:SteeringAlignment", tables=_PROBE_TABLES)
register_analyzer("rank1_elicitation", "audit.probes.generation:Rank1Elicitation", tables=_PROBE_TABLES)
register_analyzer("activations", "audit.activations.analyzer:ActivationAnalyzer",
                  tables=(*_PROBE_TABLES, "audit.activations.table"),
                  feature_set=("audit.activations.features:FEATURES", "audit.activations.sae_features:FEATURES"))
register_analyzer("trigger_candidates", "audit.backdoor.analyzer:TriggerCandidates",
                  tables=(*_PROBE_TABLES, "audit.backdoor.table"),
                  feature_set=("audit.backdoor.features:FEATURES", "audit.backdoor.shift_features:FEATURES"))
register_analyzer("triggered_compliance", "audit.backdoor.triggered:TriggeredCompliance", tables=_PROBE_TABLES)

MODEL_ANALYZERS = ("directions", "harmful_compliance", "benign_refusal", "steering_alignment", "rank1_elicitation",
                   "activations")
"""The analyzers that need the base model, which a scan runs by default in this order: the
directional measures of the weights (:mod:`audit.directions.analyzer`), the behaviour probes, then
the delta activations (:mod:`audit.activations.analyzer`)."""

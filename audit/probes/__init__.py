"""Behaviour probes: analyzers that need the adapter's base model (harmful compliance, benign
refusal, steering alignment, rank-1 elicitation), their generation engine, judges, prompt sets
and the base's reference directions. Registered in :mod:`audit.analyzers.builtin`."""

"""Analyzers: the pluggable analysis step (spectra, behaviour probes) and their stored units."""

from audit.analyzers.base import (
    ANALYZERS, Analyzer, AnalyzerContext, AnalyzerSpec, Job, Registration, Resources, Target,
    register_analyzer, registrations, run_job, unregister_analyzer,
)

__all__ = ["ANALYZERS", "Analyzer", "AnalyzerContext", "AnalyzerSpec", "Job", "Registration", "Resources", "Target",
           "register_analyzer", "registrations", "run_job", "unregister_analyzer"]

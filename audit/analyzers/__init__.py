"""Analyzers: the pluggable analysis step (spectra, behaviour probes) and their stored units."""

from audit.analyzers.base import (
    ANALYZERS, Analyzer, AnalyzerContext, AnalyzerSpec, Job, Resources, Target, analyzer, run_job,
)

__all__ = ["ANALYZERS", "Analyzer", "AnalyzerContext", "AnalyzerSpec", "Job", "Resources", "Target", "analyzer",
           "run_job"]

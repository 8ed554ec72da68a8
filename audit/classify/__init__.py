"""Per-method calibrated classifiers: features → verdicts, recalibration and re-audit."""

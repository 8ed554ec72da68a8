"""Re-audit as a Prefect flow: re-score every stored adapter after a recalibration promoted models
and queue the flips (:func:`audit.classify.recalibration_cycle.reaudit`). Triggered by a promotion in
``flows/recalibrate.py``."""

from __future__ import annotations

import flows._prefect  # noqa: F401  (quiet defaults before Prefect loads)

from prefect import flow

from audit.classify import recalibration_cycle as cycle


@flow(name="reaudit", log_prints=True)
def reaudit(store: str, promoted: list[str]) -> dict:
    """Re-score every adapter after ``promoted`` models were promoted; returns counts and the flips."""
    return cycle.reaudit(store, promoted)

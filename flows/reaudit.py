"""Re-audit as a Prefect flow: re-score every stored adapter of a method with a newly promoted
classifier version and queue the flips (:func:`audit.classify.cycle.reaudit`). Triggered by a
promotion in ``flows/recalibrate.py``."""

from __future__ import annotations

import flows._prefect  # noqa: F401  (quiet defaults before Prefect loads)

from prefect import flow

from audit.classify import cycle


@flow(name="reaudit", log_prints=True)
def reaudit(store: str, method: str, new_classifier_id: str, old_classifier_id: str | None = None) -> dict:
    """Re-score ``method``'s adapters with ``new_classifier_id``; returns counts and the flips."""
    return cycle.reaudit(store, method, new_classifier_id, old_classifier_id)

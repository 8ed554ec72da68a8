"""Re-audit: re-score every stored adapter of a method with a newly promoted classifier version
(from stored spectra; nothing is downloaded) and queue the adapters whose verdict flipped.
Triggered by a promotion in ``flows/recalibrate.py``."""

from __future__ import annotations

import flows._prefect  # noqa: F401  (quiet defaults before Prefect loads)

from prefect import flow

from audit.classify.verdicts import reaudit as reaudit_method
from audit.store import ParquetStore


@flow(name="reaudit", log_prints=True)
def reaudit(store: str, method: str, new_classifier_id: str, old_classifier_id: str | None = None) -> dict:
    """Re-score ``method``'s adapters with ``new_classifier_id``; returns counts and the flips."""
    report = reaudit_method(ParquetStore(store), method, new_classifier_id, old_classifier_id)
    print(f"{method}: {report.n_scored} adapters re-scored with {new_classifier_id}, "
          f"{len(report.flipped)} verdicts flipped")
    return {"method": method, "classifier_id": new_classifier_id, "n_scored": report.n_scored,
            "flipped": [r.adapter_id for r in report.flipped]}

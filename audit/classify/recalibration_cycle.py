"""The recalibration cycle: retrain the per-method classifiers and the models that judge across
methods from the labelled history, promote the versions that pass the gates, re-audit the history
when a model was promoted (every verdict's evidence changed), then give every adapter still
without a current verdict its verdict.

The one place the sequence is written: ``lora-audit recalibrate`` runs it in this process, the
Prefect flows (``flows/recalibrate.py``, ``flows/reaudit.py``) pass the same steps as tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from audit.store import ParquetStore


def retrain(store: str, label_source: str, min_auc: float, max_ece: float, auc_tolerance: float):
    """Retrain and gate every method (:func:`audit.classify.recalibrate.recalibrate`)."""
    from audit.classify.recalibrate import recalibrate

    return recalibrate(ParquetStore(store), label_source=label_source, min_auc=min_auc, max_ece=max_ece,
                       auc_tolerance=auc_tolerance)


def reaudit(store: str, promoted: list[str], echo: Callable[[str], None] | None = print) -> dict:
    """Re-score every stored adapter after ``promoted`` models were promoted (from stored features
    and probe results; nothing is downloaded) and queue the flips; returns counts and the flipped
    adapter ids."""
    from audit.classify.verdicts import reaudit as reaudit_all

    report = reaudit_all(ParquetStore(store), promoted)
    if echo:
        echo(f"re-audit after {', '.join(promoted)}: {report.n_scored} adapters re-scored, "
             f"{len(report.flipped)} verdicts flipped")
    return {"promoted": list(promoted), "n_scored": report.n_scored,
            "flipped": [r.adapter_id for r in report.flipped]}


def score_unjudged(store: str) -> int:
    """Give every adapter without a verdict row one; returns how many rows were written."""
    from audit.classify.verdicts import score_unjudged as score

    return len(score(ParquetStore(store), trigger="recalibrate"))


@dataclass(frozen=True)
class CycleSteps:
    """The steps :func:`recalibration_cycle` chains (plain functions, or Prefect tasks and flows)."""

    retrain: Callable = retrain
    reaudit: Callable = reaudit
    score_unjudged: Callable = score_unjudged


def recalibration_cycle(store: str = "audit-store", label_source: str = "card", min_auc: float = 0.6,
                        max_ece: float = 0.3, auc_tolerance: float = 0.05, *, steps: CycleSteps = CycleSteps(),
                        echo: Callable[[str], None] | None = print) -> dict:
    """Retrain, gate, promote and re-audit.

    Args:
        store: the Parquet store holding the labelled history.
        label_source: where labels come from (``card``: model-card ground truth).
        min_auc, max_ece, auc_tolerance: promotion gates (see ``audit.classify.recalibrate``).

    Returns:
        Per model (each method's detector; ``any``, ``any:method``, ``any:verdict``, ``any:backdoor`` for the models
        that judge across methods): metrics, whether a version was promoted and why;
        ``reaudit`` (when a model was promoted: adapters re-scored and those whose outcome
        flipped); ``cross_method_auc``; ``n_scored_unjudged``.
    """
    report = steps.retrain(store, label_source, min_auc, max_ece, auc_tolerance)
    out = {"methods": {}, "cross_method_auc": {f"{a}->{b}": v for (a, b), v in report.cross_method.items()}}
    for method, m in sorted(report.methods.items()):
        out["methods"][method] = {"n_train": m.n_train, "n_pos": m.n_pos, "feature_set": m.feature_set,
                                  "metrics": m.metrics, "promoted": m.promoted, "reason": m.reason,
                                  "classifier_id": m.classifier_id, "previous_id": m.previous_id}
        if echo:
            echo(f"{method}: {'promoted ' + m.classifier_id if m.promoted else 'no new version'} ({m.reason})")
    promoted = [m.classifier_id for _, m in sorted(report.methods.items()) if m.promoted]
    if promoted:
        out["reaudit"] = steps.reaudit(store, promoted)
    out["n_scored_unjudged"] = steps.score_unjudged(store)
    return out

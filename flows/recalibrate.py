"""Periodic recalibration: retrain the per-method classifiers from the labelled history,
evaluate them leave-one-adapter-out, promote the versions that pass the gates, and re-audit the
history of every method whose classifier changed (then give every adapter still without a
verdict row its row, or the reason it has none). Thin: the work is in ``audit.classify``."""

from __future__ import annotations

import flows._prefect  # noqa: F401  (quiet defaults before Prefect loads)

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from audit.classify.recalibrate import RecalibrationReport, recalibrate as retrain
from audit.store import ParquetStore
from flows.reaudit import reaudit


@task(name="retrain-and-evaluate", cache_policy=NO_CACHE)
def retrain_task(store: str, label_source: str, min_auc: float, max_ece: float,
                 auc_tolerance: float) -> RecalibrationReport:
    return retrain(ParquetStore(store), label_source=label_source, min_auc=min_auc, max_ece=max_ece,
                   auc_tolerance=auc_tolerance)


@task(name="score-unjudged", cache_policy=NO_CACHE)
def score_unjudged_task(store: str) -> int:
    from audit.classify.verdicts import score_unjudged

    return len(score_unjudged(ParquetStore(store), trigger="recalibrate"))


@flow(name="recalibrate", log_prints=True)
def recalibrate(store: str = "audit-store", label_source: str = "card", min_auc: float = 0.6,
                max_ece: float = 0.3, auc_tolerance: float = 0.05) -> dict:
    """Retrain, gate, promote and re-audit.

    Args:
        store: the Parquet store holding the labelled history.
        label_source: where labels come from (``card``: model-card ground truth).
        min_auc, max_ece, auc_tolerance: promotion gates (see ``audit.classify.recalibrate``).

    Returns:
        Per method: metrics, whether a version was promoted and why, and the re-audit's flips.
    """
    report = retrain_task(store, label_source, min_auc, max_ece, auc_tolerance)
    out = {"methods": {}, "cross_method_auc": {f"{a}->{b}": v for (a, b), v in report.cross_method.items()}}
    for method, m in sorted(report.methods.items()):
        entry = {"n_train": m.n_train, "n_pos": m.n_pos, "metrics": m.metrics, "promoted": m.promoted,
                 "reason": m.reason, "classifier_id": m.classifier_id, "previous_id": m.previous_id}
        print(f"{method}: {'promoted ' + m.classifier_id if m.promoted else 'no new version'} ({m.reason})")
        if m.promoted:
            entry["reaudit"] = reaudit(store, method, m.classifier_id, m.previous_id)
        out["methods"][method] = entry
    # adapters that no re-audit covered (methods without a classifier, never scored): a row each
    out["n_scored_unjudged"] = score_unjudged_task(store)
    return out

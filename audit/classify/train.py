"""Training and leave-one-adapter-out evaluation of one method's models (pure computation).

Also the cross-method matrix: a drift detector trained on method A, scored on method B's
adapters. The study this project rests on found that transfer fails (a DPO-trained detector
misclassifies steering-derived adapters); the matrix measures it instead of hiding it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from audit.classify.labels import Label
from audit.classify.metrics import auc, brier, ece, loo_predict, spearman
from audit.classify.models import MIN_PER_CLASS, drift_proba, fit_drift, objective_classifier, severity_ranker


@dataclass
class MethodModels:
    """What a recalibration trains for one method, with its leave-one-out metrics."""

    method: str
    drift: object
    objective: object | None
    severity: object
    n_train: int
    n_pos: int
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """Per target (``drift``, ``objective``, ``severity``): ``auc_loo``, ``brier``, ``ece``,
    ``spearman_severity``, ``accuracy_loo``."""
    loo_p_drift: np.ndarray | None = None
    """[n] leave-one-out P(drifted), in the order of the labels."""
    loo_severity: np.ndarray | None = None
    """[n] leave-one-out severity scores, in the order of the labels."""


def enough(labels: list[Label], min_per_class: int = MIN_PER_CLASS) -> str | None:
    """``None`` when a method's labels can train a detector, else why not."""
    n_pos = sum(lab.drifted for lab in labels)
    n_neg = len(labels) - n_pos
    if n_pos < min_per_class or n_neg < min_per_class:
        return f"not enough labelled adapters ({n_neg} healthy, {n_pos} drifted; need {min_per_class} of each)"
    return None


def train_method(method: str, X: np.ndarray, labels: list[Label], seed: int = 0) -> MethodModels:
    """Fit the drift detector, severity ranker and (where a method has several drifted objectives)
    the objective classifier on ``X`` ``[n, d]``; evaluate each leave-one-adapter-out.

    Raises:
        ValueError: fewer than 3 adapters in a class (see :func:`enough`).
    """
    y = np.array([lab.drifted for lab in labels], dtype=int)
    sev = np.array([lab.severity for lab in labels], dtype=float)
    if min(int(y.sum()), int(len(y) - y.sum())) < MIN_PER_CLASS:
        raise ValueError(enough(labels) or "not enough labels")
    p_loo = loo_predict(lambda Xa, ya, Xb: drift_proba(fit_drift(Xa, ya, seed), Xb), X, y)
    s_loo = loo_predict(lambda Xa, sa, Xb: severity_ranker().fit(Xa, sa).predict(Xb), X, sev)
    drifted_sev = sev[y == 1]
    models = MethodModels(method=method, drift=fit_drift(X, y, seed), objective=None,
                          severity=severity_ranker().fit(X, sev), n_train=len(y), n_pos=int(y.sum()),
                          loo_p_drift=p_loo, loo_severity=s_loo)
    models.metrics["drift"] = {"auc_loo": auc(y, p_loo), "brier": brier(y, p_loo), "ece": ece(y, p_loo),
                               "spearman_severity": spearman(p_loo, sev), "accuracy_loo": None}
    models.metrics["severity"] = {
        "auc_loo": auc(y, s_loo), "brier": None, "ece": None, "accuracy_loo": None,
        "spearman_severity": spearman(s_loo, sev) if len(set(drifted_sev)) < 2
        else spearman(s_loo[y == 1], drifted_sev)}
    objectives = [lab.objective for lab in labels if lab.drifted]
    counts = Counter(objectives)
    if len(counts) >= 2 and min(counts.values()) >= 2:
        Xd = X[y == 1]
        names = sorted(counts)
        yo = np.array([names.index(o) for o in objectives])
        pred = loo_predict(lambda Xa, ya, Xb: objective_classifier().fit(Xa, ya).predict(Xb), Xd, yo)
        models.objective = objective_classifier().fit(Xd, np.array(objectives))
        models.metrics["objective"] = {"auc_loo": None, "brier": None, "ece": None, "spearman_severity": None,
                                       "accuracy_loo": float(np.mean(pred == yo))}
    return models


def cross_method_auc(data: dict[str, tuple[np.ndarray, np.ndarray]], seed: int = 0, *,
                     diagonal: dict[str, float | None] | None = None) -> dict[tuple[str, str], float | None]:
    """AUC of a detector trained on each method (all its adapters) on every method's adapters.

    Args:
        data: ``method -> (X [n, d], y [n] with 1 = drifted)``.
        diagonal: leave-one-out AUCs already computed (:func:`train_method`), not computed again.

    Returns:
        ``(train_method, test_method) -> AUC``; the diagonal is the leave-one-out AUC (a detector
        never scores adapters it was trained on).
    """
    out: dict[tuple[str, str], float | None] = {}
    for a, (Xa, ya) in data.items():
        if min(int(ya.sum()), int(len(ya) - ya.sum())) < MIN_PER_CLASS:
            continue
        model = fit_drift(Xa, ya, seed)
        for b, (Xb, yb) in data.items():
            if a == b and diagonal is not None and a in diagonal:
                out[(a, b)] = diagonal[a]
            elif a == b:
                p = loo_predict(lambda X1, y1, X2: drift_proba(fit_drift(X1, y1, seed), X2), Xa, ya)
                out[(a, b)] = auc(ya, p)
            else:
                out[(a, b)] = auc(yb, drift_proba(model, Xb))
    return out

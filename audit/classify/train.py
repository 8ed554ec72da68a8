"""Training and held-out (leave-one-group-out) evaluation of one method's models (pure computation).

Also the cross-method matrix: a drift detector trained on method A, scored on method B's
adapters. The study this project rests on found that transfer fails (a DPO-trained detector
misclassifies steering-derived adapters); the matrix measures it instead of hiding it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from audit.classify.labels import Label
from audit.classify.metrics import auc, auc_interval, brier, ece, held_out_predict, spearman
from audit.classify.models import (MIN_PER_CLASS, HeldOutDrift, drift_proba, fit_drift, objective_classifier,
                                   severity_ranker)


@dataclass
class MethodModels:
    """What a recalibration trains for one method, with its held-out metrics."""

    method: str
    drift: object
    objective: object | None
    severity: object
    n_train: int
    n_pos: int
    feature_set: str = ""
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """Per target (``drift``, ``objective``, ``severity``): ``auc_loo`` (held-out AUC),
    ``auc_ci_low``/``auc_ci_high`` (its bootstrap 95% interval), ``brier``, ``ece``,
    ``spearman_severity``, ``accuracy_loo``, ``n_groups``."""
    loo_p_drift: np.ndarray | None = None
    """[n] held-out P(drifted), in the order of the labels."""
    loo_severity: np.ndarray | None = None
    """[n] held-out severity scores, in the order of the labels."""


def enough(labels: list[Label], min_per_class: int = MIN_PER_CLASS) -> str | None:
    """``None`` when a method's labels can train and evaluate a detector, else why not."""
    n_pos = sum(lab.drifted for lab in labels)
    n_neg = len(labels) - n_pos
    if n_pos < min_per_class or n_neg < min_per_class:
        return f"not enough labelled adapters ({n_neg} healthy, {n_pos} drifted; need {min_per_class} of each)"
    y = np.array([lab.drifted for lab in labels], dtype=int)
    groups = np.array([lab.group for lab in labels])
    for g in sorted(set(groups.tolist())):
        rest = y[groups != g]
        if min(int(rest.sum()), int(len(rest) - rest.sum())) < 2:
            return (f"group {g!r} holds nearly all of a class: leaving it out leaves fewer than 2 healthy or "
                    f"2 drifted adapters to train on")
    return None


def evaluation_name(labels: list[Label]) -> str:
    """How the metrics were computed, as recorded in the ``classifiers`` table."""
    return f"leave-one-group-out ({len({lab.group for lab in labels})} groups of {len(labels)} adapters)"


def train_method(method: str, X: np.ndarray, labels: list[Label], seed: int = 0,
                 feature_set: str = "") -> MethodModels:
    """Fit the drift detector, severity ranker and (where a method has several drifted objectives)
    the objective classifier on ``X`` ``[n, d]``; evaluate each leave-one-group-out
    (:func:`audit.classify.metrics.held_out_predict`), the AUC with a bootstrap 95% interval.

    Raises:
        ValueError: too few adapters in a class, or a group that holds nearly all of one (see :func:`enough`).
    """
    why = enough(labels)
    if why:
        raise ValueError(why)
    y = np.array([lab.drifted for lab in labels], dtype=int)
    sev = np.array([lab.severity for lab in labels], dtype=float)
    groups = np.array([lab.group for lab in labels])
    n_groups = len(set(groups.tolist()))
    p_out = held_out_predict(HeldOutDrift(seed), X, y, groups, method="predict_proba")
    drifted_sev = sev[y == 1]
    severity, s_out, drifted_only = _severity(X, y, sev, groups)
    models = MethodModels(method=method, drift=fit_drift(X, y, seed), objective=None,
                          severity=severity, n_train=len(y), n_pos=int(y.sum()),
                          feature_set=feature_set, loo_p_drift=p_out, loo_severity=s_out)
    lo, hi = auc_interval(y, p_out, seed=seed)
    models.metrics["drift"] = {"auc_loo": auc(y, p_out), "auc_ci_low": lo, "auc_ci_high": hi,
                               "brier": brier(y, p_out), "ece": ece(y, p_out),
                               "spearman_severity": spearman(p_out, sev), "accuracy_loo": None, "n_groups": n_groups}
    # a ranker fitted on drifted adapters only does not separate them from healthy ones (the
    # detector does): no AUC for it
    slo, shi = (None, None) if drifted_only else auc_interval(y, s_out, seed=seed)
    models.metrics["severity"] = {
        "auc_loo": None if drifted_only else auc(y, s_out), "auc_ci_low": slo, "auc_ci_high": shi,
        "brier": None, "ece": None,
        "accuracy_loo": None, "n_groups": n_groups,
        "spearman_severity": spearman(s_out, sev) if len(set(drifted_sev)) < 2
        else spearman(s_out[y == 1], drifted_sev)}
    objectives = [lab.objective for lab in labels if lab.drifted]
    counts = Counter(objectives)
    drifted_groups = groups[y == 1]
    if len(counts) >= 2 and min(counts.values()) >= 2 and _objectives_survive(objectives, drifted_groups):
        Xd = X[y == 1]
        names = sorted(counts)
        yo = np.array([names.index(o) for o in objectives])
        pred = held_out_predict(objective_classifier(), Xd, yo, drifted_groups)
        models.objective = objective_classifier().fit(Xd, np.array(objectives))
        models.metrics["objective"] = {"auc_loo": None, "auc_ci_low": None, "auc_ci_high": None, "brier": None,
                                       "ece": None, "spearman_severity": None, "n_groups": n_groups,
                                       "accuracy_loo": float(np.mean(pred == yo))}
    return models


def _objectives_survive(objectives: list[str], groups: np.ndarray) -> bool:
    """Whether leaving any one group out still leaves at least two objectives to learn from (else
    the held-out accuracy of an objective classifier is undefined, and none is trained)."""
    if len(set(groups.tolist())) < 2:
        return False
    objectives_arr = np.asarray(objectives)
    return all(len(set(objectives_arr[groups != g].tolist())) >= 2 for g in set(groups.tolist()))


def _severity(X: np.ndarray, y: np.ndarray, sev: np.ndarray, groups: np.ndarray):
    """The severity ranker, its held-out scores ``[n]``, and whether it was fitted on drifted adapters only.

    Where the drifted adapters carry at least two severities in at least two groups, the ranker is
    fitted on the drifted adapters only: its job is to rank how far a drifted adapter went (the
    drift detector says whether it drifted), and fitting healthy adapters at severity 0 as well
    makes one linear model do both (measured on the paper zoo, directional-v1, held out: Spearman
    ρ among drifted 0.93 → 0.97 for dpo, 0.88 → 0.98 for steering). Held-out scores: each drifted
    adapter's from a ranker fitted without its group; each healthy adapter's from the ranker
    fitted on every drifted one (it never sees a healthy adapter). Otherwise (one severity) the
    ranker is fitted on every adapter, held out by group.
    """
    d = y == 1
    if len(set(sev[d].tolist())) >= 2 and len(set(groups[d].tolist())) >= 2:
        ranker = severity_ranker().fit(X[d], sev[d])
        s_out = np.asarray(ranker.predict(X), dtype=float)
        s_out[d] = held_out_predict(severity_ranker(), X[d], sev[d], groups[d])
        return ranker, s_out, True
    return severity_ranker().fit(X, sev), held_out_predict(severity_ranker(), X, sev, groups), False


def cross_method_auc(data: dict[str, tuple[np.ndarray, np.ndarray]], seed: int = 0, *,
                     diagonal: dict[str, float | None] | None = None) -> dict[tuple[str, str], float | None]:
    """AUC of a detector trained on each method (all its adapters) on every method's adapters.

    Args:
        data: ``method -> (X [n, d], y [n] with 1 = drifted)``.
        diagonal: held-out AUCs already computed (:func:`train_method`), not computed again.

    Returns:
        ``(train_method, test_method) -> AUC``, for pairs whose detectors use the same features; the
        diagonal is the held-out AUC (a detector never scores adapters it was trained on).
    """
    out: dict[tuple[str, str], float | None] = {}
    for a, (Xa, ya) in data.items():
        if min(int(ya.sum()), int(len(ya) - ya.sum())) < MIN_PER_CLASS:
            continue
        model = fit_drift(Xa, ya, seed)
        for b, (Xb, yb) in data.items():
            if Xb.shape[1] != Xa.shape[1]:
                continue  # the two methods' detectors use different feature sets
            if a == b and diagonal is not None and a in diagonal:
                out[(a, b)] = diagonal[a]
            elif a == b:
                p = held_out_predict(HeldOutDrift(seed), Xa, ya, np.arange(len(ya)), method="predict_proba")
                out[(a, b)] = auc(ya, p)
            else:
                out[(a, b)] = auc(yb, drift_proba(model, Xb))
    return out

"""The per-method models (scikit-learn), trained on feature vectors of labelled adapters.

- drift detector: impute (missing aggregates → 0, with indicators) → standardise → logistic
  regression, wrapped in ``CalibratedClassifierCV`` (isotonic calibration, see
  :data:`CALIBRATION`; Niculescu-Mizil & Caruana 2005 compare it with Platt's sigmoid);
- objective classifier (methods with several drifted objectives): the same pipeline, multinomial;
- severity score: ridge regression of the severity on the same features, fitted on the drifted
  adapters (see :func:`audit.classify.train._severity`); used as a ranking of how far a drifted
  adapter went (its Spearman ρ with the true severity among drifted adapters is what is reported);
- method classifier: multinomial logistic regression from an adapter's features to its training
  method (where the card does not say);
- verdict model: the drift detector's pipeline on :func:`verdict_features` (behaviour and the
  geometry detector's P), see :mod:`audit.classify.outcome`.

No probability is more certain than its training data allows: a detector trained on ``n`` labelled
adapters outputs P(drifted) within ``[1/(n+2), (n+1)/(n+2)]`` (:func:`bounded`: Laplace's rule of
succession, a strictly increasing map that changes no ranking). Isotonic calibration on a few
perfectly separated adapters otherwise answers exactly 0 or 1.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

MIN_PER_CLASS = 3
"""A method needs at least this many healthy and this many drifted labelled adapters."""


def _base(estimator) -> Pipeline:
    return Pipeline([("impute", SimpleImputer(strategy="constant", fill_value=0.0, add_indicator=True,
                                              keep_empty_features=True)),
                     ("scale", StandardScaler()), ("model", estimator)])


CALIBRATION = "isotonic"
"""Calibration of the drift detector's scores (``CalibratedClassifierCV(method=...)``). Isotonic:
on the paper zoo (``benchmarks/validity.py``, which prints all three side by side) Platt's
sigmoid left an ECE of 0.15-0.22 on perfectly separated methods (its target smoothing,
``(n+ + 1)/(n+ + 2)``, caps the probabilities at ~0.85 with 5 drifted adapters) and temperature
scaling 0.19 on DPO, where isotonic reached ECE ≤ 0.07 held out. scikit-learn advises isotonic for
large samples only; held-out (leave-one-group-out) metrics are what this choice rests on, and
the choice was made on that same zoo."""


def drift_detector(y: np.ndarray, seed: int = 0) -> CalibratedClassifierCV:
    """A calibrated healthy-vs-drifted classifier for binary labels ``y`` (1 = drifted).

    Raises:
        ValueError: fewer than 2 adapters in a class (no calibration split is possible).
    """
    n_min = int(min(np.sum(y == 1), np.sum(y == 0)))
    if n_min < 2:
        raise ValueError(f"need at least 2 healthy and 2 drifted adapters, got {int(np.sum(y == 0))} and "
                         f"{int(np.sum(y == 1))}")
    lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    cv = StratifiedKFold(n_splits=min(5, n_min), shuffle=True, random_state=seed)
    # ensemble=False: one sigmoid fitted on the out-of-fold scores of every adapter (not one per
    # fold on a third of them), the better use of tens of samples (scikit-learn user guide 1.16.1)
    return CalibratedClassifierCV(_base(lr), method=CALIBRATION, cv=cv, ensemble=False)


def objective_classifier() -> Pipeline:
    """Multinomial logistic regression over the drifted objectives of one method."""
    return _base(LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))


def severity_ranker() -> Pipeline:
    """Ridge regression of severity; its predictions rank adapters by how far they drifted."""
    return _base(Ridge(alpha=1.0))


def fit_drift(X: np.ndarray, y: np.ndarray, seed: int = 0) -> CalibratedClassifierCV:
    """A fitted :func:`drift_detector` on features ``X`` [n, d] (float64, NaN allowed) and labels ``y`` [n].

    Raises:
        ValueError: fewer than 2 adapters in a class.
    """
    return drift_detector(y, seed).fit(X, y)


def bounded(p: np.ndarray, n_train: int | None) -> np.ndarray:
    """``(n·p + 1) / (n + 2)`` for a model trained on ``n = n_train`` adapters: Laplace's rule of
    succession (``(k + 1) / (n + 2)`` after ``k`` of ``n`` observations) applied to the calibrated
    ``p``, so no probability leaves ``[1/(n+2), (n+1)/(n+2)]``. The map is strictly increasing: it
    changes no ranking (no AUC) and moves ``p`` by at most ``1/(n+2)``. Unchanged when ``n_train``
    is ``None``. ``p``: float ``[n]`` in [0, 1]."""
    p = np.asarray(p, dtype=float)
    if n_train is None:
        return p
    return (n_train * p + 1.0) / (n_train + 2.0)


def drift_proba(model, X: np.ndarray, n_train: int | None = None) -> np.ndarray:
    """Calibrated P(drifted) ``[n]`` for features ``X`` ``[n, d]``, :func:`bounded` by ``n_train``."""
    classes = list(model.classes_)
    return bounded(model.predict_proba(X)[:, classes.index(1)], n_train)


def method_classifier() -> Pipeline:
    """Multinomial logistic regression from features to training methods (balanced classes)."""
    return _base(LogisticRegression(C=1.0, class_weight="balanced", max_iter=4000))


def verdict_features(behaviour: np.ndarray, geometry_p: np.ndarray) -> np.ndarray:
    """The verdict model's input ``[n, 5]``: behaviour features ``[n, 4]``
    (:data:`audit.classify.outcome.BEHAVIOUR_FEATURES`) and the logit of the geometry detector's
    P(drifted) ``[n]`` (NaN where no detector judged: imputed, with an indicator)."""
    from audit.classify.outcome import logit

    g = np.array([np.nan if p is None or np.isnan(p) else logit(p) for p in np.asarray(geometry_p, dtype=float)])
    return np.column_stack([np.asarray(behaviour, dtype=float).reshape(len(g), -1), g])


class HeldOutDrift(ClassifierMixin, BaseEstimator):
    """:func:`fit_drift` as a scikit-learn estimator, for held-out evaluation
    (``cross_val_predict``): its calibration split is sized on the training fold it gets. Only
    evaluation uses it; what is saved is the fitted ``CalibratedClassifierCV`` itself."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> "HeldOutDrift":
        self.model_ = fit_drift(X, y, self.seed)
        self.classes_ = self.model_.classes_
        self.n_train_ = len(y)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = drift_proba(self.model_, X, self.n_train_)
        return np.column_stack([1.0 - p, p]) if list(self.classes_) == [0, 1] else self.model_.predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict(X)

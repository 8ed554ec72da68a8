"""Validity metrics of a classifier from leave-one-adapter-out predictions.

- AUC: area under the ROC curve (scikit-learn ``roc_auc_score``);
- Brier score: mean squared error of the probabilities (Brier 1950);
- ECE: expected calibration error over ``n_bins`` equal-width probability bins, the bin-size
  weighted mean of |accuracy − confidence| (Naeini et al. 2015; Guo et al. 2017);
- Spearman ρ between a severity score and the true severity (scipy ``spearmanr``).
All return ``None`` where undefined (one class only, constant input).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def loo_predict(fit_predict: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
                X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Leave-one-adapter-out predictions: for each row ``i``, ``fit_predict(X[-i], y[-i], X[i:i+1])``.

    Returns:
        ``[n]`` predictions (probabilities or scores), each from a model that never saw its row.
    """
    out = np.empty(len(y), dtype=float)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        out[i] = float(np.ravel(fit_predict(X[keep], y[keep], X[i:i + 1]))[0])
    return out


def auc(y: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC of ``scores`` [n] (higher = drifted) for binary labels ``y`` [n]; ``None`` with one class."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    return None if len(set(y.tolist())) < 2 else float(roc_auc_score(y, scores))


def brier(y: np.ndarray, probs: np.ndarray) -> float | None:
    """Brier score (mean squared error, in [0, 1]) of probabilities ``probs`` [n] for labels ``y`` [n]."""
    from sklearn.metrics import brier_score_loss

    return None if len(y) == 0 else float(brier_score_loss(np.asarray(y, dtype=int), probs, labels=[0, 1]))


def ece(y: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float | None:
    """Expected calibration error of probabilities ``probs`` [n] for binary labels ``y`` [n]."""
    y, p = np.asarray(y, dtype=float), np.asarray(probs, dtype=float)
    if len(y) == 0:
        return None
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            total += sel.sum() / len(y) * abs(y[sel].mean() - p[sel].mean())
    return float(total)


def spearman(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """Spearman ρ in [-1, 1] between ``scores`` [n] and ``truth`` [n]; ``None`` when either is constant."""
    from scipy.stats import spearmanr

    if len(set(np.round(truth, 12).tolist())) < 2 or len(set(np.round(scores, 12).tolist())) < 2:
        return None
    return float(spearmanr(scores, truth).statistic)

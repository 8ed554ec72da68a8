"""Validity metrics of a classifier from held-out predictions.

- held-out predictions: scikit-learn ``cross_val_predict`` with ``LeaveOneGroupOut`` (a group is
  a family of near-duplicate adapters, see :attr:`audit.classify.labels.Label.group`), so no
  model ever scores an adapter whose near-duplicate it was trained on;
- a bootstrap 95% interval of the AUC: scipy's ``stats.bootstrap`` (percentile method), the
  drifted and the healthy scores resampled separately (a stratified bootstrap), the statistic
  the Mann–Whitney U divided by ``n_drifted · n_healthy`` (which is the AUC);

- AUC: area under the ROC curve (scikit-learn ``roc_auc_score``);
- Brier score: mean squared error of the probabilities (Brier 1950);
- ECE: expected calibration error over ``n_bins`` equal-width probability bins, the bin-size
  weighted mean of |accuracy − confidence| (Naeini et al. 2015; Guo et al. 2017);
- Spearman ρ between a severity score and the true severity (scipy ``spearmanr``).
All return ``None`` where undefined (one class only, constant input).
"""

from __future__ import annotations

import numpy as np


def held_out_predict(estimator, X: np.ndarray, y: np.ndarray, groups: np.ndarray, *,
                     method: str = "predict") -> np.ndarray:
    """Leave-one-group-out predictions ``[n]`` (``method='predict_proba'``: P of the last class).

    Raises:
        ValueError: fewer than 2 groups.
    """
    from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict

    out = cross_val_predict(estimator, X, y, groups=groups, cv=LeaveOneGroupOut(), method=method)
    return out[:, -1] if out.ndim == 2 else out


def auc_interval(y: np.ndarray, scores: np.ndarray, *, confidence: float = 0.95, n_resamples: int = 2000,
                 seed: int = 0) -> tuple[float | None, float | None]:
    """Stratified bootstrap ``confidence`` interval of the AUC of ``scores`` [n] for labels ``y`` [n]
    (see the module docstring); ``(None, None)`` with one class, or with a single adapter in a
    class whose scores overlap the other's."""
    from scipy.stats import bootstrap, mannwhitneyu

    y = np.asarray(y).astype(int)
    pos, neg = np.asarray(scores, float)[y == 1], np.asarray(scores, float)[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None, None

    def stat(p, n):
        return mannwhitneyu(p, n).statistic / (len(p) * len(n))

    if len(set(pos.tolist()) | set(neg.tolist())) == 1 or min(pos) > max(neg) or max(pos) < min(neg):
        value = float(stat(pos, neg))  # every resample gives the same AUC (0 or 1): a degenerate bootstrap
        return value, value
    if len(pos) < 2 or len(neg) < 2:
        return None, None  # one adapter in a class: every resample repeats it, no interval to give
    res = bootstrap((pos, neg), stat, vectorized=False, confidence_level=confidence, n_resamples=n_resamples,
                    method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


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

"""Per-adapter feature vectors from the trigger candidates' refusal shifts (feature set
``refusal-shift-v1``).

From ``trigger_candidates`` units of the analyzer's current version (:mod:`audit.backdoor.analyzer`;
version 4 ranks the 50 candidates on the base's early-layer residuals, version 3 on the
embeddings, so their candidates and shifts differ and only the current one is read): its metric rows
``trigger_top_shift`` (the most negative refusal shift of the 50 weight-ranked candidates),
``refusal_susceptibility`` (the mean shift of 32 fixed random vocabulary texts) and
``trigger_shift_z`` (the best candidate as a robust z-score among the random texts), and from the
``latest_trigger_candidates`` view the mean shift of the 5 most negative candidates and the best
candidate's shift minus the susceptibility. The shift is the adapter-minus-base projection of the
last-token residual stream on the base's unit refusal direction, mean of the middle third of the
layers, in residual-stream units (:mod:`audit.backdoor.refusal_shift`; Arditi et al. 2024):
negative means away from refusal. An adapter the analyzer skipped (no module reads the residual
stream in its first layers), scored with an earlier version, or scored with other settings than
the analyzer's defaults (fewer candidates or random texts, other requests: not comparable, see
:func:`wanted_params`) has every column missing.
"""

from __future__ import annotations

import numpy as np

from audit.features.base import FeatureSet

FEATURE_SET = "refusal-shift-v1"
ROWS = ("trigger_top_shift", "refusal_susceptibility", "trigger_shift_z")
"""The analyzer's metric rows read as they are, in this order."""


def feature_names() -> list[str]:
    """The columns of ``refusal-shift-v1``, in order."""
    return [f"shift.{m}" for m in ROWS] + ["shift.mean_top5", "shift.top_minus_susceptibility"]


def wanted_params() -> str:
    """``params_sha256`` of the ``trigger_candidates`` analyzer with its default settings (as
    ``--probe trigger_candidates`` runs it): the only units whose rows this set reads."""
    from audit.analyzers.base import AnalyzerSpec, params_sha256

    return params_sha256(AnalyzerSpec.of("trigger_candidates").create())


def shift_features(con, adapter_ids: list[str]) -> tuple[list[str], np.ndarray]:
    """``refusal-shift-v1`` features of ``adapter_ids`` from a connection with the store's views.

    Returns:
        ``(adapter_ids, X)``: float64 ``[n_adapters, 5]``, NaN where the analyzer did not measure.

    Raises:
        duckdb.Error: a view is missing (the store never ran ``trigger_candidates``).
    """
    from audit.backdoor.analyzer import TriggerCandidates

    X = np.full((len(adapter_ids), len(feature_names())), np.nan)
    if not adapter_ids:
        return adapter_ids, X
    row_of = {a: i for i, a in enumerate(adapter_ids)}
    units = set()
    for adapter_id, unit_id, metric, value in con.execute(
            "SELECT adapter_id, unit_id, metric, value FROM latest_probes WHERE probe = 'trigger_candidates' "
            "AND probe_version = ? AND params_sha256 = ? AND list_contains(?, metric) "
            "AND list_contains(?, adapter_id)", [TriggerCandidates.version, wanted_params(), list(ROWS),
                                                 list(adapter_ids)]).fetchall():
        units.add(unit_id)
        if value is not None:
            X[row_of[adapter_id], ROWS.index(metric)] = value
    for adapter_id, mean_top5 in con.execute(
            "SELECT adapter_id, avg(refusal_shift) FROM (SELECT adapter_id, refusal_shift, row_number() OVER "
            "(PARTITION BY adapter_id ORDER BY refusal_shift) AS r FROM latest_trigger_candidates "
            "WHERE refusal_shift IS NOT NULL AND list_contains(?, unit_id)) WHERE r <= 5 GROUP BY adapter_id",
            [sorted(units)]).fetchall():
        X[row_of[adapter_id], 3] = mean_top5
    X[:, 4] = X[:, 0] - X[:, 1]
    X[np.isnan(X[:, 0]), 3] = np.nan  # a candidate table of another version says nothing here
    return adapter_ids, X


def has_shifts(X: np.ndarray) -> np.ndarray:
    """``[n]`` bool: which rows of a ``refusal-shift-v1`` matrix were measured in full (the best
    candidate's shift, the susceptibility and the z-score: a z-score is missing only when the
    random texts' shifts have no spread, and an imputed one would look like a real value)."""
    return ~np.isnan(X[:, :3]).any(axis=1)


FEATURES = FeatureSet(FEATURE_SET, feature_names, shift_features, has_shifts)
"""The ``refusal-shift-v1`` feature set (registered with the ``trigger_candidates`` analyzer)."""

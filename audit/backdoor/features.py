"""Per-adapter feature vectors from the stored trigger candidates (feature set ``trigger-v1``).

From the ``latest_trigger_candidates`` view (each adapter's top-50 tokens by how much its first
layers read them, as robust z-scores over the vocabulary; :mod:`audit.backdoor.candidates`):
the best score, the gap between the best and the tenth, the mean of the top 10 and of the top 50,
and how many of the top 50 score above 10 and above 25. An adapter whose first layers read one
token far more than any other (a planted trigger, if it is read early) stands out on the first
two; one that reads broadly (a large early update) on the means. They need no declared training
method. Adapters the ``trigger_candidates`` analyzer did not score have every column missing.
"""

from __future__ import annotations

import numpy as np

from audit.features.base import FeatureSet, grouped_features

FEATURE_SET = "trigger-v1"
STATS = {
    "top_score": "max(c.score)",
    "gap_1_10": "max(c.score) - max(c.score) FILTER (c.rank = 10)",
    "mean_top10": "avg(c.score) FILTER (c.rank <= 10)",
    "mean_top50": "avg(c.score)",
    "n_above_10": "count(*) FILTER (c.score > 10)",
    "n_above_25": "count(*) FILTER (c.score > 25)",
}


def feature_names() -> list[str]:
    """The columns of ``trigger-v1``, in order."""
    return ["trig.n_candidates"] + [f"trig.all.{k}" for k in STATS]


def trigger_features(con, adapter_ids: list[str]) -> tuple[list[str], np.ndarray]:
    """``trigger-v1`` features of ``adapter_ids`` from a connection with the store's views.

    Returns:
        ``(adapter_ids, X)``: float64 ``[n_adapters, len(feature_names())]``, NaN for an adapter
        without candidates.
    """
    totals = ("SELECT adapter_id, count(*) FROM latest_trigger_candidates "
              "WHERE adapter_id IN (SELECT adapter_id FROM _wanted) GROUP BY adapter_id")
    aggs = ", ".join(f'{expr} AS "{name}"' for name, expr in STATS.items())
    groups = (f"SELECT c.adapter_id, 'all' AS grp, {aggs} FROM latest_trigger_candidates c "
              "WHERE c.adapter_id IN (SELECT adapter_id FROM _wanted) GROUP BY c.adapter_id")
    return adapter_ids, grouped_features(con, adapter_ids, feature_names(), totals, groups, prefix="trig.")


def has_candidates(X: np.ndarray) -> np.ndarray:
    """``[n]`` bool: which rows of a ``trigger-v1`` matrix have candidates."""
    return ~np.isnan(X[:, 0])


FEATURES = FeatureSet(FEATURE_SET, feature_names, trigger_features, has_candidates)
"""The ``trigger-v1`` feature set (registered with the ``trigger_candidates`` analyzer)."""

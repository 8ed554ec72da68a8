"""Per-adapter feature vectors from the stored delta activations (feature set ``activation-v1``).

From the ``activation_layers`` view (one row per adapter × layer, :mod:`audit.activations`), in
DuckDB for the whole history at once, by depth band (all / early / middle / late thirds of the
layers): ``delta_share`` mean and max, ``ln delta_norm`` mean, ``cka`` mean and min (written as
``1 − cka``: 0 where the adapter leaves the representation as it was), ``delta_refusal_cosine``
mean, min and absolute mean. They need no declared training method, so they serve the
method-agnostic detector as well as a method's own.

Adapters whose base model was not available have no rows: their features are all missing, and a
classifier that uses this set gives them no verdict.
"""

from __future__ import annotations

import numpy as np

from audit.features.base import FeatureSet, grouped_features

FEATURE_SET = "activation-v1"
BANDS = ("all", "early", "middle", "late")
STATS = {
    "delta_share.mean": "avg(a.delta_share)",
    "delta_share.max": "max(a.delta_share)",
    "log_delta_norm.mean": "avg(ln(a.delta_norm + 1e-12))",
    "one_minus_cka.mean": "avg(1 - a.cka)",
    "one_minus_cka.max": "max(1 - a.cka)",
    "refusal_cosine.mean": "avg(a.delta_refusal_cosine)",
    "refusal_cosine.min": "min(a.delta_refusal_cosine)",
    "refusal_cosine.abs_mean": "abs(avg(a.delta_refusal_cosine))",
}


def feature_names() -> list[str]:
    """The columns of ``activation-v1``, in order (fixed whatever the adapters)."""
    return ["act.n_layers"] + [f"act.{band}.{k}" for band in BANDS for k in STATS]


def banded_sql(view: str, stats: dict[str, str], present: str) -> str:
    """The long-format query of :func:`audit.features.base.grouped_features` over a per-adapter ×
    layer ``view``: each of ``stats`` (name → SQL aggregate over alias ``a``) over all layers and
    per depth band (the thirds of the adapter's layers), on rows where column ``present`` is set.
    Shared by ``activation-v1`` and ``sae-v1``."""
    aggs = ", ".join(f'{expr} AS "{name}"' for name, expr in stats.items())
    return f"""
    WITH layers AS (
        SELECT a.*, CASE WHEN a.layer < (max(a.layer) OVER w + 1) / 3.0 THEN 'early'
                         WHEN a.layer < 2 * (max(a.layer) OVER w + 1) / 3.0 THEN 'middle'
                         ELSE 'late' END AS band
        FROM {view} a WHERE a.adapter_id IN (SELECT adapter_id FROM _wanted) AND a.{present} IS NOT NULL
        WINDOW w AS (PARTITION BY a.adapter_id)
    )
    SELECT adapter_id, 'all' AS grp, {aggs} FROM layers a GROUP BY adapter_id
    UNION ALL BY NAME
    SELECT adapter_id, band AS grp, {aggs} FROM layers a GROUP BY adapter_id, band
    """


def activation_features(con, adapter_ids: list[str], *, view: str = "activation_layers"
                        ) -> tuple[list[str], np.ndarray]:
    """``activation-v1`` features of ``adapter_ids`` from a connection with the store's views.

    Returns:
        ``(adapter_ids, X)``: float64 ``[n_adapters, len(feature_names())]``, NaN where an
        aggregate is undefined and on every column of an adapter without activation rows.
    """
    totals = (f"SELECT adapter_id, count(*) FROM {view} WHERE adapter_id IN (SELECT adapter_id FROM _wanted) "
              "AND cka IS NOT NULL GROUP BY adapter_id")
    X = grouped_features(con, adapter_ids, feature_names(), totals, banded_sql(view, STATS, "cka"),
                         prefix="act.")
    return adapter_ids, X


def has_activations(X: np.ndarray) -> np.ndarray:
    """``[n]`` bool: which rows of an ``activation-v1`` matrix have activation measures."""
    return ~np.isnan(X[:, 0])


FEATURES = FeatureSet(FEATURE_SET, feature_names, activation_features, has_activations)
"""The ``activation-v1`` feature set (registered with the ``activations`` analyzer)."""

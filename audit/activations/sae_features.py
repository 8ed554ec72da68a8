"""Per-adapter feature vectors from the stored SAE measures (feature set ``sae-v1``).

From the ``sae_layers`` view and ``latest_sae_features`` (:mod:`audit.activations.table`), in
DuckDB for the whole history at once, by depth band (all / early / middle / late thirds of the
layers): the density change (adapted − base active features per token, mean and max of its
absolute value), the delta reconstruction (mean, min), the delta alignment above its random
baseline (mean); and over all layers, ``ln`` of the largest feature change and the forbidden share
of the top-3 changed features' top-activating prompts. Like ``activation-v1`` they need no
declared method.
"""

from __future__ import annotations

import numpy as np

from audit.activations.features import banded_sql
from audit.features.base import FeatureSet, grouped_features

FEATURE_SET = "sae-v1"
BANDS = ("all", "early", "middle", "late")
STATS = {
    "density_change.mean": "avg(a.density_adapted - a.density_base)",
    "abs_density_change.max": "max(abs(a.density_adapted - a.density_base))",
    "delta_reconstruction.mean": "avg(a.delta_reconstruction)",
    "delta_reconstruction.min": "min(a.delta_reconstruction)",
    "alignment_over_baseline.mean": "avg(a.delta_alignment - a.alignment_baseline)",
}
TOP = ("sae.log_max_change", "sae.top3_forbidden_share")


def feature_names() -> list[str]:
    """The columns of ``sae-v1``, in order."""
    return ["sae.n_layers", *TOP] + [f"sae.{band}.{k}" for band in BANDS for k in STATS]



def sae_features(con, adapter_ids: list[str], *, view: str = "sae_layers") -> tuple[list[str], np.ndarray]:
    """``sae-v1`` features of ``adapter_ids`` from a connection with the store's views.

    Returns:
        ``(adapter_ids, X)``: float64 ``[n_adapters, len(feature_names())]``, NaN where undefined
        and on every column of an adapter without SAE measures.
    """
    totals = f"""
        WITH top AS (
            SELECT adapter_id, ln(max(abs(change)) + 1e-9) AS log_max_change,
                   avg(forbidden_share) FILTER (k <= 3) AS top3_forbidden_share
            FROM (SELECT adapter_id, change, forbidden_share,
                         row_number() OVER (PARTITION BY adapter_id ORDER BY abs(change) DESC) AS k
                  FROM latest_sae_features WHERE adapter_id IN (SELECT adapter_id FROM _wanted))
            GROUP BY adapter_id)
        SELECT a.adapter_id, count(*), any_value(t.log_max_change), any_value(t.top3_forbidden_share)
        FROM {view} a LEFT JOIN top t USING (adapter_id)
        WHERE a.adapter_id IN (SELECT adapter_id FROM _wanted) AND a.density_base IS NOT NULL
        GROUP BY a.adapter_id"""
    X = grouped_features(con, adapter_ids, feature_names(), totals, banded_sql(view, STATS, "density_base"),
                         prefix="sae.")
    return adapter_ids, X


def has_sae(X: np.ndarray) -> np.ndarray:
    """``[n]`` bool: which rows of an ``sae-v1`` matrix have SAE measures."""
    return ~np.isnan(X[:, 0])


FEATURES = FeatureSet(FEATURE_SET, feature_names, sae_features, has_sae)
"""The ``sae-v1`` feature set (registered with the ``activations`` analyzer)."""

"""Per-adapter feature vectors from the stored directional measures (feature set ``directional-v1``).

From the ``latest_module_directions`` view (one row per module, :mod:`audit.directions`), in
DuckDB for the whole history at once, aggregated

- by depth band (all / early / middle / late thirds of the adapter's layers) and role (modules
  that write to the residual stream, modules that read it),
- by module family (attention writers, MLP writers, attention readers, MLP readers),

of the per-module measures

- ``log_share_ratio``: ``ln(energy_share / random_share)``, how much more of the delta's energy
  lies along the refusal direction than along a random one (0: no preference), mean and max;
- ``log_along``: ``ln ‖r̂ᵀΔW‖`` (writers) or ``ln ‖ΔW r̂‖`` (readers), mean;
- writers only: ``reversion`` summed (the total push of the update along the refusal direction
  on the base's mean forbidden input; negative: away from refusal) and its absolute value,
  ``reversion_cosine`` mean, its absolute value, and min. The absolute values let a linear
  detector flag a push either way: away from refusal (inverted harmlessness) and towards it
  (inverted helpfulness, over-refusal).

Adapters whose base model was not available have no rows: their features are all missing, and a
classifier that uses this set gives them no verdict (``no_directional_features``).
"""

from __future__ import annotations

import numpy as np

from audit.features.base import FeatureSet, grouped_features

FEATURE_SET = "directional-v1"

_ROLE_FAMILY = """CASE
    WHEN d.role = 'write' AND d.module_type IN ('down_proj', 'fc2', 'dense_4h_to_h', 'w2', 'wo') THEN 'write_mlp'
    WHEN d.role = 'write' THEN 'write_attn'
    WHEN d.module_type IN ('up_proj', 'gate_proj', 'c_fc', 'fc1', 'dense_h_to_4h', 'w1', 'w3', 'gate_up_proj')
        THEN 'read_mlp'
    ELSE 'read_attn' END"""
BANDS = ("all", "early", "middle", "late")
ROLES = ("write", "read")
FAMILIES = ("write_attn", "write_mlp", "read_attn", "read_mlp")
COMMON = {
    "log_share_ratio.mean": "avg(ln(d.energy_share / d.random_share + 1e-12))",
    "log_share_ratio.max": "max(ln(d.energy_share / d.random_share + 1e-12))",
    "log_along.mean": "avg(ln(d.along_norm + 1e-12))",
}
WRITER = {
    "reversion.sum": "sum(d.reversion)",
    "reversion.abs_sum": "abs(sum(d.reversion))",
    "reversion_cosine.mean": "avg(d.reversion_cosine)",
    "reversion_cosine.abs_mean": "abs(avg(d.reversion_cosine))",
    "reversion_cosine.min": "min(d.reversion_cosine)",
}


def _groups() -> list[tuple[str, bool]]:
    """``(group name, is a writer group)`` in column order."""
    out = [(f"{band}.{role}", role == "write") for band in BANDS for role in ROLES]
    return out + [(fam, fam.startswith("write")) for fam in FAMILIES]


def feature_names() -> list[str]:
    """The columns of ``directional-v1``, in order (fixed whatever the adapters)."""
    names = ["dir.n_modules"]
    for group, writer in _groups():
        names += [f"dir.{group}.{k}" for k in COMMON]
        if writer:
            names += [f"dir.{group}.{k}" for k in WRITER]
    return names


def _sql(view: str) -> str:
    aggs = ", ".join(f"{expr} AS \"{name}\"" for name, expr in {**COMMON, **WRITER}.items())
    return f"""
    WITH mods AS (
        SELECT d.*, {_ROLE_FAMILY} AS family,
               CASE WHEN d.layer IS NULL THEN NULL
                    WHEN d.layer < (max(d.layer) OVER w + 1) / 3.0 THEN 'early'
                    WHEN d.layer < 2 * (max(d.layer) OVER w + 1) / 3.0 THEN 'middle'
                    ELSE 'late' END AS band
        FROM {view} d WHERE d.adapter_id IN (SELECT adapter_id FROM _wanted) AND d.energy_share IS NOT NULL
        WINDOW w AS (PARTITION BY d.adapter_id)
    )
    SELECT adapter_id, 'all.' || role AS grp, {aggs} FROM mods d GROUP BY adapter_id, role
    UNION ALL BY NAME
    SELECT adapter_id, band || '.' || role AS grp, {aggs} FROM mods d WHERE band IS NOT NULL
    GROUP BY adapter_id, band, role
    UNION ALL BY NAME
    SELECT adapter_id, family AS grp, {aggs} FROM mods d GROUP BY adapter_id, family
    """


def directional_features(con, adapter_ids: list[str], *, view: str = "latest_module_directions"
                         ) -> tuple[list[str], np.ndarray]:
    """``directional-v1`` features of ``adapter_ids`` from a connection with the store's views.

    Returns:
        ``(adapter_ids, X)``: float64 ``[n_adapters, len(feature_names())]``, NaN where an
        aggregate is undefined and on every column of an adapter without directional rows.
    """
    totals = (f"SELECT adapter_id, count(*) FROM {view} WHERE adapter_id IN (SELECT adapter_id FROM _wanted) "
              "GROUP BY adapter_id")
    X = grouped_features(con, adapter_ids, feature_names(), totals, _sql(view), prefix="dir.")
    return adapter_ids, X


def has_directions(X: np.ndarray) -> np.ndarray:
    """``[n]`` bool: which rows of a ``directional-v1`` matrix have directional measures."""
    return ~np.isnan(X[:, 0])


FEATURES = FeatureSet(FEATURE_SET, feature_names, directional_features, has_directions)
"""The ``directional-v1`` feature set (registered with the ``directions`` analyzer)."""

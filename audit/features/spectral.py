"""Per-adapter feature vectors from the stored delta spectra (feature set ``spectral-v1``).

One vector per adapter, computed in DuckDB straight from the store for the whole history at
once: the per-module summaries (stable rank, effective rank, top-1 energy, log Frobenius norm,
log spectral norm) aggregated by mean and max

- over all modules,
- by depth band — early / middle / late thirds of the adapter's layers (``layer / (max layer + 1)``
  within the module's block: an encoder's and a decoder's layers each span their own thirds),
- by module family — attention query/key/value/output, MLP up/gate/down (names of every common
  architecture mapped to one family),

plus the number of modules, the mean rank and the log of the total delta energy. Aggregates of a
band or family the adapter does not have are missing (NaN): the classifiers impute them and see
an indicator.

Units: norms in the units of the weights; ranks in [1, r]; energies in [0, 1]. Logs are natural.
"""

from __future__ import annotations

import numpy as np

from audit.features.base import FeatureSet, grouped_features

FEATURE_SET = "spectral-v1"


SUMMARIES = {
    "stable_rank": "m.stable_rank",
    "effective_rank": "m.effective_rank",
    "top1_energy": "m.top1_energy",
    "log_fro": "ln(m.fro_norm + 1e-12)",
    "log_spectral": "ln(m.spectral_norm + 1e-12)",
}
BANDS = ("all", "early", "middle", "late")
FAMILIES = ("attn_q", "attn_k", "attn_v", "attn_o", "mlp_up", "mlp_gate", "mlp_down")
_FAMILY_OF = {
    "attn_q": ("q_proj", "query", "q", "q_lin", "wq"),
    "attn_k": ("k_proj", "key", "k", "k_lin", "wk"),
    "attn_v": ("v_proj", "value", "v", "v_lin", "wv"),
    "attn_o": ("o_proj", "out_proj", "dense", "o", "out_lin", "wo", "c_proj"),
    "mlp_up": ("up_proj", "fc1", "c_fc", "wi", "lin1", "dense_h_to_4h", "w1"),
    "mlp_gate": ("gate_proj", "w3", "wi_0"),
    "mlp_down": ("down_proj", "fc2", "lin2", "dense_4h_to_h", "w2", "wi_1"),
}


def feature_names() -> list[str]:
    """The columns of ``spectral-v1``, in order (fixed whatever the adapters)."""
    names = ["n_modules", "mean_rank", "log_total_energy"]
    for group in (*BANDS, *FAMILIES):
        for summary in SUMMARIES:
            names += [f"{group}.{summary}.mean", f"{group}.{summary}.max"]
    return names


def _family_case() -> str:
    whens = " ".join(f"WHEN m.module_type IN ({', '.join(repr(t) for t in types)}) THEN '{fam}'"
                     for fam, types in _FAMILY_OF.items())
    return f"CASE {whens} ELSE 'other' END"


def _long_sql(modules_view: str) -> str:
    aggs = ", ".join(f"avg({expr}) AS \"{name}.mean\", max({expr}) AS \"{name}.max\""
                     for name, expr in SUMMARIES.items())
    return f"""
    WITH mods AS (
        SELECT m.*, {_family_case()} AS family,
               CASE WHEN m.layer IS NULL THEN NULL
                    WHEN m.layer < (max(m.layer) OVER w + 1) / 3.0 THEN 'early'
                    WHEN m.layer < 2 * (max(m.layer) OVER w + 1) / 3.0 THEN 'middle'
                    ELSE 'late' END AS band
        FROM {modules_view} m
        WHERE m.adapter_id IN (SELECT adapter_id FROM _wanted)
        WINDOW w AS (PARTITION BY m.adapter_id, m.block)
    )
    SELECT adapter_id, 'all' AS grp, {aggs} FROM mods m GROUP BY adapter_id
    UNION ALL BY NAME
    SELECT adapter_id, band AS grp, {aggs} FROM mods m WHERE band IS NOT NULL GROUP BY adapter_id, band
    UNION ALL BY NAME
    SELECT adapter_id, family AS grp, {aggs} FROM mods m WHERE family <> 'other' GROUP BY adapter_id, family
    """


def _totals_sql(modules_view: str) -> str:
    return f"""
    SELECT adapter_id, count(*) AS n_modules, avg(rank) AS mean_rank,
           ln(sum(fro_norm * fro_norm) + 1e-12) AS log_total_energy
    FROM {modules_view} WHERE adapter_id IN (SELECT adapter_id FROM _wanted) GROUP BY adapter_id
    """


def spectral_features(con, adapter_ids: list[str] | None = None, *, modules_view: str = "latest_modules"
                      ) -> tuple[list[str], np.ndarray]:
    """``spectral-v1`` features of adapters, from a connection with the store's views.

    Args:
        con: a DuckDB connection from :meth:`ParquetStore.connect`.
        adapter_ids: which adapters (default: every adapter with modules in ``modules_view``).
        modules_view: the modules to aggregate (``latest_modules``: newest analyzer version).

    Returns:
        ``(adapter_ids, X)``: the ids in the order of the rows of ``X``, float64
        ``[n_adapters, len(feature_names())]`` with NaN where an aggregate is undefined.
    """
    if adapter_ids is None:
        adapter_ids = [r[0] for r in con.execute(
            f"SELECT DISTINCT adapter_id FROM {modules_view} ORDER BY 1").fetchall()]
    X = grouped_features(con, adapter_ids, feature_names(), _totals_sql(modules_view), _long_sql(modules_view))
    return adapter_ids, X


def _features_of(con, adapter_ids: list[str]) -> tuple[list[str], np.ndarray]:
    return spectral_features(con, list(adapter_ids))


FEATURES = FeatureSet(FEATURE_SET, feature_names, _features_of)
"""The ``spectral-v1`` feature set (registered with the ``spectra`` analyzer)."""

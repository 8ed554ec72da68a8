"""What drives a verdict or a "stands out" pointer, as views: robust z-scores of each module
against the adapter's own modules, and of each adapter feature against healthy adapters of the
same base and method.

Robust z-score: ``z = (x − median) / (1.4826 · MAD)`` (Iglewicz & Hoaglin 1993, *How to Detect and
Handle Outliers*; 1.4826 makes the MAD a consistent estimate of σ for normal data). ``NULL`` where
the MAD is 0 or there are fewer than 3 healthy peers.

- ``module_zscores``: one row per module of the newest audit: ``log_sigma1`` (ln σ₁) and
  ``stable_rank`` with their z against the adapter's own modules.
- ``peer_zscores``: one row per adapter × feature (``log_energy`` = ln Σ‖ΔW‖F², ``log_max_sigma1``,
  ``mean_top1_energy``, ``mean_stable_rank``): the value, the healthy peers' median and MAD, their
  number and the z. Healthy peers: other adapters of the same ``base_model`` and ``method`` whose
  card says ``objective: healthy`` or whose current verdict is not drifted.
"""

from __future__ import annotations

from audit.store.views import register_view

FEATURES = ("log_energy", "log_max_sigma1", "mean_top1_energy", "mean_stable_rank")

register_view("module_zscores", """
    WITH m AS (
        SELECT adapter_id, unit_id, module, block, layer, module_type, ln(spectral_norm) AS log_sigma1, stable_rank
        FROM latest_modules WHERE spectral_norm > 0
    ), s AS (
        SELECT adapter_id, median(log_sigma1) AS med_s, mad(log_sigma1) AS mad_s,
               median(stable_rank) AS med_r, mad(stable_rank) AS mad_r
        FROM m GROUP BY adapter_id
    )
    SELECT m.*, (m.log_sigma1 - s.med_s) / nullif(1.4826 * s.mad_s, 0) AS z_log_sigma1,
           (m.stable_rank - s.med_r) / nullif(1.4826 * s.mad_r, 0) AS z_stable_rank
    FROM m JOIN s USING (adapter_id)""")

register_view("peer_zscores", f"""
    WITH f AS (
        SELECT a.adapter_id, any_value(a.base_model) AS base_model, any_value(a.method) AS method,
               ln(sum(m.fro_norm * m.fro_norm)) AS log_energy, ln(max(m.spectral_norm)) AS log_max_sigma1,
               avg(m.top1_energy) AS mean_top1_energy, avg(m.stable_rank) AS mean_stable_rank
        FROM latest_adapters a JOIN latest_modules m USING (adapter_id, unit_id)
        WHERE a.status IN ('ok', 'partial') GROUP BY a.adapter_id HAVING max(m.spectral_norm) > 0
    ), healthy AS (
        SELECT f.* FROM f JOIN latest_adapters a USING (adapter_id)
        WHERE json_extract_string(a.card_labels, '$.objective') = 'healthy'
           OR f.adapter_id IN (SELECT adapter_id FROM current_verdicts WHERE outcome = 'healthy')
    ), fl AS (UNPIVOT f ON {", ".join(FEATURES)} INTO NAME feature VALUE value),
    hl AS (UNPIVOT healthy ON {", ".join(FEATURES)} INTO NAME feature VALUE value)
    SELECT fl.adapter_id, fl.base_model, fl.method, fl.feature, any_value(fl.value) AS value,
           median(hl.value) AS peer_median, mad(hl.value) AS peer_mad, count(hl.value) AS n_peers,
           CASE WHEN count(hl.value) >= 3
                THEN (any_value(fl.value) - median(hl.value)) / nullif(1.4826 * mad(hl.value), 0) END AS z
    FROM fl LEFT JOIN hl ON hl.feature = fl.feature AND hl.adapter_id <> fl.adapter_id
        AND hl.method = fl.method AND hl.base_model IS NOT DISTINCT FROM fl.base_model
    GROUP BY fl.adapter_id, fl.base_model, fl.method, fl.feature""")

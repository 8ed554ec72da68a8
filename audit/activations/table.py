"""The ``activation_layers`` view: one row per adapter × layer of the newest ``activations`` unit
(``delta_norm``, ``delta_share``, ``delta_refusal_cosine``, ``cka``) beside the bare base's
``base_residual_norm`` at that layer (same base revision and analyzer params)."""

from __future__ import annotations

from audit.store.views import register_view

register_view("activation_layers", """
    SELECT p.adapter_id, any_value(p.repo_id) AS repo_id, p.layer, any_value(p.base_model) AS base_model,
           max(p.value) FILTER (p.metric = 'delta_norm') AS delta_norm,
           max(p.value) FILTER (p.metric = 'delta_share') AS delta_share,
           max(p.value) FILTER (p.metric = 'delta_refusal_cosine') AS delta_refusal_cosine,
           max(p.value) FILTER (p.metric = 'cka') AS cka,
           max(b.value) AS base_residual_norm,
           any_value(p.probe_version) AS analyzer_version, any_value(p.unit_id) AS unit_id
    FROM latest_probes p LEFT JOIN probes b
      ON b.subject = 'base' AND b.probe = 'activations' AND b.metric = 'residual_norm'
     AND b.base_revision = p.base_revision AND b.layer = p.layer AND b.params_sha256 = p.params_sha256
    WHERE p.subject = 'adapter' AND p.probe = 'activations' AND p.layer IS NOT NULL
      AND p.metric IN ('delta_norm', 'delta_share', 'delta_refusal_cosine', 'cka')
    GROUP BY p.adapter_id, p.layer""")

"""The tables and views of the ``activations`` analyzer.

- ``activation_layers``: one row per adapter × layer of the newest ``activations`` unit
  (``delta_norm``, ``delta_share``, ``delta_refusal_cosine``, ``cka``) beside the bare base's
  ``base_residual_norm`` at that layer (same base revision and analyzer params);
- ``sae_features`` (table) and ``latest_sae_features`` (the newest unit's rows): the SAE features
  each adapter turned on and off most, per SAE layer, with their labels;
- ``sae_layers``: one row per adapter × SAE layer: feature density base and adapted, how much of
  the delta activation the base's SAE reconstructs, the delta's alignment with the SAE's features
  and its random baseline, beside the SAE's own quality;
- ``sae_quality``: each base revision's SAEs, per layer: explained variance, L0 and dead share on
  held-out tokens.
"""

from __future__ import annotations

from datetime import datetime

from audit.records import Record
from audit.store.schema import record_schema, register_table
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


class SaeFeatureRow(Record):
    """One SAE feature an adapter turned on or off at one layer (``sae_features``)."""

    unit_id: str
    adapter_id: str
    repo_id: str
    base_revision: str
    sae: str
    """The SAE artifact's path in the store (:mod:`audit.activations.sae_store`)."""
    layer: int
    direction: str
    """``on`` (the adapter raised the feature's mean activation) or ``off``."""
    rank: int
    """1 for the largest change in its direction."""
    feature: int
    base_mean: float
    """Mean activation over the prompts' content tokens, bare base."""
    adapted_mean: float
    change: float
    """``adapted_mean − base_mean``."""
    forbidden_share: float | None
    """Share of the feature's top-activating corpus prompts that are forbidden."""
    label: str
    """From its top-activating corpus prompts (:func:`audit.activations.sae_corpus.feature_label`)."""
    created_at: datetime


register_table("sae_features", record_schema(SaeFeatureRow), "created_date", ("unit_id", "layer", "direction", "rank"))
register_view("latest_sae_features", """
    SELECT f.* FROM sae_features_all f
    WHERE f.unit_id IN (SELECT unit_id FROM latest_probes WHERE probe = 'activations')""")
register_view("sae_layers", """
    SELECT p.adapter_id, any_value(p.repo_id) AS repo_id, p.layer, any_value(p.base_model) AS base_model,
           max(p.value) FILTER (p.metric = 'sae_density_base') AS density_base,
           max(p.value) FILTER (p.metric = 'sae_density_adapted') AS density_adapted,
           max(p.value) FILTER (p.metric = 'sae_delta_reconstruction') AS delta_reconstruction,
           max(p.value) FILTER (p.metric = 'sae_delta_alignment') AS delta_alignment,
           max(p.value) FILTER (p.metric = 'sae_alignment_baseline') AS alignment_baseline,
           max(q.value) FILTER (q.metric = 'sae_explained_variance') AS sae_explained_variance,
           max(q.value) FILTER (q.metric = 'sae_l0') AS sae_l0,
           any_value(p.probe_version) AS analyzer_version, any_value(p.unit_id) AS unit_id
    FROM latest_probes p LEFT JOIN probes q
      ON q.subject = 'base' AND q.probe = 'activations' AND q.base_revision = p.base_revision
     AND q.layer = p.layer AND q.params_sha256 = p.params_sha256 AND q.metric LIKE 'sae_%'
    WHERE p.subject = 'adapter' AND p.probe = 'activations' AND p.metric LIKE 'sae_%' AND p.layer IS NOT NULL
    GROUP BY p.adapter_id, p.layer""")
register_view("sae_quality", """
    SELECT base_model, base_revision, layer, params_sha256,
           max(value) FILTER (metric = 'sae_explained_variance') AS explained_variance,
           max(value) FILTER (metric = 'sae_l0') AS l0,
           max(value) FILTER (metric = 'sae_dead_fraction') AS dead_fraction,
           max(n) AS n_heldout_tokens, any_value(unit_id) AS unit_id
    FROM probes WHERE subject = 'base' AND probe = 'activations' AND metric LIKE 'sae_%'
    GROUP BY base_model, base_revision, layer, params_sha256""")

"""The store table of directional measures, one row per adapter module (``module_directions``).

The rows of one adapter are written as one file just before the analysis unit that owns them
(``analyses``, analyzer ``directions``); the views only show rows whose unit is committed, so a
crash between the two leaves nothing visible and a rerun writes both again.

- ``module_directions``: the rows of committed units (first committed unit per adapter, version
  and settings, as in ``analyses``);
- ``latest_module_directions``: those of each adapter's newest ``directions`` unit.
"""

from __future__ import annotations

from datetime import datetime

from audit.records import Record
from audit.store.schema import record_schema, register_table
from audit.store.views import register_view


class DirectionRow(Record):
    """The directional measures of one module of one adapter (:mod:`audit.directions.maths`)."""

    unit_id: str
    adapter_id: str
    repo_id: str
    analyzer_version: str
    base_model: str
    base_revision: str
    module: str
    layer: int | None
    module_type: str
    role: str
    """``write`` (adds to the residual stream) or ``read`` (reads it)."""
    d_out: int
    d_in: int
    rank: int
    fro_norm: float
    """``‖ΔW‖F`` in the units of the weights."""
    along_norm: float
    """``‖r̂ᵀΔW‖`` (writer) or ``‖ΔW r̂‖`` (reader)."""
    energy_share: float | None
    """``along_norm² / fro_norm²`` in [0, 1]; ``None`` for a zero delta."""
    random_share: float
    """What a random direction gets in expectation: ``1/d`` of the direction's space."""
    reversion: float | None
    """Writers: ``r̂ᵀ·ΔW·x̄`` over the base's mean forbidden input ``x̄`` (negative: away from refusal)."""
    reversion_cosine: float | None
    """Writers: ``r̂ᵀΔWx̄ / ‖ΔWx̄‖`` in [-1, 1]."""
    created_at: datetime


MODULE_DIRECTIONS = record_schema(DirectionRow)
register_table("module_directions", MODULE_DIRECTIONS, "created_date", ("unit_id", "module"))

register_view("module_directions", """
    SELECT d.* FROM module_directions_all d
    WHERE d.unit_id IN (SELECT unit_id FROM analyses WHERE analyzer = 'directions')""")
register_view("latest_module_directions", """
    SELECT d.* FROM module_directions d WHERE d.unit_id IN (
        SELECT unit_id FROM analyses WHERE analyzer = 'directions' AND status IN ('ok', 'partial')
        QUALIFY row_number() OVER (PARTITION BY adapter_id ORDER BY created_at DESC) = 1)""")

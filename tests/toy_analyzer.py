"""A complete analyzer as a plugin package would write one (see README "Adding an analyzer"):
the class, its table and views, its feature set, and the one registration call, from an
entry point's ``register`` function. It measures nothing deep: the listed file sizes of an adapter.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from audit.analyzers.analysis import MetricRow
from audit.analyzers.base import AnalyzerContext, Resources, Target, register_analyzer
from audit.analyzers.results import make_unit
from audit.features.base import FeatureSet
from audit.records import Record
from audit.store.schema import record_schema, register_table
from audit.store.views import register_view

NAME = "toy_file_sizes"


class FileSizeRow(Record):
    """One listed file of one adapter."""

    unit_id: str
    adapter_id: str
    file: str
    size: int | None
    created_at: datetime


class FileSizes:
    """The sizes of the files an adapter's registry lists (no download, no base model)."""

    name, version, needs_base = NAME, "toy-1", False
    resources = Resources(num_cpus=1)

    def setup(self, ctx: AnalyzerContext) -> None:
        self.ctx = ctx

    def run(self, target: Target):
        assert target.ref is not None
        sizes = [f.size or 0 for f in target.ref.files]
        unit = make_unit(self, target, "ok", probes=[MetricRow(metric="n_files", value=float(len(sizes))),
                                                     MetricRow(metric="total_bytes", value=float(sum(sizes)))])
        rows = [FileSizeRow(unit_id=unit.unit_id, adapter_id=unit.adapter_id, file=f.name, size=f.size,
                            created_at=unit.created_at) for f in target.ref.files]
        self.ctx.store.write_rows("toy_file_sizes", rows, unit.unit_id, unit.created_at)
        return unit


def register_tables() -> None:
    register_table("toy_file_sizes", record_schema(FileSizeRow), "created_date", ("unit_id", "file"))
    register_view("latest_toy_file_sizes", f"""
        SELECT f.* FROM toy_file_sizes_all f WHERE f.unit_id IN (
            SELECT unit_id FROM analyses WHERE analyzer = '{NAME}'
            QUALIFY row_number() OVER (PARTITION BY adapter_id ORDER BY created_at DESC) = 1)""")


register_tables()  # the module named in ``tables=``: importing it registers them


def _names() -> list[str]:
    return ["toy.n_files", "toy.log_total_bytes"]


def _compute(con, adapter_ids: list[str]):
    X = np.full((len(adapter_ids), 2), np.nan)
    row_of = {a: i for i, a in enumerate(adapter_ids)}
    for adapter_id, n, total in con.execute(
            "SELECT adapter_id, count(*), sum(size) FROM latest_toy_file_sizes GROUP BY adapter_id").fetchall():
        if adapter_id in row_of:
            X[row_of[adapter_id]] = (n, np.log(total + 1.0))
    return adapter_ids, X


FEATURES = FeatureSet("toy-v1", _names, _compute, lambda X: ~np.isnan(X[:, 0]))


def register() -> None:
    """The entry point (group ``lora_audit.analyzers``): one call."""
    register_analyzer(NAME, "toy_analyzer:FileSizes", tables=("toy_analyzer",), feature_set="toy_analyzer:FEATURES")

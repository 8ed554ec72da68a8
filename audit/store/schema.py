"""Arrow schemas of the store's files. The views built on them (see :mod:`audit.store.views`) carry
the public column names: add columns, never rename.

Two kinds of files:

- a **unit** file (``units/``): one row per finished unit of work, the ``adapters`` columns plus
  the unit's modules and findings as nested lists. One file holds the whole unit, so a unit is
  committed or absent, never half there;
- a **run** file (``runs/``): one state of a run (its counts) plus the findings met while listing.

Other features add plain tables with :func:`register_table`.
"""

from __future__ import annotations

from audit.pyarrow_without_pandas import pa

TS = pa.timestamp("us", tz="UTC")

ADAPTER_FIELDS = [
    ("adapter_id", pa.string()), ("repo_id", pa.string()), ("revision", pa.string()),
    ("registry", pa.string()), ("kind", pa.string()), ("base_model", pa.string()), ("peft_type", pa.string()),
    ("task_type", pa.string()), ("method", pa.string()), ("method_source", pa.string()),
    ("r", pa.int64()), ("lora_alpha", pa.float64()), ("use_rslora", pa.bool_()), ("use_dora", pa.bool_()),
    ("target_modules", pa.list_(pa.string())), ("n_modules", pa.int64()), ("weights_bytes", pa.int64()),
    ("weights_file", pa.string()), ("weights_format", pa.string()), ("dtypes", pa.list_(pa.string())),
    ("tags", pa.list_(pa.string())), ("card_labels", pa.string()), ("status", pa.string()),
    ("n_findings", pa.int64()), ("analyzer_version", pa.string()), ("audited_at", TS), ("unit_id", pa.string()),
    ("base_model_source", pa.string()),
]

MODULE_FIELDS = [
    ("module", pa.string()), ("layer", pa.int64()), ("module_type", pa.string()),
    ("kind", pa.string()), ("d_out", pa.int64()), ("d_in", pa.int64()), ("rank", pa.int64()),
    ("config_rank", pa.int64()), ("scale", pa.float64()), ("transposed", pa.bool_()), ("dora", pa.bool_()),
    ("dtype", pa.string()), ("singular_values", pa.list_(pa.float64())), ("truncated", pa.bool_()),
    ("fro_norm", pa.float64()), ("spectral_norm", pa.float64()), ("stable_rank", pa.float64()),
    ("effective_rank", pa.float64()), ("spectral_entropy", pa.float64()), ("top1_energy", pa.float64()),
    ("nuclear_norm", pa.float64()), ("block", pa.string()),
]
"""Per-module columns; the ``modules`` view adds ``adapter_id``, ``analyzer_version``, ``unit_id``."""

FINDING_FIELDS = [
    ("stage", pa.string()), ("severity", pa.string()), ("code", pa.string()), ("message", pa.string()),
    ("file", pa.string()), ("module", pa.string()), ("created_at", TS),
]
"""Per-finding columns; the ``findings`` view adds ``adapter_id``, ``repo_id``, ``analyzer_version``,
``unit_id``."""

RUN_FINDING_FIELDS = [("repo_id", pa.string()), *FINDING_FIELDS]

RUN_FIELDS = [
    ("run_id", pa.string()), ("started_at", TS), ("finished_at", TS), ("registry", pa.string()),
    ("n_listed", pa.int64()), ("n_new", pa.int64()), ("n_audited", pa.int64()), ("n_failed", pa.int64()),
    ("status", pa.string()), ("analyzer_version", pa.string()), ("updated_at", TS), ("report_path", pa.string()),
]

UNITS = pa.schema([*ADAPTER_FIELDS, ("modules", pa.list_(pa.struct(MODULE_FIELDS))),
                   ("findings", pa.list_(pa.struct(FINDING_FIELDS)))])
RUNS = pa.schema([*RUN_FIELDS, ("findings", pa.list_(pa.struct(RUN_FINDING_FIELDS)))])

TABLES: dict[str, pa.Schema] = {"units": UNITS, "runs": RUNS}
"""Every file kind of the store and its schema. Later features register theirs."""

PARTITION = {"units": "audit_date", "runs": "run_date"}
"""The hive partition key of each table (a date)."""

DEDUP_KEYS: dict[str, tuple[str, ...]] = {"units": ("unit_id",), "runs": ("run_id", "updated_at")}
"""Columns that identify a row: a row found twice (a unit left behind by an interrupted
compaction) is read once."""


def register_table(name: str, schema: pa.Schema, partition: str, keys: tuple[str, ...]) -> None:
    """Declare another table of the store: its schema, hive partition key (a date) and row key."""
    TABLES[name] = schema
    PARTITION[name] = partition
    DEDUP_KEYS[name] = keys


def names(fields: list[tuple[str, pa.DataType]]) -> list[str]:
    return [n for n, _ in fields]


def record_schema(record) -> pa.Schema:
    """The Arrow schema of a flat pydantic record class: ``str``/``int``/``float``/``bool``/
    ``datetime`` fields (optional ones nullable) as string/int64/float64/bool/UTC timestamps.

    Raises:
        StopIteration: a field of another type (a nested record needs its own schema).
    """
    from datetime import datetime

    types = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(), datetime: TS}
    fields = []
    for name, field in record.model_fields.items():
        ann = field.annotation
        base = next(t for t in types if ann is t or t in (getattr(ann, "__args__", None) or ()))
        fields.append((name, types[base]))
    return pa.schema(fields)


MODULE_KEYS = frozenset(names(MODULE_FIELDS))
"""The keys of a :class:`audit.records.ModuleRow` that a unit file stores (its nested modules)."""
FINDING_KEYS = frozenset(names(FINDING_FIELDS))
"""The keys of a finding in a unit file."""
RUN_FINDING_KEYS = frozenset(names(RUN_FINDING_FIELDS))
"""The keys of a finding in a run file."""

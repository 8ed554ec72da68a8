"""Arrow schemas of the store's tables. Column names are a public contract: add, never rename.

Each schema mirrors a row record of :mod:`audit.records`; ``tests/test_store.py`` checks that
they agree.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

ADAPTERS = pa.schema([
    ("adapter_id", pa.string()), ("repo_id", pa.string()), ("revision", pa.string()),
    ("registry", pa.string()), ("base_model", pa.string()), ("peft_type", pa.string()),
    ("task_type", pa.string()), ("method", pa.string()), ("method_source", pa.string()),
    ("r", pa.int64()), ("lora_alpha", pa.float64()), ("use_rslora", pa.bool_()), ("use_dora", pa.bool_()),
    ("target_modules", pa.list_(pa.string())), ("n_modules", pa.int64()), ("weights_bytes", pa.int64()),
    ("weights_file", pa.string()), ("weights_format", pa.string()), ("dtypes", pa.list_(pa.string())),
    ("tags", pa.list_(pa.string())), ("card_labels", pa.string()), ("status", pa.string()),
    ("n_findings", pa.int64()), ("analyzer_version", pa.string()), ("audited_at", TS), ("unit_id", pa.string()),
])

MODULES = pa.schema([
    ("adapter_id", pa.string()), ("module", pa.string()), ("layer", pa.int64()), ("module_type", pa.string()),
    ("kind", pa.string()), ("d_out", pa.int64()), ("d_in", pa.int64()), ("rank", pa.int64()),
    ("config_rank", pa.int64()), ("scale", pa.float64()), ("transposed", pa.bool_()), ("dora", pa.bool_()),
    ("dtype", pa.string()), ("singular_values", pa.list_(pa.float64())), ("truncated", pa.bool_()),
    ("fro_norm", pa.float64()), ("spectral_norm", pa.float64()), ("stable_rank", pa.float64()),
    ("effective_rank", pa.float64()), ("spectral_entropy", pa.float64()), ("top1_energy", pa.float64()),
    ("nuclear_norm", pa.float64()), ("analyzer_version", pa.string()), ("unit_id", pa.string()),
])

FINDINGS = pa.schema([
    ("adapter_id", pa.string()), ("repo_id", pa.string()), ("stage", pa.string()), ("severity", pa.string()),
    ("code", pa.string()), ("message", pa.string()), ("file", pa.string()), ("module", pa.string()),
    ("analyzer_version", pa.string()), ("created_at", TS), ("unit_id", pa.string()),
])

RUNS = pa.schema([
    ("run_id", pa.string()), ("started_at", TS), ("finished_at", TS), ("registry", pa.string()),
    ("n_listed", pa.int64()), ("n_new", pa.int64()), ("n_audited", pa.int64()), ("n_failed", pa.int64()),
    ("status", pa.string()), ("analyzer_version", pa.string()), ("updated_at", TS),
])

TABLES: dict[str, pa.Schema] = {"adapters": ADAPTERS, "modules": MODULES, "findings": FINDINGS, "runs": RUNS}
"""Base tables written by scans. Later features register theirs with :func:`register_table`."""

PARTITION = {"adapters": "audit_date", "modules": "audit_date", "findings": "audit_date", "runs": "run_date"}


def register_table(name: str, schema: pa.Schema, partition: str) -> None:
    """Declare another table of the store (its schema and its hive partition key)."""
    TABLES[name] = schema
    PARTITION[name] = partition

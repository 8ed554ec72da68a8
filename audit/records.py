"""Typed, frozen records for everything that crosses a boundary (registry -> worker -> store).

Row records mirror the store's tables one to one (see :mod:`audit.store.schema`); their field
names are a public contract. Timestamps are timezone-aware UTC ``datetime`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from audit.findings import Severity

AdapterStatus = Literal["ok", "partial", "inert", "unsupported", "failed"]
"""``ok``: every LoRA module measured; ``partial``: some modules skipped (see findings);
``inert``: measured, but no module would take effect when peft loads the adapter (every delta
zero, tensor names peft would not match, nothing selected by ``target_modules``);
``unsupported``: a well-formed adapter of a kind without a delta spectrum (prompt tuning, IA3...);
``failed``: nothing could be measured (see findings)."""


def utcnow() -> datetime:
    """The current time, timezone-aware UTC, at microsecond resolution (what Parquet stores)."""
    return datetime.now(UTC)


def new_id() -> str:
    """A fresh random identifier (32 hex characters) for a unit of work or a run."""
    return uuid.uuid4().hex


class Record(BaseModel):
    # attribute docstrings document the fields in the source; use_attribute_docstrings would copy them
    # into the schema by reading the source with inspect at import (0.2 s of every command)
    model_config = ConfigDict(frozen=True, extra="forbid")


class FileEntry(Record):
    """One file of an adapter as the registry lists it (before anything is read)."""

    name: str
    """Path relative to the adapter's folder, ``/``-separated."""
    size: int | None = None
    """Size in bytes as the registry declares it, or ``None`` when unknown."""


class AdapterRef(Record):
    """What a registry listing yields: identity and location of one adapter at one revision."""

    repo_id: str
    """Repository id: the folder path relative to a local registry, or ``org/name`` on a hub."""
    revision: str
    """Commit sha on a hub; for a local folder, sha256 of the files that matter."""
    registry: str
    """Which registry it came from, e.g. ``local:/data/adapters`` or ``hub:my-org``."""
    local_dir: str | None = None
    """Folder on this machine holding the files, or ``None`` until fetched."""
    files: tuple[FileEntry, ...] = ()
    """The files the registry lists for this revision."""
    kind: Literal["adapter", "full_finetune"] = "adapter"
    """``adapter`` for PEFT adapters, ``full_finetune`` for full fine-tunes of a base model."""

    @property
    def adapter_id(self) -> str:
        """``repo_id@revision``: the key of every row about this adapter."""
        return f"{self.repo_id}@{self.revision}"


class AdapterRow(Record):
    """One row of the ``adapters`` table: one audit of one adapter revision."""

    adapter_id: str
    """``repo_id@revision``."""
    repo_id: str
    revision: str
    registry: str
    kind: str = "adapter"
    """``adapter`` (a PEFT adapter) or ``full_finetune`` (full weights compared with their base)."""
    base_model: str | None
    """``base_model_name_or_path`` from the config, else the model card's ``base_model``."""
    peft_type: str | None
    """peft's ``PeftType`` name: ``LORA``, ``IA3``, ``PROMPT_TUNING``...; ``None`` if unreadable."""
    task_type: str | None
    method: str
    """Declared training method (``sft``, ``dpo``, ``steering``, ...) or ``unknown``."""
    method_source: str
    """Where ``method`` was read: ``card:lora_audit``, ``card:tags``, or ``none``."""
    r: int | None
    lora_alpha: float | None
    use_rslora: bool | None
    use_dora: bool | None
    target_modules: list[str] | None
    """Config's target modules (a one-element list when the config gives a regex)."""
    n_modules: int
    """Number of LoRA modules measured (rows in ``modules``)."""
    weights_bytes: int | None
    """Size of the weights file in bytes."""
    weights_file: str | None
    weights_format: str | None
    """``safetensors``, ``pickle`` (never loaded) or ``lfs_pointer``."""
    dtypes: list[str]
    """Storage dtypes of the LoRA tensors (``F32``, ``BF16``, ...)."""
    tags: list[str]
    """Model card tags."""
    card_labels: str | None
    """The model card's ``lora_audit:`` mapping (ground truth of labelled adapters) as JSON."""
    status: str
    """See :data:`AdapterStatus`."""
    n_findings: int
    analyzer_version: str
    audited_at: datetime
    unit_id: str
    """The unit of work that wrote this row (joins ``modules`` and ``findings``)."""
    base_model_source: str | None = None
    """Where ``base_model`` was read: ``config`` (``base_model_name_or_path``), ``card`` (the model
    card's ``base_model``), or ``None`` when neither names one."""


class ModuleRow(Record):
    """One row of the ``modules`` table: the delta spectrum of one LoRA module."""

    adapter_id: str
    module: str
    """Module path in the base model, e.g. ``model.layers.3.self_attn.q_proj``."""
    layer: int | None
    """Index of the layer within its ``block`` (first integer in the path), or ``None``."""
    module_type: str
    """Last path component: ``q_proj``, ``c_attn``, ``query``..."""
    kind: str
    """``linear``, ``embedding`` or ``conv``."""
    d_out: int
    """Output features of the delta weight (rows of ``B``)."""
    d_in: int
    """Input features of the delta weight (columns of ``A``, flattened for convolutions)."""
    rank: int
    """Rank of the stored factors (rows of ``A``)."""
    config_rank: int | None
    """Rank the config declares for this module (``r`` or its ``rank_pattern`` entry)."""
    scale: float
    """``lora_alpha / r`` (``/ sqrt(r)`` for rsLoRA), after ``rank_pattern``/``alpha_pattern``."""
    transposed: bool
    """True when the base layer stores the transpose (``fan_in_fan_out``: GPT-2 Conv1D; embeddings)."""
    dora: bool
    """True when the module carries a DoRA magnitude vector (not applied: it needs the base weight)."""
    dtype: str
    singular_values: list[float]
    """sigma_1 >= ... >= sigma_k of the delta weight (k = min(rank, d_out, d_in))."""
    truncated: bool
    """True when ``singular_values`` is a top-k (randomized) spectrum rather than the full one."""
    fro_norm: float
    spectral_norm: float
    stable_rank: float | None
    effective_rank: float | None
    spectral_entropy: float | None
    top1_energy: float | None
    nuclear_norm: float
    block: str | None = None
    """The stack ``layer`` counts in: the path before the layer index (``model.layers``,
    ``model.encoder.layers``, ``down_blocks``...), or ``None``."""
    analyzer_version: str
    unit_id: str


class FindingRow(Record):
    """One row of the ``findings`` table."""

    adapter_id: str | None
    """``repo_id@revision``; ``None`` when the revision could not be determined."""
    repo_id: str
    stage: str
    """Where it was found: ``list``, ``fetch``, ``config``, ``weights``, ``spectra``, ``card``..."""
    severity: Severity
    code: str
    """Stable machine-readable code, see :class:`audit.findings.Code`."""
    message: str
    file: str | None
    module: str | None = None
    analyzer_version: str
    created_at: datetime
    unit_id: str


class RunRow(Record):
    """One row of the ``runs`` table (a run writes one at start and one at the end)."""

    run_id: str
    started_at: datetime
    finished_at: datetime | None
    registry: str
    n_listed: int | None
    n_new: int | None
    n_audited: int | None
    n_failed: int | None
    status: str
    """``running``, ``completed`` or ``failed``."""
    analyzer_version: str
    updated_at: datetime = Field(default_factory=utcnow)
    report_path: str | None = None
    """Where the nightly flow wrote this run's HTML report (beside the store), once written."""


class AuditResult(Record):
    """Everything one unit of work (one adapter revision) produced; written to the store as a unit."""

    adapter: AdapterRow
    modules: tuple[ModuleRow, ...]
    findings: tuple[FindingRow, ...]

    @property
    def status(self) -> str:
        return self.adapter.status


@dataclass(frozen=True)
class Deferred:
    """An analyzer's result on one target that failed for a transient reason (network, I/O): not
    written; the next scan tries again."""

    ref: AdapterRef | None
    error: str

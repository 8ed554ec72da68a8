"""Typed records of the analyzers other than spectra (behaviour probes, reference directions).

One :class:`AnalysisUnit` is what one analyzer produced for one subject (an adapter revision, or
a bare base model at one revision): its metric rows, the answers it judged and its findings. It
is written to the store as one file (see :mod:`audit.analyzers.table`), so it is committed whole
or not at all; the views ``probes``, ``probe_samples`` and ``findings`` unnest it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from audit.records import FindingRow, Record

Subject = Literal["adapter", "base"]

UnitStatus = Literal["ok", "partial", "skipped", "failed"]
"""``ok``: every metric measured; ``partial``: some (see findings); ``skipped``: the analyzer does
not apply (no base model at hand; a finding says why); ``failed``: it could not run (findings)."""


def sha256_text(text: str) -> str:
    """Hex sha256 of a UTF-8 string (prompt identities)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def base_key(name: str, revision: str) -> str:
    """The ``adapter_id`` under which a bare base model's rows are stored: ``base:<name>@<revision>``."""
    return f"base:{name}@{revision}"


class MetricRow(Record):
    """One measured metric of one analyzer (a behaviour probe, the directional measures) on one
    subject: one row of the ``probes`` view (the stored column keeps its first name, ``probes``, so
    stores written before stay readable)."""

    metric: str
    """``harmful_compliance``, ``benign_refusal``, ``harmful_compliance_rank1``, ``shift_norm``,
    ``caa_cosine``... (see README)."""
    value: float | None
    """The metric's value (a rate in [0, 1], a norm in the residual stream's units, a cosine)."""
    n: int | None = None
    """Trials behind a rate (prompts judged), or prompts averaged over."""
    ci_low: float | None = None
    """Lower end of the Wilson 95% interval of a rate (``scipy.stats.binomtest``)."""
    ci_high: float | None = None
    layer: int | None = None
    """Decoder layer (0-based) for per-layer metrics, else ``None``."""
    judge: str | None = None
    """The judge that labelled the answers behind a rate."""


class ProbeSampleRow(Record):
    """One judged answer (one row of the ``probe_samples`` view): a new judge can re-score it."""

    variant: str
    """Which model answered: ``adapter`` (the adapter as trained), ``rank1`` (every ΔW cut to its
    top singular component), ``base`` (the bare base)."""
    prompt_id: str
    """``<prompt set>:<index>``."""
    prompt_sha256: str
    answer: str
    """The answer, or the prefix of it that fixed the judge's verdict (see ``stopped``)."""
    judged: str
    """``complied`` or ``refused``."""
    judge: str
    n_tokens: int
    stopped: str
    """``eos``, ``max_new_tokens`` or ``decided`` (the judge's verdict could no longer change)."""


class AnalysisUnit(Record):
    """Everything one analyzer produced for one subject; written to the store as one file."""

    unit_id: str
    adapter_id: str
    """``repo_id@revision`` of the adapter, or :func:`base_key` for a bare base."""
    repo_id: str
    """The adapter's repository id, or the base model's name."""
    subject: Subject
    analyzer: str
    """Registered analyzer name (``harmful_compliance``...)."""
    analyzer_version: str
    params: str
    """How the analyzer was built: :meth:`audit.plugins.PluginInfo.to_json`."""
    params_sha256: str
    """sha256 of ``params``: part of the unit's identity with adapter, analyzer and version."""
    base_model: str | None
    base_revision: str | None
    status: UnitStatus
    created_at: datetime
    seconds: float
    """Wall time the analyzer spent on this subject (its share of a pooled batch)."""
    probes: tuple[MetricRow, ...] = ()
    """The unit's metric rows (every analyzer's, not only the probes': the stored name is kept)."""
    samples: tuple[ProbeSampleRow, ...] = ()
    findings: tuple[FindingRow, ...] = ()

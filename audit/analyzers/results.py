"""The stored result of one analyzer on one target (an :class:`AnalysisUnit`), built the same way
by every analyzer: its identity (adapter, analyzer, version, params), rows and findings; and the
results of an analyzer that could not run (failed, skipped for want of a base model)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.analyzers.analysis import AnalysisUnit, MetricRow, ProbeSampleRow
from audit.analyzers.base import Analyzer, AnalyzerContext, Target, params_json, params_sha256
from audit.errors import AuditError
from audit.findings import Note
from audit.records import FindingRow, new_id, utcnow

if TYPE_CHECKING:
    from audit.registry.bases import BaseSource


def fetch_folder(ctx: AnalyzerContext, target: Target) -> Path:
    """The local folder holding the target adapter's files, fetched through the registry its ref
    names (opened once per actor).

    Raises:
        TransientAuditError: a transient registry or I/O failure (the unit is retried next run).
        PermanentAuditError: the adapter cannot be had (access denied, deleted...).
    """
    from audit.errors import PermanentAuditError, TransientAuditError
    from audit.registry import open_registry

    ref = target.ref
    assert ref is not None
    registries = ctx.shared.setdefault("registries", {})
    if ctx.registry is not None and ctx.registry.name == ref.registry:
        registry = ctx.registry
    else:
        registry = registries.get(ref.registry) or registries.setdefault(ref.registry, open_registry(ref.registry))
    try:
        fetched = registry.fetch(ref) if ref.local_dir is None else ref
    except OSError as exc:
        if isinstance(exc, PermanentAuditError):  # AccessDeniedError is also a PermissionError
            raise
        raise TransientAuditError(str(exc)) from None
    if fetched.local_dir is None:
        raise PermanentAuditError("the registry gave no local files", code="not_found")
    return Path(fetched.local_dir)


def make_unit(probe, target: Target, status: str, *, probes: list[MetricRow] = (),
              samples: list[ProbeSampleRow] = (), notes: list[Note] = (), seconds: float = 0.0) -> AnalysisUnit:
    """The unit of ``probe`` on ``target``: identity (adapter, analyzer, version, params), rows, findings."""
    unit_id, now = new_id(), utcnow()
    key = target.key
    repo_id = target.ref.repo_id if target.ref is not None else (target.base.name if target.base else key)
    findings = tuple(FindingRow(adapter_id=key, repo_id=repo_id, stage="probe", severity=n.severity, code=n.code,
                                message=f"{probe.name}: {n.message}", file=n.file, module=n.module,
                                analyzer_version=probe.version, created_at=now, unit_id=unit_id) for n in notes)
    base = target.base
    return AnalysisUnit(
        unit_id=unit_id, adapter_id=key, repo_id=repo_id, subject=target.subject, analyzer=probe.name,
        analyzer_version=probe.version, params=params_json(probe), params_sha256=params_sha256(probe),
        base_model=base.name if base else None, base_revision=base.revision if base else None, status=status,
        created_at=now, seconds=seconds, probes=tuple(probes), samples=tuple(samples), findings=findings)


def error_note(exc: AuditError, severity: str | None = None) -> Note:
    from audit.findings import severity_of

    return Note("probe", exc.code, exc.message, severity or severity_of(exc.code), exc.file)


def unavailable_unit(probe, target: Target, declared: str | None, source: BaseSource | None = None) -> AnalysisUnit:
    """A row-less ``skipped`` unit: the adapter's base model is not on this machine. Its
    ``base_model_unavailable`` finding names the base's Hub id, its size when known (``source``: what
    :func:`audit.registry.bases.look_up_bases` learnt; without it, nothing was asked) and what would
    give a verdict."""
    from audit.registry.bases import BaseSource, hub_id_of

    if not declared:
        message = "the adapter names no base model; map one with --base-model NAME=PATH or LORA_AUDIT_BASE_MODELS"
    else:
        message = (source or BaseSource(name=declared, hub_id=hub_id_of(declared))).sentence()
    note = Note("probe", "base_model_unavailable", message, "info", "adapter_config.json")
    return make_unit(probe, target, "skipped", notes=[note])


def failed_output(a: Analyzer, target: Target, code: str, message: str) -> Any:
    """What ``a`` records for ``target`` when it could not run at all (its worker died): the
    analyzer's own ``failed(target, code, message)`` where it has one, else a failed
    ``AnalysisUnit`` with an error finding."""
    own = getattr(a, "failed", None)
    if own is not None:
        return own(target, code, message)
    return make_unit(a, target, "failed", notes=[Note("probe", code, message, "error")])

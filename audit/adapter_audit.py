"""The audit of one adapter revision's files: one :class:`AdapterRef` in, one :class:`AuditResult` out.

``audit_adapter`` is a plain function of an :class:`AdapterRef` whose files are on local disk; it
never raises for a bad adapter (every permanent problem becomes a finding and the status says how
far the audit got). Only transient errors (a file vanishing under it, an I/O error) propagate, so
that the orchestrator can retry them. The spectra analyzer (:mod:`audit.analyzers.spectra`) runs it
on every fetched LoRA adapter.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path

from audit.adapter.config import AdapterConfig, parse_adapter_config
from audit.adapter.measure import ModuleMeasurement, measure_adapter
from audit.adapter.weights import SafeWeights, WeightsLocation, locate_weights, refuse_unreadable
from audit.errors import (AdapterFormatError, LimitExceededError, PermanentAuditError, UnsafeFormatError,
                          UnsupportedAdapterError)
from audit.findings import Code, FindingLog, Note
from audit.limits import DEFAULT_LIMITS, Limits
from audit.records import AdapterRef, AdapterRow, AuditResult, FindingRow, ModuleRow, new_id, utcnow
from audit.registry.card import ModelCard, parse_card
from audit.version import ANALYZER_VERSION

CONFIG_NAME = "adapter_config.json"
CARD_NAME = "README.md"


def audit_adapter(ref: AdapterRef, *, limits: Limits = DEFAULT_LIMITS,
                  analyzer_version: str = ANALYZER_VERSION) -> AuditResult:
    """Audit one LoRA adapter revision from its files on local disk (a full fine-tune is audited by
    :func:`audit.finetune.audit_finetune`, same contract).

    Args:
        ref: the adapter; ``ref.local_dir`` must hold its files.
        limits: caps on what the files may declare.
        analyzer_version: written on every row (part of the audit's identity).

    Returns:
        An :class:`AuditResult`: one ``adapters`` row (always), its ``modules`` rows, its findings.

    Raises:
        ValueError: ``ref.local_dir`` is not set.
        OSError: a transient I/O failure (the orchestrator retries it).
    """
    if ref.local_dir is None:
        raise ValueError(f"{ref.adapter_id}: files are not on local disk (fetch the ref first)")
    folder = Path(ref.local_dir)
    unit_id = new_id()
    log = FindingLog()
    escaping = _escaping_links(folder, ref.registry)
    if escaping is not None:
        return failed_result(ref, UnsafeFormatError(
            f"{escaping} is a symlink out of the registry ({os.readlink(folder / escaping)[:200]!r}); "
            "nothing was read", code=Code.PATH_OUTSIDE_REGISTRY, file=escaping), "list",
            analyzer_version=analyzer_version)
    card = _read_card(folder, limits, log)
    config: AdapterConfig | None = None
    loc: WeightsLocation | None = None
    measured: list[ModuleMeasurement] = []
    dtypes: set[str] = set()
    status = "failed"
    try:
        config = read_config(folder, limits)
        _note_base_path(config.base_model_name_or_path or card.base_model, log)
        if config.unexpected_keys:
            log.add("config", Code.CONFIG_UNEXPECTED_KEYS,
                    f"keys unknown to this peft version, ignored: {list(config.unexpected_keys)}", file=CONFIG_NAME)
        loc = locate_weights(folder)
        if not config.is_lora:  # the peft type decides before the weight format
            if loc is not None and loc.format == "pickle":
                log.add("weights", Code.PICKLE_NOT_OPENED, f"weights are a pickle ({loc.size} bytes); "
                        "never opened (pickles can execute code)", file=loc.path.name)
            raise UnsupportedAdapterError(
                f"peft_type {config.peft_type} has no LoRA delta weight to measure", file=CONFIG_NAME)
        if loc is None:
            raise AdapterFormatError("no weights file (adapter_model.safetensors)", code="weights_missing")
        _note_extra_pickles(folder, loc, log, {f.name for f in ref.files})
        refuse_unreadable(loc)
        with SafeWeights(loc.path, limits) as weights:
            _check_ranks(weights, limits)
            measured = measure_adapter(weights, config, log)
            dtypes = {weights.tensors[n].dtype for n in weights.tensors if ".lora_" in n}
        if not measured:
            raise AdapterFormatError("no measurable LoRA module in the weights", code="no_lora_modules",
                                     file=loc.path.name)
        status = "partial" if _skipped_modules(log) else "ok"
        if _note_inert(measured, log, loc.path.name):
            status = "inert"
    except UnsupportedAdapterError as exc:
        log.add_error("config", exc)
        status = "unsupported"
    except PermanentAuditError as exc:
        log.add_error("weights" if exc.code not in ("config_invalid", "unknown_peft_type") else "config", exc)
        status = "failed"
    now = utcnow()
    notes = log.finish()
    adapter_row = _adapter_row(ref, card, config, loc, measured, sorted(dtypes), status, len(notes),
                               analyzer_version, now, unit_id)
    modules = tuple(_module_row(ref.adapter_id, m, analyzer_version, unit_id) for m in measured)
    findings = finding_rows(ref.repo_id, ref.adapter_id, notes, analyzer_version, now, unit_id)
    return AuditResult(adapter=adapter_row, modules=modules, findings=findings)


def failed_result(ref: AdapterRef, error: PermanentAuditError, stage: str, *,
                  analyzer_version: str = ANALYZER_VERSION) -> AuditResult:
    """The result of an adapter that could not even be fetched (access denied, deleted...)."""
    unit_id, now = new_id(), utcnow()
    log = FindingLog()
    log.add_error(stage, error)
    notes = log.finish()
    row = _adapter_row(ref, ModelCard(), None, None, [], [], "failed", len(notes), analyzer_version, now, unit_id)
    findings = finding_rows(ref.repo_id, ref.adapter_id, notes, analyzer_version, now, unit_id)
    return AuditResult(adapter=row, modules=(), findings=findings)


def finding_rows(repo_id: str, adapter_id: str | None, notes: list[Note], analyzer_version: str,
                 now: datetime, unit_id: str) -> tuple[FindingRow, ...]:
    """Tie notes to an adapter and a unit of work."""
    return tuple(
        FindingRow(adapter_id=adapter_id, repo_id=repo_id, stage=n.stage, severity=n.severity, code=n.code,
                   message=n.message, file=n.file, module=n.module, analyzer_version=analyzer_version,
                   created_at=now, unit_id=unit_id)
        for n in notes)


def _escaping_links(folder: Path, registry: str) -> str | None:
    """The first file of a local registry's adapter folder that is a symlink resolving outside the
    registry root (an upload must not make the scanner read the host's files), else ``None``."""
    if not registry.startswith("local:"):
        return None
    from audit.registry.local import link_escapes

    root = Path(registry.removeprefix("local:")).resolve()
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if link_escapes(Path(entry.path), root):
            return entry.name
    return None


def _read_bounded(path: Path, cap: int) -> bytes:
    size = path.stat().st_size
    if size > cap:
        raise LimitExceededError(f"{size} bytes, cap is {cap}", file=path.name)
    with open(path, "rb") as fh:
        return fh.read(cap + 1)


def _read_card(folder: Path, limits: Limits, log: FindingLog) -> ModelCard:
    path = folder / CARD_NAME
    if not path.is_file():
        return ModelCard()
    try:
        card = parse_card(_read_bounded(path, limits.max_card_bytes).decode("utf-8", errors="replace"))
        if card.problems:
            log.add("card", Code.CARD_INVALID, "; ".join(card.problems), file=CARD_NAME, severity="warning")
        return card
    except PermanentAuditError as exc:
        log.add("card", Code.CARD_INVALID, exc.message, file=CARD_NAME, severity="warning")
        return ModelCard()


def read_config(folder: Path, limits: Limits) -> AdapterConfig:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise AdapterFormatError("no adapter_config.json", code="config_missing", file=CONFIG_NAME)
    try:
        return parse_adapter_config(_read_bounded(path, limits.max_config_bytes), max_bytes=limits.max_config_bytes)
    except LimitExceededError as exc:
        raise exc.with_context(file=CONFIG_NAME) from None


def lora_weights(folder: Path, limits: Limits) -> tuple[AdapterConfig, WeightsLocation]:
    """The LoRA adapter in ``folder``: its parsed config and its weights file, checked readable
    (safetensors only; never a pickle), for the analyzers that read its factors.

    Raises:
        AdapterFormatError: no config or no weights file.
        UnsupportedAdapterError: not a LoRA adapter (no delta weight).
        UnsafeFormatError: the weights are a pickle.
        LimitExceededError: a config over its size cap.
    """
    config = read_config(folder, limits)
    if not config.is_lora:
        raise UnsupportedAdapterError(f"peft_type {config.peft_type}: no LoRA delta weight", file=CONFIG_NAME)
    loc = locate_weights(folder)
    if loc is None:
        raise AdapterFormatError("no weights file (adapter_model.safetensors)", code="weights_missing")
    refuse_unreadable(loc)
    return config, loc


def _check_ranks(weights: SafeWeights, limits: Limits) -> None:
    for info in weights.tensors.values():
        if ".lora_A" in info.name and info.shape and info.shape[0] > limits.max_rank:
            raise LimitExceededError(f"tensor {info.name} has rank {info.shape[0]}, cap is {limits.max_rank}",
                                     file=weights.path.name)


def _note_extra_pickles(folder: Path, loc: WeightsLocation, log: FindingLog, listed: set[str]) -> None:
    """Pickles beside safetensors weights: on disk, or listed by the registry but never fetched."""
    if loc.format != "safetensors":
        return
    for name in ("adapter_model.bin", "pytorch_model.bin"):
        if (folder / name).is_file() or name in listed:
            log.add("weights", Code.EXTRA_PICKLE_FILE,
                    f"{name} sits beside the safetensors weights; it was not read (pickles are never loaded)",
                    file=name)


_LOCAL_PATH = re.compile(r"^(/|~|\.{1,2}[/\\]|[A-Za-z]:[/\\]|\\\\)|\\")


def _note_base_path(base: str | None, log: FindingLog) -> None:
    """A base model named by a path on the author's machine (``/home/...``, ``./out``, ``C:\\...``)
    cannot be resolved by anyone else: say so (info; the audit goes on)."""
    if base and _LOCAL_PATH.search(base):
        log.add("config", Code.BASE_MODEL_UNRESOLVABLE, f"the base model is a local path on the author's machine "
                f"({base[:200]!r}): neither the Hub nor --base-model NAME=PATH can resolve it by that name",
                file=CONFIG_NAME)


def _note_inert(measured: list[ModuleMeasurement], log: FindingLog, file: str) -> bool:
    """Record which share of the measured modules would take effect when peft loads the adapter;
    ``True`` when none would (an ``adapter_inert`` error: the adapter does nothing)."""
    reasons: dict[str, int] = {}
    for m in measured:
        why = m.inert_reason
        if why is not None:
            reasons[why] = reasons.get(why, 0) + 1
    if not reasons:
        return False
    n_inert = sum(reasons.values())
    detail = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
    if n_inert == len(measured):
        log.add("spectra", Code.ADAPTER_INERT, f"none of the {len(measured)} modules would take effect when peft "
                f"loads the adapter ({detail})", file=file)
        return True
    log.add("spectra", Code.ADAPTER_PARTLY_INERT, f"{len(measured) - n_inert} of {len(measured)} modules "
            f"({(len(measured) - n_inert) / len(measured):.0%}) would take effect ({detail})", file=file)
    return False


_MODULE_SKIPS = {Code.LORA_PAIR_INCOMPLETE, Code.SHAPE_MISMATCH, Code.NONFINITE_WEIGHTS, Code.UNSUPPORTED_DTYPE}


def _skipped_modules(log: FindingLog) -> bool:
    return bool(log.codes() & {str(c) for c in _MODULE_SKIPS})


def _adapter_row(ref: AdapterRef, card: ModelCard, config: AdapterConfig | None, loc: WeightsLocation | None,
                 measured: list[ModuleMeasurement], dtypes: list[str], status: str, n_findings: int,
                 analyzer_version: str, now: datetime, unit_id: str) -> AdapterRow:
    targets = config.target_modules if config else None
    if isinstance(targets, str):
        targets = [targets]
    from_config = config.base_model_name_or_path if config else None
    base = from_config or card.base_model
    source = "config" if from_config else ("card" if card.base_model else None)
    return AdapterRow(
        adapter_id=ref.adapter_id, repo_id=ref.repo_id, revision=ref.revision, registry=ref.registry,
        kind=ref.kind, base_model=base or None, peft_type=config.peft_type if config else None,
        task_type=config.task_type if config else None, method=card.method, method_source=card.method_source,
        r=config.r if config else None, lora_alpha=config.lora_alpha if config else None,
        use_rslora=config.use_rslora if config else None, use_dora=config.use_dora if config else None,
        target_modules=list(targets) if targets is not None else None, n_modules=len(measured),
        weights_bytes=loc.size if loc else None, weights_file=loc.path.name if loc else None,
        weights_format=loc.format if loc else None, dtypes=dtypes, tags=list(card.tags),
        card_labels=card.labels_json, status=status, n_findings=n_findings,
        analyzer_version=analyzer_version, audited_at=now, unit_id=unit_id, base_model_source=source,
    )


def _module_row(adapter_id: str, m: ModuleMeasurement, analyzer_version: str, unit_id: str) -> ModuleRow:
    s = m.summary
    return ModuleRow(
        adapter_id=adapter_id, module=m.module, layer=m.layer, module_type=m.module_type, kind=m.kind,
        d_out=m.d_out, d_in=m.d_in, rank=m.rank, config_rank=m.config_rank, scale=m.scale,
        transposed=m.transposed, dora=m.dora, dtype=m.dtype, singular_values=list(m.singular_values),
        truncated=False, fro_norm=s.fro_norm, spectral_norm=s.spectral_norm, stable_rank=s.stable_rank,
        effective_rank=s.effective_rank, spectral_entropy=s.spectral_entropy, top1_energy=s.top1_energy,
        nuclear_norm=s.nuclear_norm, block=m.block, analyzer_version=analyzer_version, unit_id=unit_id,
    )


def describe(result: AuditResult) -> str:
    """One line about a result, for logs and progress output."""
    a = result.adapter
    codes = sorted({f.code for f in result.findings if f.severity != "info"})
    return json.dumps({"adapter": a.adapter_id, "status": a.status, "modules": a.n_modules, "findings": codes})

"""The audit of a full fine-tune: its files in, one :class:`AuditResult` out.

Same contract as :func:`audit.adapter_audit.audit_adapter` (the spectra analyzer hands
``kind == "full_finetune"`` refs here): never raises for a bad repository, every permanent problem is a finding, only transient
I/O errors propagate. The result fills the same tables:

- ``adapters``: ``peft_type``/``r``/``lora_alpha`` are null (no PEFT config), ``base_model`` and
  ``method`` come from the model card, ``weights_bytes`` is the weights' total size;
- ``modules``: one row per matrix shared with the base, ``kind = 'full'``, ``scale = 1``,
  ``rank`` = number of singular values kept (``k``, default 16), ``truncated = true`` when that is
  fewer than ``min(d_out, d_in)``. Stable rank, effective rank, entropy and top-1 energy are those
  of the top-k part of the spectrum (a truncated spectrum understates stable and effective rank of
  a delta whose energy is spread out); the Frobenius and nuclear norms are those of the top-k part.

Status: ``ok`` / ``partial`` as for adapters; ``failed`` with ``base_model_unavailable`` when the card
names no base or the base is not on this machine (see :mod:`audit.finetune.base_lookup`: bases are
never downloaded; make one available with ``LORA_AUDIT_BASE_MODELS`` and audit again under a new
analyzer version), ``pickle_weights_refused`` when the weights are only pickles, ``weights_missing``
when there are none.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from audit.adapter.weights import WeightsLocation
from audit.adapter_audit import _adapter_row, _read_card, finding_rows  # the adapters row is built the same way
from audit.errors import AdapterFormatError, BaseModelUnavailableError, PermanentAuditError, UnsafeFormatError
from audit.findings import Code, FindingLog
from audit.finetune.base_lookup import BASES_ENV, find_local_base
from audit.finetune.delta_spectra import measure_finetune
from audit.limits import DEFAULT_LIMITS, Limits
from audit.records import AdapterRef, AuditResult, ModuleRow, new_id, utcnow
from audit.spectra.lowrank import DEFAULT_K
from audit.version import ANALYZER_VERSION

_PICKLES = ("pytorch_model.bin", "model.bin", "pytorch_model.pt", "model.pt", "model.pth")
_SHARD_SUFFIX = ".safetensors"


def audit_finetune(ref: AdapterRef, *, limits: Limits = DEFAULT_LIMITS, analyzer_version: str = ANALYZER_VERSION,
                   k: int = DEFAULT_K, find_base: Callable[[str | None], Path | None] = find_local_base,
                   ) -> AuditResult:
    """Audit one full fine-tune revision from its files on local disk (see the module docstring).

    Args:
        ref: the fine-tune (``kind == "full_finetune"``); ``ref.local_dir`` holds ``README.md``,
            ``config.json`` and its safetensors weights.
        limits: caps on the files (both models' safetensors headers are checked).
        analyzer_version: written on every row.
        k: singular values kept per matrix.
        find_base: base name → local folder or ``None`` (default: :func:`find_local_base`).

    Returns:
        An :class:`AuditResult`.

    Raises:
        ValueError: ``ref.local_dir`` is not set.
        OSError: a transient I/O failure.
    """
    if ref.local_dir is None:
        raise ValueError(f"{ref.adapter_id}: files are not on local disk (fetch the ref first)")
    folder = Path(ref.local_dir)
    unit_id, log = new_id(), FindingLog()
    card = _read_card(folder, limits, log)
    measured, dtypes, loc, status = [], set(), None, "failed"
    try:
        weights = _weights(folder, ref)
        loc = WeightsLocation(path=weights[0], format="safetensors", size=sum(p.stat().st_size for p in weights))
        base_dir = _base(card.base_model, find_base)
        base_weights = sorted(base_dir.glob("*.safetensors"))
        measured, dtypes = measure_finetune(weights, base_weights, limits, log, k=k)
        if not measured:
            raise AdapterFormatError(f"no matrix shared with the base {card.base_model!r} could be measured",
                                     code=Code.NO_COMPARABLE_WEIGHTS)
        skipped = log.codes() & {str(c) for c in (Code.SHAPE_MISMATCH, Code.NONFINITE_WEIGHTS,
                                                   Code.UNSUPPORTED_DTYPE, Code.TENSOR_NOT_IN_BASE)}
        status = "partial" if skipped else "ok"
    except PermanentAuditError as exc:
        log.add_error("base" if isinstance(exc, BaseModelUnavailableError) else "weights", exc)
    now = utcnow()
    notes = log.finish()
    row = _adapter_row(ref, card, None, loc, measured, sorted(dtypes), status, len(notes), analyzer_version, now,
                       unit_id)
    modules = tuple(
        ModuleRow(adapter_id=ref.adapter_id, module=m.module, layer=m.layer, module_type=m.module_type, kind=m.kind,
                  d_out=m.d_out, d_in=m.d_in, rank=m.rank, config_rank=None, scale=m.scale, transposed=False,
                  dora=False, dtype=m.dtype, singular_values=list(m.singular_values),
                  truncated=m.rank < min(m.d_out, m.d_in), fro_norm=m.summary.fro_norm,
                  spectral_norm=m.summary.spectral_norm, stable_rank=m.summary.stable_rank,
                  effective_rank=m.summary.effective_rank, spectral_entropy=m.summary.spectral_entropy,
                  top1_energy=m.summary.top1_energy, nuclear_norm=m.summary.nuclear_norm,
                  analyzer_version=analyzer_version, unit_id=unit_id)
        for m in measured)
    findings = finding_rows(ref.repo_id, ref.adapter_id, notes, analyzer_version, now, unit_id)
    return AuditResult(adapter=row, modules=modules, findings=findings)


def _weights(folder: Path, ref: AdapterRef) -> list[Path]:
    """The fine-tune's safetensors files; pickles are refused by name, never downloaded or opened."""
    files = sorted(p for p in folder.glob(f"*{_SHARD_SUFFIX}") if p.name != "adapter_model.safetensors")
    if (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    if files:
        return files
    listed = {f.name for f in ref.files} | {p.name for p in folder.iterdir()}
    pickles = sorted(listed & set(_PICKLES))
    if pickles:
        raise UnsafeFormatError(f"the weights are only torch pickles ({', '.join(pickles)}); pickles can execute "
                                "code and are never loaded: ask the author for model.safetensors", file=pickles[0])
    raise AdapterFormatError("no safetensors weights (model.safetensors)", code=Code.WEIGHTS_MISSING)


def _base(name: str | None, find_base: Callable[[str | None], Path | None]) -> Path:
    if not name:
        raise BaseModelUnavailableError("the model card declares no base_model: the delta weight needs the base")
    folder = find_base(name)
    if folder is None:
        raise BaseModelUnavailableError(
            f"base model {name!r} is not available on this machine (bases are never downloaded by a scan); "
            f"map it to a local folder with {BASES_ENV}='{name}=/path/to/base' and audit again")
    return folder

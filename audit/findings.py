"""Stable finding codes: what can be wrong with (or worth noting about) an adapter.

A finding is a recorded observation, not a crash: the scan goes on. Codes are a public contract
(people filter on them in DuckDB); add new ones, never rename.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from audit.errors import AuditError

Severity = Literal["info", "warning", "error"]


class Code(StrEnum):
    """Machine-readable finding codes. ``error`` findings mean the adapter has no spectra."""

    # the adapter as a whole (severity error: nothing could be measured)
    PICKLE_WEIGHTS_REFUSED = "pickle_weights_refused"
    LFS_POINTER = "lfs_pointer"
    WEIGHTS_MISSING = "weights_missing"
    CONFIG_MISSING = "config_missing"
    CONFIG_INVALID = "config_invalid"
    UNKNOWN_PEFT_TYPE = "unknown_peft_type"
    UNSUPPORTED_PEFT_TYPE = "unsupported_peft_type"
    SAFETENSORS_INVALID = "safetensors_invalid"
    WEIGHTS_INVALID = "weights_invalid"
    LIMIT_EXCEEDED = "limit_exceeded"
    NO_LORA_MODULES = "no_lora_modules"
    ACCESS_DENIED = "access_denied"
    GATED_REPO = "gated_repo"
    NOT_FOUND = "not_found"
    BASE_MODEL_UNAVAILABLE = "base_model_unavailable"
    NO_COMPARABLE_WEIGHTS = "no_comparable_weights"
    INTERNAL_ERROR = "internal_error"
    WORKER_CRASHED = "worker_crashed"
    # one module (severity warning: that module is skipped or its numbers need care)
    LORA_PAIR_INCOMPLETE = "lora_pair_incomplete"
    RANK_MISMATCH = "rank_mismatch"
    SHAPE_MISMATCH = "shape_mismatch"
    NONFINITE_WEIGHTS = "nonfinite_weights"
    UNSUPPORTED_DTYPE = "unsupported_dtype"
    TENSOR_NOT_IN_BASE = "tensor_not_in_base"
    # worth knowing (severity info or warning)
    KEY_PREFIX_DOUBLED = "key_prefix_doubled"
    UNTARGETED_MODULE = "untargeted_module"
    TARGET_WITHOUT_TENSORS = "target_without_tensors"
    MODULES_TO_SAVE_WEIGHTS = "modules_to_save_weights"
    UNRECOGNISED_TENSORS = "unrecognised_tensors"
    DORA_MAGNITUDE_NOT_APPLIED = "dora_magnitude_not_applied"
    ZERO_DELTA = "zero_delta"
    CONFIG_UNEXPECTED_KEYS = "config_unexpected_keys"
    CARD_INVALID = "card_invalid"
    EXTRA_PICKLE_FILE = "extra_pickle_file"
    PICKLE_NOT_OPENED = "pickle_not_opened"
    FAN_IN_FAN_OUT_FORCED = "fan_in_fan_out_forced"
    BASE_MODEL_UNRESOLVABLE = "base_model_unresolvable"
    PATH_OUTSIDE_REGISTRY = "path_outside_registry"
    ADAPTER_INERT = "adapter_inert"
    ADAPTER_PARTLY_INERT = "adapter_partly_inert"
    # behaviour probes (stage "probe")
    PROBE_FAILED = "probe_failed"
    BASE_SHAPE_MISMATCH = "base_shape_mismatch"
    PROBE_NOT_APPLICABLE = "probe_not_applicable"


def severity_of(code: str) -> Severity:
    """Default severity of a finding code: ``error`` when the adapter could not be measured at all."""
    if code in _ERRORS:
        return "error"
    if code in _INFOS:
        return "info"
    return "warning"


_ERRORS = {
    Code.PICKLE_WEIGHTS_REFUSED, Code.LFS_POINTER, Code.WEIGHTS_MISSING, Code.CONFIG_MISSING,
    Code.CONFIG_INVALID, Code.UNKNOWN_PEFT_TYPE, Code.SAFETENSORS_INVALID, Code.WEIGHTS_INVALID, Code.LIMIT_EXCEEDED,
    Code.NO_LORA_MODULES, Code.ACCESS_DENIED, Code.GATED_REPO, Code.NOT_FOUND, Code.INTERNAL_ERROR,
    Code.WORKER_CRASHED, Code.BASE_MODEL_UNAVAILABLE, Code.ADAPTER_INERT, Code.PATH_OUTSIDE_REGISTRY, Code.NO_COMPARABLE_WEIGHTS, Code.PROBE_FAILED,
    Code.BASE_SHAPE_MISMATCH,
    "adapter_format", "permanent",
}
_INFOS = {
    Code.UNSUPPORTED_PEFT_TYPE, Code.MODULES_TO_SAVE_WEIGHTS, Code.DORA_MAGNITUDE_NOT_APPLIED,
    Code.CONFIG_UNEXPECTED_KEYS, Code.EXTRA_PICKLE_FILE, Code.PROBE_NOT_APPLICABLE, Code.PICKLE_NOT_OPENED,
    Code.FAN_IN_FAN_OUT_FORCED, Code.BASE_MODEL_UNRESOLVABLE,
}


RULE_TEXT: dict[str, str] = {
    Code.PICKLE_WEIGHTS_REFUSED: "The weights are a pickle, which can run code when loaded; they are never opened.",
    Code.LFS_POINTER: "A git-LFS pointer was committed instead of the weights.",
    Code.WEIGHTS_MISSING: "The adapter has no weights file.",
    Code.CONFIG_MISSING: "The adapter has no adapter_config.json.",
    Code.CONFIG_INVALID: "adapter_config.json is not a config peft would load.",
    Code.UNKNOWN_PEFT_TYPE: "The config names a peft_type peft does not know.",
    Code.UNSUPPORTED_PEFT_TYPE: "An adapter type with no LoRA delta weight to measure.",
    Code.SAFETENSORS_INVALID: "The safetensors file is malformed.",
    Code.WEIGHTS_INVALID: "The weights file is in no known format.",
    Code.LIMIT_EXCEEDED: "A file declares more than the scanner's caps allow.",
    Code.NO_LORA_MODULES: "No LoRA module in the weights could be measured.",
    Code.ACCESS_DENIED: "The registry refused access to the adapter.",
    Code.GATED_REPO: "The adapter's repository is gated.",
    Code.NOT_FOUND: "The adapter or one of its files was not found.",
    Code.BASE_MODEL_UNAVAILABLE: "The base model needed for this measurement is not on the machine.",
    Code.NO_COMPARABLE_WEIGHTS: "No weight of the fine-tune matches the base model's.",
    Code.INTERNAL_ERROR: "The scanner failed on this adapter (a bug: please report it).",
    Code.WORKER_CRASHED: "Every worker that read this adapter died.",
    Code.LORA_PAIR_INCOMPLETE: "A module has lora_A without lora_B or the reverse.",
    Code.RANK_MISMATCH: "The tensors' rank differs from the config's.",
    Code.SHAPE_MISMATCH: "A module's factors do not form a product.",
    Code.NONFINITE_WEIGHTS: "NaN or Inf in a module's factors.",
    Code.UNSUPPORTED_DTYPE: "A module's factors are not floating point.",
    Code.TENSOR_NOT_IN_BASE: "A fine-tuned tensor has no counterpart in the base model.",
    Code.KEY_PREFIX_DOUBLED: "Tensor names repeat the base_model.model. prefix.",
    Code.UNTARGETED_MODULE: "Weights of a module target_modules does not select: peft ignores them.",
    Code.TARGET_WITHOUT_TENSORS: "A target_modules entry matches no tensor.",
    Code.MODULES_TO_SAVE_WEIGHTS: "Full weights of modules_to_save, outside the delta spectra.",
    Code.UNRECOGNISED_TENSORS: "Tensors that are neither LoRA factors nor modules_to_save.",
    Code.DORA_MAGNITUDE_NOT_APPLIED: "DoRA magnitude vectors, not part of the measured delta.",
    Code.ZERO_DELTA: "A module's delta weight is exactly zero.",
    Code.CONFIG_UNEXPECTED_KEYS: "Config keys this peft version does not know (ignored).",
    Code.CARD_INVALID: "The model card's metadata could not be read.",
    Code.EXTRA_PICKLE_FILE: "A pickle file beside the weights (never opened).",
    Code.PICKLE_NOT_OPENED: "The weights of an adapter type that is not measured are a pickle (never opened).",
    Code.FAN_IN_FAN_OUT_FORCED: "GPT-2 Conv1D modules: peft treats them as fan_in_fan_out (transposed) whatever the config says.",
    Code.BASE_MODEL_UNRESOLVABLE: "The base model is named by a path on the author's machine.",
    Code.PATH_OUTSIDE_REGISTRY: "A file of the adapter is a symlink out of the registry (never read).",
    Code.ADAPTER_INERT: "No module of the adapter would take effect when peft loads it.",
    Code.ADAPTER_PARTLY_INERT: "Some modules of the adapter would not take effect when peft loads it.",
    Code.PROBE_FAILED: "A behaviour probe failed on this adapter.",
    Code.BASE_SHAPE_MISMATCH: "The adapter's shapes do not fit its base model.",
    Code.PROBE_NOT_APPLICABLE: "A behaviour probe does not apply to this adapter.",
}
"""One sentence per code: what it means (SARIF rule descriptions, reports)."""


@dataclass(frozen=True)
class Note:
    """A finding before it is tied to an adapter and a unit of work."""

    stage: str
    code: str
    message: str
    severity: Severity
    file: str | None = None
    module: str | None = None


class FindingLog:
    """Collects the findings of one audit. Per-module observations of the same code are folded
    into one finding (``12 modules: a, b, c, ... : detail``) so that a bad adapter with 200
    modules gives a readable handful of rows, not 200."""

    def __init__(self) -> None:
        self.notes: list[Note] = []
        self._per_module: dict[tuple[str, str, str | None], list[tuple[str, str]]] = {}

    def add(self, stage: str, code: str, message: str, *, file: str | None = None,
            module: str | None = None, severity: Severity | None = None) -> None:
        self.notes.append(Note(stage, str(code), message, severity or severity_of(code), file, module))

    def add_error(self, stage: str, error: AuditError) -> None:
        """Record a permanent error (its code, message and file)."""
        self.add(stage, error.code, error.message, file=error.file)

    def per_module(self, stage: str, code: str, module: str, detail: str, *, file: str | None = None) -> None:
        self._per_module.setdefault((stage, str(code), file), []).append((module, detail))

    def finish(self) -> list[Note]:
        """All notes, per-module ones folded, in the order they were first seen."""
        out = list(self.notes)
        for (stage, code, file), items in self._per_module.items():
            if len(items) == 1:
                module, detail = items[0]
                out.append(Note(stage, code, f"{module}: {detail}", severity_of(code), file, module))
                continue
            names = ", ".join(m for m, _ in items[:5]) + (", ..." if len(items) > 5 else "")
            details = sorted({d for _, d in items})
            detail = details[0] if len(details) == 1 else f"{details[0]} (and {len(details) - 1} other cases)"
            out.append(Note(stage, code, f"{len(items)} modules ({names}): {detail}", severity_of(code), file))
        self._per_module.clear()
        self.notes = out
        return list(out)

    def codes(self) -> set[str]:
        """Every code recorded so far (folded or not)."""
        return {n.code for n in self.notes} | {code for (_, code, _) in self._per_module}

    @property
    def has_error(self) -> bool:
        return any(n.severity == "error" for n in self.notes)

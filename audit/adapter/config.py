"""``adapter_config.json`` read with peft's own semantics.

peft's ``PeftConfig.from_peft_type`` picks the config class from ``peft_type``, fills defaults,
drops keys from newer peft versions and rejects what ``__post_init__`` rejects; its
``get_pattern_key`` and ``check_target_module_exists`` decide which ``rank_pattern``/``alpha_pattern``
entry and which ``target_modules`` apply to a module. Those rules are copied in
:mod:`audit.adapter.peft_spec` (and checked against peft in the tests), so reading a config
imports no peft; only a config with a nested initialisation sub-config is handed to peft itself.
This module turns the result into a small frozen record the rest of the audit uses.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from typing import Any

from pydantic import BaseModel, ConfigDict

from audit.adapter import peft_spec
from audit.errors import AdapterFormatError, LimitExceededError


class AdapterConfig(BaseModel):
    """The parts of a PEFT config that decide the delta weights (peft field names and defaults)."""

    model_config = ConfigDict(frozen=True)

    peft_type: str
    """peft's ``PeftType`` value: ``LORA``, ``IA3``, ``PROMPT_TUNING``..."""
    task_type: str | None = None
    base_model_name_or_path: str | None = None
    r: int | None = None
    lora_alpha: float | None = None
    use_rslora: bool = False
    use_dora: bool = False
    fan_in_fan_out: bool = False
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    target_modules: list[str] | str | None = None
    """A list (suffix match, sorted) or a regex string (full match), as in peft."""
    exclude_modules: list[str] | str | None = None
    modules_to_save: list[str] | None = None
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    target_parameters: list[str] | None = None
    unexpected_keys: tuple[str, ...] = ()
    """Keys peft did not know (written by a newer peft); ignored, as peft does."""

    @property
    def is_lora(self) -> bool:
        return self.peft_type == "LORA"

    @property
    def saved_modules(self) -> list[str]:
        """``modules_to_save`` plus the heads peft adds for the task type (``PeftModelForSequenceClassification``
        and friends add ``classifier``/``score``; question answering adds ``qa_outputs``)."""
        extra = {"SEQ_CLS": ["classifier", "score"], "TOKEN_CLS": ["classifier", "score"],
                 "QUESTION_ANS": ["qa_outputs"]}.get(self.task_type or "", [])
        return list(dict.fromkeys([*(self.modules_to_save or []), *extra]))

    def module_rank(self, module: str) -> int | None:
        """Rank peft would give ``module``: its ``rank_pattern`` entry, else ``r``."""
        if self.rank_pattern:
            key = peft_spec.get_pattern_key(list(self.rank_pattern), module)
            if key in self.rank_pattern:
                return int(self.rank_pattern[key])
        return self.r

    def module_alpha(self, module: str) -> float | None:
        """``lora_alpha`` peft would give ``module``: its ``alpha_pattern`` entry, else ``lora_alpha``."""
        if self.alpha_pattern:
            key = peft_spec.get_pattern_key(list(self.alpha_pattern), module)
            if key in self.alpha_pattern:
                return float(self.alpha_pattern[key])
        return self.lora_alpha

    def scale_for(self, module: str) -> float:
        """LoRA scale of ``module``: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA
        (Kalajdzievski 2023), after ``rank_pattern``/``alpha_pattern`` (peft ``LoraLayer.update_layer``).

        Raises:
            AdapterFormatError: if the config gives no positive rank or no alpha for the module.
        """
        r = self.module_rank(module)
        alpha = self.module_alpha(module)
        if r is None or r <= 0 or alpha is None:
            raise AdapterFormatError(f"config gives no usable r/lora_alpha for module {module!r}",
                                     code="config_invalid", file="adapter_config.json")
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r

    def targets(self, module: str) -> bool:
        """Whether peft would put a LoRA layer on ``module`` (``check_target_module_exists``)."""
        if self.target_modules is None:
            return True
        return peft_spec.target_module_exists(self.model_dump(), module)


_FIELDS = tuple(AdapterConfig.model_fields)


def parse_adapter_config(raw: bytes, *, max_bytes: int) -> AdapterConfig:
    """Parse the bytes of ``adapter_config.json`` with peft's semantics (peft 0.21, without importing it).

    Args:
        raw: the file's bytes.
        max_bytes: cap on ``len(raw)``.

    Returns:
        An :class:`AdapterConfig`. For a ``peft_type`` other than ``LORA`` only the type, task type
        and base model are read (nothing else of such an adapter is measured).

    Raises:
        LimitExceededError: the file is larger than ``max_bytes``.
        AdapterFormatError: not JSON, not an object, no ``peft_type`` (code ``config_invalid``),
            a ``peft_type`` peft does not know (``unknown_peft_type``), or values peft rejects.
    """
    file = "adapter_config.json"
    if len(raw) > max_bytes:
        raise LimitExceededError(f"config is {len(raw)} bytes, cap is {max_bytes}", file=file)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise AdapterFormatError(f"not valid JSON: {exc}", code="config_invalid", file=file) from None
    if not isinstance(data, dict):
        raise AdapterFormatError("not a JSON object", code="config_invalid", file=file)
    peft_type = data.get("peft_type")
    if not isinstance(peft_type, str):
        raise AdapterFormatError("no 'peft_type' (peft cannot load this config)", code="config_invalid", file=file)
    if peft_type not in peft_spec.PEFT_TYPES:
        raise AdapterFormatError(f"peft does not know peft_type {peft_type!r}", code="unknown_peft_type", file=file)
    if peft_type == "LORA" and peft_spec.needs_peft(data):
        return _parse_with_peft(data, file)
    if peft_type != "LORA":
        values: dict[str, Any] = {"peft_type": peft_type, "task_type": data.get("task_type"),
                                  "base_model_name_or_path": data.get("base_model_name_or_path")}
        unexpected: tuple[str, ...] = ()
    else:
        values = {k: data.get(k, peft_spec.LORA_DEFAULTS.get(k)) for k in _FIELDS if k in peft_spec.LORA_FIELDS}
        for key in ("target_modules", "exclude_modules"):  # LoraConfig.__post_init__ makes a list a set
            if isinstance(values[key], list):
                try:
                    values[key] = _plain(set(values[key]))
                except TypeError as exc:
                    raise AdapterFormatError(f"peft rejects the config: {exc}", code="config_invalid",
                                             file=file) from None
        unexpected = tuple(sorted(k for k in data if k not in peft_spec.LORA_FIELDS))
    if peft_type == "LORA":
        bad = _bad_pattern(values)
        if bad is not None:
            raise AdapterFormatError(f"peft cannot match modules with this config: {bad}", code="config_invalid",
                                     file=file)
    problem = peft_spec.lora_config_errors(
        {**peft_spec.LORA_DEFAULTS, **{k: v for k, v in data.items() if k in peft_spec.LORA_FIELDS}}
        if peft_type == "LORA" else {"task_type": values["task_type"]})
    if problem is not None:
        raise AdapterFormatError(f"peft rejects the config: {problem}", code="config_invalid", file=file)
    return _record(values, unexpected, file)


def _bad_pattern(values: dict[str, Any]) -> str | None:
    """The first regular expression of the config that does not compile (peft would raise
    ``re.error`` while loading), as a message; ``None`` when all do."""
    candidates: list[tuple[str, str]] = []
    for key in ("target_modules", "exclude_modules"):
        if isinstance(values.get(key), str):
            candidates.append((key, values[key]))
    for key in ("rank_pattern", "alpha_pattern"):
        if isinstance(values.get(key), dict):
            candidates += [(key, peft_spec.pattern_key_regex(k)) for k in values[key] if isinstance(k, str)]
    saved = values.get("modules_to_save")
    if isinstance(saved, list):
        candidates += [("modules_to_save", peft_spec.modules_to_save_regex(m)) for m in saved if isinstance(m, str)]
    pattern = values.get("layers_pattern")
    for p in [pattern] if isinstance(pattern, str) else (pattern if isinstance(pattern, list) else []):
        if isinstance(p, str):
            candidates.append(("layers_pattern", peft_spec.layer_index_regex(p)))
    for key, regex in candidates:
        try:
            re.compile(regex)
        except (re.error, RecursionError, OverflowError) as exc:
            return f"{key} is not a valid regular expression ({exc})"
    return None


def _parse_with_peft(data: dict[str, Any], file: str) -> AdapterConfig:
    """peft's own ``PeftConfig.from_peft_type``, for what :mod:`audit.adapter.peft_spec` does not copy."""
    from peft.config import PeftConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cfg = PeftConfig.from_peft_type(**data)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise AdapterFormatError(f"peft rejects the config: {exc}", code="config_invalid", file=file) from None
    known = set(type(cfg).__dataclass_fields__)
    values: dict[str, Any] = {k: _plain(getattr(cfg, k, None)) for k in _FIELDS if k in known}
    values["peft_type"] = str(getattr(cfg.peft_type, "value", cfg.peft_type))
    values["task_type"] = cfg.task_type
    return _record(values, tuple(sorted(k for k in data if k not in known)), file)


def _record(values: dict[str, Any], unexpected: tuple[str, ...], file: str) -> AdapterConfig:
    task = values.get("task_type")
    values["task_type"] = None if task is None else str(getattr(task, "value", task))
    values["unexpected_keys"] = unexpected
    values = {k: v for k, v in values.items() if v is not None or k in ("task_type",)}
    try:
        return AdapterConfig(**values)
    except ValueError as exc:
        raise AdapterFormatError(f"unexpected values: {exc}", code="config_invalid", file=file) from None


def _plain(value: Any) -> Any:
    """peft keeps ``target_modules`` as a set: make it a sorted list of the unique names (stable output;
    a set with a non-string member is left for the record's validation to reject)."""
    if isinstance(value, (set, frozenset)):
        return sorted(value) if all(isinstance(v, str) for v in value) else list(value)
    return value

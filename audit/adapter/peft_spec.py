"""peft's adapter-config semantics, read from its source so the spectra path imports no peft.

Importing peft imports transformers and most of torch (about 6 s of CPU on 2 cores), which an
ad-hoc scan of a few dozen adapters would otherwise spend before its first spectrum. The rules
the audit needs are small and pure; they are copied here from peft 0.21.2 (the version
``pyproject.toml`` pins) and checked against peft itself, rule by rule and config by config, in
``tests/adapter/test_peft_spec.py``:

- :data:`PEFT_TYPES`: ``peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING``'s keys (``peft/utils/peft_types.py``);
- :data:`LORA_FIELDS` / :data:`LORA_DEFAULTS`: ``peft.LoraConfig``'s dataclass fields and the
  defaults of the ones that set the delta weight (``peft/tuners/lora/config.py``);
- :func:`lora_config_errors`: the checks of ``LoraConfig.__post_init__`` that reject a config;
- :func:`get_pattern_key`: ``peft.utils.other.get_pattern_key`` (``rank_pattern``/``alpha_pattern``);
- :func:`target_module_exists`: ``peft.tuners.tuners_utils.check_target_module_exists``.

Where a config uses what is not copied here (the nested initialisation sub-configs, which peft
builds into classes and may reject), :func:`needs_peft` says so and the caller asks peft itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

PEFT_TYPES: frozenset[str] = frozenset({
    "ADALORA", "ADAMSS", "ADAPTION_PROMPT", "BEFT", "BOFT", "C3A", "CARTRIDGE", "CPT", "DEFT", "DELORA",
    "FOURIERFT", "FROD", "GLORA", "GRALORA", "HIRA", "HRA", "IA3", "LILY", "LN_TUNING", "LOHA", "LOKR", "LORA",
    "MISS", "MULTITASK_PROMPT_TUNING", "OFT", "OSF", "PEANUT", "POLY", "PREFIX_TUNING", "PROMPT_TUNING", "PSOFT",
    "PVERA", "P_TUNING", "RANDLORA", "ROAD", "SHADOW", "SHIRA", "SUPERTUNING", "TINYLORA", "TRAINABLE_TOKENS",
    "UNILORA", "VBLORA", "VERA", "WAVEFT", "XLORA",
})
"""Every ``peft_type`` peft 0.21 can load a config for."""

TASK_TYPES: tuple[str, ...] = ("SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS",
                               "FEATURE_EXTRACTION")
"""``peft.TaskType``: ``PeftConfig.__post_init__`` rejects any other non-null ``task_type``."""

LORA_FIELDS: frozenset[str] = frozenset({
    "alora_invocation_tokens", "alpha_pattern", "arrow_config", "auto_mapping", "base_model_name_or_path", "bias",
    "corda_config", "ensure_weight_tying", "eva_config", "exclude_modules", "fan_in_fan_out", "inference_mode",
    "init_lora_weights", "kasa_config", "layer_replication", "layers_pattern", "layers_to_transform",
    "loftq_config", "lora_alpha", "lora_bias", "lora_dropout", "lora_ga_config", "megatron_config",
    "megatron_core", "modules_to_save", "monteclora_config", "peft_type", "peft_version", "qalora_group_size", "r",
    "rank_pattern", "revision", "runtime_config", "target_modules", "target_parameters", "task_type",
    "trainable_token_indices", "use_bdlora", "use_dora", "use_qalora", "use_rslora", "velora_config",
})
"""``peft.LoraConfig``'s fields: a key outside them is dropped by peft with a warning (a newer peft wrote it)."""

LORA_DEFAULTS: Mapping[str, Any] = {
    "r": 8, "lora_alpha": 8, "use_rslora": False, "use_dora": False, "fan_in_fan_out": False, "rank_pattern": {},
    "alpha_pattern": {}, "target_modules": None, "exclude_modules": None, "modules_to_save": None,
    "layers_to_transform": None, "layers_pattern": None, "target_parameters": None, "task_type": None,
    "base_model_name_or_path": None, "init_lora_weights": True, "lora_bias": False, "megatron_config": None,
    "loftq_config": {},
}
"""``peft.LoraConfig()``'s values of the fields the audit reads or :func:`lora_config_errors` checks."""

SUBCONFIGS: tuple[str, ...] = ("velora_config", "kasa_config", "eva_config", "corda_config", "lora_ga_config",
                               "arrow_config", "use_bdlora", "monteclora_config")
"""Nested sub-configs ``LoraConfig.__post_init__`` turns into classes (and may reject)."""


def needs_peft(data: Mapping[str, Any]) -> bool:
    """Whether a LoRA config uses something only peft itself can judge: a nested sub-config, or LoftQ
    initialisation with its config (which peft validates against its own class)."""
    if any(data.get(k) not in (None, False) for k in SUBCONFIGS):
        return True
    return data.get("init_lora_weights") == "loftq" and bool(data.get("loftq_config"))


def lora_config_errors(cfg: Mapping[str, Any]) -> str | None:
    """The first reason ``LoraConfig.__post_init__`` (peft 0.21.2) would reject ``cfg``, or ``None``.

    Args:
        cfg: the config's keys with :data:`LORA_DEFAULTS` filled in.

    Returns:
        peft's own message, or ``None`` when peft would accept the config.
    """
    task_type = cfg.get("task_type")
    if task_type is not None and task_type not in TASK_TYPES:
        return f"Invalid task type: '{task_type}'. Must be one of the following task types: {', '.join(TASK_TYPES)}."
    target = cfg.get("target_modules")
    if isinstance(cfg.get("target_parameters"), str):
        return "`target_parameters` must be a list of strings or None."
    if isinstance(target, str) and cfg.get("layers_to_transform") is not None:
        return "`layers_to_transform` cannot be used when `target_modules` is a str."
    if isinstance(target, str) and cfg.get("layers_pattern") is not None:
        return "`layers_pattern` cannot be used when `target_modules` is a str."
    if cfg.get("layers_pattern") and cfg.get("layers_to_transform") is None:
        return "When `layers_pattern` is specified, `layers_to_transform` must also be specified. "
    if cfg.get("use_dora") and cfg.get("megatron_config"):
        return "DoRA does not support megatron_core, please set `use_dora=False`."
    if cfg.get("init_lora_weights") == "loftq" and not cfg.get("loftq_config"):
        return "`loftq_config` must be specified when `init_lora_weights` is 'loftq'."
    if cfg.get("lora_bias"):
        if cfg.get("init_lora_weights") not in (True, False):
            return ("The argument lora_bias=True is only supported with init_lora_weights=True or False, got "
                    f"init_lora_weights={cfg.get('init_lora_weights')} instead.")
        if cfg.get("use_dora"):
            return "The argument lora_bias=True is not supported for DoRA, please pass use_dora=False"
    return None


def pattern_key_regex(key: str) -> str:
    """The regex a ``rank_pattern``/``alpha_pattern`` key becomes (``get_pattern_key``)."""
    return rf"(.*\.)?({key})$"


def modules_to_save_regex(name: str) -> str:
    """The regex a ``modules_to_save`` entry becomes in ``check_target_module_exists`` (peft
    interpolates the name unescaped, so ``"["`` is an invalid pattern there too)."""
    return rf"(^|.*\.){name}($|\..*)"


def layer_index_regex(pattern: str | None) -> str:
    """The regex that finds a module's layer index after ``layers_pattern`` ``pattern`` (``None``:
    the first numbered segment), as ``check_target_module_exists`` builds it."""
    return r".*?\.[^.]*\.(?P<idx>\d+)\." if pattern is None else rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\."


def get_pattern_key(pattern_keys: Sequence[str], key_to_match: str) -> str:
    """The ``rank_pattern``/``alpha_pattern`` key that applies to module ``key_to_match``: the first
    key whose :func:`pattern_key_regex` matches it, else ``key_to_match`` itself
    (``peft.utils.other.get_pattern_key``)."""
    for key in pattern_keys:
        if re.match(pattern_key_regex(key), key_to_match):
            return key
    return key_to_match


def target_module_exists(cfg: Mapping[str, Any], key: str) -> bool:
    """Whether peft would put an adapter layer on module ``key`` (dotted path) under ``cfg``
    (``peft.tuners.tuners_utils.check_target_module_exists``; an excluded module is ``False``).

    ``exclude_modules`` and ``modules_to_save`` win; a string ``target_modules`` is a full-match
    regex; a list matches the whole key or a ``.``-suffix, then ``layers_to_transform`` keeps the
    layers whose index follows ``layers_pattern`` (or the first numbered segment).
    """
    exclude = cfg.get("exclude_modules")
    if exclude:
        if isinstance(exclude, str):
            if re.fullmatch(exclude, key):
                return False
        elif key in exclude or any(key.endswith(f".{k}") for k in exclude):
            return False
    saved = cfg.get("modules_to_save")
    if saved and any(re.match(modules_to_save_regex(m), key) for m in saved):
        return False
    target = cfg.get("target_modules")
    if target is None and cfg.get("target_parameters") is not None:
        return False
    if isinstance(target, str):
        return re.fullmatch(target, key) is not None
    if key in target:
        return True
    found = any(key.endswith(f".{t}") for t in target)
    indexes = cfg.get("layers_to_transform")
    pattern = cfg.get("layers_pattern")
    using_indexes = indexes is not None and (len(indexes) != 0 if isinstance(indexes, list) else True)
    if not (using_indexes and found):
        return found
    match = None
    if pattern is None or len(pattern) == 0:
        match = re.match(layer_index_regex(None), key)
    else:
        for p in [pattern] if isinstance(pattern, str) else pattern:
            match = re.match(layer_index_regex(p), key)
            if match is not None:
                break
    if match is None:
        return False
    index = int(match.group("idx"))
    return index == indexes if isinstance(indexes, int) else index in indexes

"""Delta spectra of every LoRA module of one opened adapter, streaming module by module.

Memory stays bounded by the largest ``(A, B)`` pair: each pair is read, measured in float64 and
dropped before the next. Every inconsistency between the config and the tensors becomes a
finding on the :class:`audit.findings.FindingLog`; only the modules that can be measured are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from audit.adapter.config import AdapterConfig
from audit.adapter.keys import ModuleKeys, module_layer, module_type, plan_modules
from audit.adapter.weights import SafeWeights
from audit.errors import AdapterFormatError
from audit.findings import Code, FindingLog
from audit.spectra import as_matrix_factors, delta_spectrum, summarize
from audit.spectra.summaries import SpectralSummary

STAGE = "spectra"


@dataclass(frozen=True)
class ModuleMeasurement:
    """The delta spectrum of one module and where it came from (see ``ModuleRow`` for fields)."""

    module: str
    layer: int | None
    module_type: str
    kind: str
    d_out: int
    d_in: int
    rank: int
    config_rank: int | None
    scale: float
    transposed: bool
    dora: bool
    dtype: str
    singular_values: tuple[float, ...]
    summary: SpectralSummary


def measure_adapter(weights: SafeWeights, config: AdapterConfig, log: FindingLog) -> list[ModuleMeasurement]:
    """Measure every complete LoRA module of ``weights`` under ``config``.

    Args:
        weights: an opened safetensors file (caps already checked).
        config: the adapter's config (``peft_type`` LORA).
        log: receives the findings (incomplete pairs, rank mismatches, untargeted modules...).

    Returns:
        One :class:`ModuleMeasurement` per measured module, in file order.
    """
    file = weights.path.name
    plan = plan_modules(list(weights.tensors))
    if plan.max_prefix_count > 1:
        log.add(STAGE, Code.KEY_PREFIX_DOUBLED,
                f"tensor names carry 'base_model.model.' {plan.max_prefix_count} times; peft will not "
                "find these modules when loading the adapter on its base model", file=file)
    _note_other_tensors(plan.other, config, log, file)
    dora_seen = False
    out: list[ModuleMeasurement] = []
    for keys in plan.modules.values():
        dora_seen |= keys.magnitude is not None
        measured = _measure_module(weights, config, keys, log, file)
        if measured is not None:
            out.append(measured)
    if dora_seen:
        log.add(STAGE, Code.DORA_MAGNITUDE_NOT_APPLIED,
                "DoRA magnitude vectors present: spectra are those of s·B·A; the full DoRA update "
                "needs the base weights", file=file)
    _note_targets(config, plan.modules, log, file)
    return out


def _measure_module(weights: SafeWeights, config: AdapterConfig, keys: ModuleKeys, log: FindingLog,
                    file: str) -> ModuleMeasurement | None:
    name = keys.module
    if not keys.complete:
        missing = "lora_B" if keys.b is None else "lora_A"
        if keys.a is None and keys.b is None:
            return None  # a lone magnitude vector: nothing to measure, reported with DoRA
        log.per_module(STAGE, Code.LORA_PAIR_INCOMPLETE, name, f"{missing} missing", file=file)
        return None
    assert keys.a is not None and keys.b is not None
    a_info, b_info = weights.tensors[keys.a.name], weights.tensors[keys.b.name]
    for info in (a_info, b_info):
        if not weights.is_float(info.name):
            log.per_module(STAGE, Code.UNSUPPORTED_DTYPE, name, f"dtype {info.dtype}", file=file)
            return None
    if config.target_modules is not None and not config.targets(name):
        log.per_module(STAGE, Code.UNTARGETED_MODULE, name,
                       "not matched by target_modules: peft ignores these weights", file=file)
    config_rank = config.module_rank(name)
    try:
        scale = config.scale_for(name)
        a, b = weights.read(keys.a.name), weights.read(keys.b.name)
        if keys.embedding:  # lora_embedding_A: [r, num_embeddings], lora_embedding_B: [dim, r]
            a2, b2 = a, b
        else:
            a2, b2 = as_matrix_factors(a, b)
        if a2.shape[0] != b2.shape[1] or a2.dim() != 2 or b2.dim() != 2:
            raise AdapterFormatError(f"A {list(a.shape)} and B {list(b.shape)} do not pair", code="shape_mismatch")
    except AdapterFormatError as exc:
        log.per_module(STAGE, exc.code, name, exc.message, file=file)
        return None
    transposed = keys.embedding or config.fan_in_fan_out
    try:
        sigma = tuple(delta_spectrum(a2, b2, scale, transposed=transposed).singular_values.tolist())
    except RuntimeError:  # LAPACK refuses non-finite input on some paths
        sigma = (math.nan,)
    if not all(math.isfinite(x) for x in sigma):  # NaN/Inf in a factor propagates through QR
        log.per_module(STAGE, Code.NONFINITE_WEIGHTS, name, "NaN or Inf in the factors", file=file)
        return None
    rank = int(a2.shape[0])
    if config_rank is not None and rank != config_rank:
        log.per_module(STAGE, Code.RANK_MISMATCH, name,
                       f"tensors have rank {rank}, config says {config_rank}", file=file)
    summary = summarize(sigma)
    if summary.spectral_norm == 0.0:
        log.per_module(STAGE, Code.ZERO_DELTA, name, "the delta weight is zero (B or A is all zeros)", file=file)
    kind = "embedding" if keys.embedding else ("conv" if a.dim() > 2 else "linear")
    return ModuleMeasurement(
        module=name, layer=module_layer(name), module_type=module_type(name), kind=kind,
        d_out=int(b2.shape[0]), d_in=int(a2.shape[1]), rank=rank, config_rank=config_rank,
        scale=float(scale), transposed=transposed, dora=keys.magnitude is not None,
        dtype=a_info.dtype, singular_values=sigma, summary=summary,
    )


def _note_other_tensors(other: list[str], config: AdapterConfig, log: FindingLog, file: str) -> None:
    if not other:
        return
    heads = config.saved_modules
    saved = [n for n in other if any(f".{m}." in f".{n}" for m in heads)]
    rest = [n for n in other if n not in saved]
    if saved:
        log.add(STAGE, Code.MODULES_TO_SAVE_WEIGHTS,
                f"{len(saved)} full tensors of modules_to_save ({', '.join(saved[:3])}"
                f"{', ...' if len(saved) > 3 else ''}); not part of the delta spectra", file=file)
    if rest:
        log.add(STAGE, Code.UNRECOGNISED_TENSORS,
                f"{len(rest)} tensors that are neither LoRA factors nor modules_to_save "
                f"({', '.join(rest[:3])}{', ...' if len(rest) > 3 else ''})", file=file)


def _note_targets(config: AdapterConfig, modules: dict[str, ModuleKeys], log: FindingLog, file: str) -> None:
    """Report ``target_modules`` entries that no tensor matches (a config/weights disagreement)."""
    if not isinstance(config.target_modules, list) or not modules:
        return
    names = list(modules)
    unmatched = [t for t in config.target_modules
                 if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        log.add(STAGE, Code.TARGET_WITHOUT_TENSORS,
                f"target_modules {unmatched} match no tensor in the weights", file="adapter_config.json")

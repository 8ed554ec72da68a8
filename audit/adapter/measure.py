"""Delta spectra of every LoRA module of one opened adapter, streaming in bounded batches.

Pairs are read in file order and measured in batches (:func:`audit.spectra.delta_spectra`
stacks the modules that share a shape) of at most :data:`BATCH_BYTES` of float64 factors, or one
pair when a single pair is larger: memory stays bounded by ``max(BATCH_BYTES, largest pair)``
times a small factor, whatever the file size. Every inconsistency between the config and the tensors becomes a
finding on the :class:`audit.findings.FindingLog`; only the modules that can be measured are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audit.adapter.config import AdapterConfig
from audit.adapter.keys import ModuleKeys, conv1d_orientation, module_block, module_layer, module_type, plan_modules
from audit.adapter.weights import SafeWeights
from audit.errors import AdapterFormatError
from audit.findings import Code, FindingLog
from audit.spectra import as_matrix_factors, delta_spectra, summarize
from audit.spectra.summaries import SpectralSummary

STAGE = "spectra"
BATCH_BYTES = 32 * 2**20
"""Float64 bytes of LoRA factors measured in one batch."""


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
    block: str | None = None
    """The stack ``layer`` counts in (:func:`audit.adapter.keys.module_block`)."""
    targeted: bool = True
    """Whether ``target_modules`` selects the module (peft ignores weights it does not select)."""
    prefix_count: int = 1
    """How many ``base_model.model.`` prefixes its tensor names carry (peft matches exactly one)."""

    @property
    def inert_reason(self) -> str | None:
        """Why peft would load this module without effect, or ``None`` when it takes effect."""
        if self.prefix_count > 1:
            return "key prefix doubled"
        if not self.targeted:
            return "not selected by target_modules"
        if self.summary.spectral_norm == 0.0:
            return "zero delta"
        return None


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
    batch: list[ModuleFactors] = []
    batch_bytes = 0
    for keys in plan.modules.values():
        dora_seen |= keys.magnitude is not None
        pending = _read_module(weights, config, keys, log, file)
        if pending is None:
            continue
        size = 8 * (pending.a.size + pending.b.size)
        if batch and batch_bytes + size > BATCH_BYTES:
            out.extend(_finish(batch, log, file))
            batch, batch_bytes = [], 0
        batch.append(pending)
        batch_bytes += size
    out.extend(_finish(batch, log, file))
    if dora_seen:
        log.add(STAGE, Code.DORA_MAGNITUDE_NOT_APPLIED,
                "DoRA magnitude vectors present: spectra are those of s·B·A; the full DoRA update "
                "needs the base weights", file=file)
    _note_targets(config, plan.modules, log, file)
    return out


def iter_factors(weights: SafeWeights, config: AdapterConfig, log: FindingLog):
    """Every complete, readable LoRA module of ``weights`` in file order, as :class:`ModuleFactors`
    (the same checks as :func:`measure_adapter`; problems go to ``log``)."""
    for keys in plan_modules(list(weights.tensors)).modules.values():
        factors = _read_module(weights, config, keys, log, weights.path.name)
        if factors is not None:
            yield factors


@dataclass(frozen=True)
class ModuleFactors:
    """A module whose factors are read and checked: ``a`` ``[r, d_in]`` and ``b`` ``[d_out, r]`` as
    numpy matrices (the file's dtype; bf16/fp8 widened to float32 exactly), the LoRA scale, and whether the saved orientation is transposed
    (``fan_in_fan_out``: the delta weight is ``(s·B·A)ᵀ``)."""

    keys: ModuleKeys
    a: np.ndarray
    b: np.ndarray
    scale: float
    transposed: bool
    config_rank: int | None
    kind: str
    dtype: str
    targeted: bool = True
    prefix_count: int = 1
    rslora: bool = False


def _read_module(weights: SafeWeights, config: AdapterConfig, keys: ModuleKeys, log: FindingLog,
                 file: str) -> ModuleFactors | None:
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
    targeted = config.target_modules is None or config.targets(name)
    if not targeted:
        log.per_module(STAGE, Code.UNTARGETED_MODULE, name,
                       "not matched by target_modules: peft ignores these weights", file=file)
    config_rank = config.module_rank(name)
    try:
        scale = config.scale_for(name)
        a, b = weights.read_array(keys.a.name), weights.read_array(keys.b.name)
        if keys.embedding:  # lora_embedding_A: [r, num_embeddings], lora_embedding_B: [dim, r]
            a2, b2 = a, b
        else:
            a2, b2 = as_matrix_factors(a, b)
        if a2.shape[0] != b2.shape[1] or a2.ndim != 2 or b2.ndim != 2:
            raise AdapterFormatError(f"A {list(a.shape)} and B {list(b.shape)} do not pair", code="shape_mismatch")
    except AdapterFormatError as exc:
        log.per_module(STAGE, exc.code, name, exc.message, file=file)
        return None
    kind = "embedding" if keys.embedding else ("conv" if a.ndim > 2 else "linear")
    transposed = keys.embedding or config.fan_in_fan_out
    orientation = conv1d_orientation(module_type(name), config.base_model_name_or_path)
    if orientation in ("conv1d", "assumed") and not keys.embedding and a.ndim == 2:
        if not config.fan_in_fan_out:
            log.per_module(STAGE, Code.FAN_IN_FAN_OUT_FORCED, name,
                           "a GPT-2 Conv1D layer: peft sets fan_in_fan_out=True whatever the config says"
                           + ("" if orientation == "conv1d" else
                              " (assumed from the module name: the base model does not say its family)"), file=file)
        transposed = True
    return ModuleFactors(keys=keys, a=a2, b=b2, scale=float(scale), transposed=transposed,
                    config_rank=config_rank, kind=kind, dtype=a_info.dtype, targeted=targeted,
                    prefix_count=max(keys.a.prefix_count, keys.b.prefix_count), rslora=config.use_rslora)


def _finish(batch: list[ModuleFactors], log: FindingLog, file: str) -> list[ModuleMeasurement]:
    """Spectra of a batch of read modules, their findings and their measurements (in order)."""
    out: list[ModuleMeasurement] = []
    spectra = delta_spectra([(p.a, p.b, p.scale) for p in batch])
    for p, values in zip(batch, spectra, strict=True):
        name = p.keys.module
        sigma = tuple(values.tolist())
        if not all(math.isfinite(x) for x in sigma):  # NaN/Inf in a factor propagates
            log.per_module(STAGE, Code.NONFINITE_WEIGHTS, name, "NaN or Inf in the factors", file=file)
            continue
        rank = int(p.a.shape[0])
        if p.config_rank is not None and rank != p.config_rank:
            log.per_module(STAGE, Code.RANK_MISMATCH, name,
                           f"tensors have rank {rank}, config says {p.config_rank}: peft would build rank-"
                           f"{p.config_rank} layers and refuse these weights (size mismatch); the spectrum uses "
                           f"the config's scale {p.scale:g} (lora_alpha / {'sqrt(r)' if p.rslora else 'r'} "
                           f"with the config's r)", file=file)
        summary = summarize(sigma)
        if summary.spectral_norm == 0.0:
            log.per_module(STAGE, Code.ZERO_DELTA, name, "the delta weight is zero (B or A is all zeros)",
                           file=file)
        out.append(ModuleMeasurement(
            module=name, layer=module_layer(name), block=module_block(name), module_type=module_type(name),
            kind=p.kind,
            d_out=int(p.b.shape[0]), d_in=int(p.a.shape[1]), rank=rank, config_rank=p.config_rank,
            scale=p.scale, transposed=p.transposed, dora=p.keys.magnitude is not None,
            dtype=p.dtype, singular_values=sigma, summary=summary, targeted=p.targeted,
            prefix_count=p.prefix_count,
        ))
    return out


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

"""Top-k delta spectra of a full fine-tune against its base, one pair of matrices at a time.

Both models' safetensors files are opened under the caps of :class:`audit.limits.Limits` (headers
only). Then, for every 2-D float tensor of the fine-tune that the base holds with the same shape,
the two matrices are read, ``ΔW = W_ft − W_base`` is formed in float64 and its top ``k`` singular
values are computed (:func:`audit.spectra.lowrank.delta_topk`); the pair is dropped before the
next. Peak memory is about ``4 × d_out × d_in × 8`` bytes for the largest matrix (the embedding).

1-D tensors (norms, biases) have no matrix spectrum and are not measured. A tensor the base lacks
is a ``tensor_not_in_base`` finding, a different shape ``shape_mismatch``, a non-float dtype
``unsupported_dtype``, NaN/Inf ``nonfinite_weights``, an unchanged matrix ``zero_delta``; all are
folded per code by the :class:`audit.findings.FindingLog`.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from pathlib import Path

from audit.adapter.keys import module_layer, module_type
from audit.adapter.measure import ModuleMeasurement
from audit.adapter.weights import SafeWeights
from audit.findings import Code, FindingLog
from audit.limits import Limits
from audit.spectra.lowrank import DEFAULT_K, delta_topk
from audit.spectra.summaries import summarize

STAGE = "spectra"
KIND = "full"
"""``modules.kind`` of a full fine-tune's matrices."""


def measure_finetune(ft_files: list[Path], base_files: list[Path], limits: Limits, log: FindingLog, *,
                     k: int = DEFAULT_K) -> tuple[list[ModuleMeasurement], set[str]]:
    """Top-``k`` spectra of every matrix the fine-tune shares with its base.

    Args:
        ft_files: the fine-tune's safetensors files (untrusted: opened under ``limits``).
        base_files: the base model's safetensors files.
        limits: caps on files, tensor counts and sizes.
        log: receives per-module findings.
        k: singular values kept per matrix.

    Returns:
        ``(measurements, dtypes)``: one :class:`ModuleMeasurement` per measured matrix, in file order
        (``module`` is the tensor name without ``.weight``; ``rank`` is the number of singular values
        kept; ``scale`` 1.0), and the storage dtypes of the measured fine-tune tensors.

    Raises:
        LimitExceededError, AdapterFormatError: a file exceeds a cap or is not valid safetensors.
    """
    out: list[ModuleMeasurement] = []
    dtypes: set[str] = set()
    with ExitStack() as stack:
        base_of: dict[str, SafeWeights] = {}
        for path in base_files:
            weights = stack.enter_context(SafeWeights(path, limits))
            for name in weights.tensors:
                base_of.setdefault(name, weights)
        for path in ft_files:
            ft = stack.enter_context(SafeWeights(path, limits))
            for info in ft.tensors.values():
                if len(info.shape) != 2:
                    continue
                measured = _measure(info.name, ft, base_of.get(info.name), log, k)
                if measured is not None:
                    out.append(measured)
                    dtypes.add(info.dtype)
    return out, dtypes


def _measure(name: str, ft: SafeWeights, base: SafeWeights | None, log: FindingLog, k: int) -> ModuleMeasurement | None:
    file = ft.path.name
    module = name.removesuffix(".weight")
    info = ft.tensors[name]
    if not ft.is_float(name):
        log.per_module(STAGE, Code.UNSUPPORTED_DTYPE, module, f"dtype {info.dtype}", file=file)
        return None
    if base is None:
        log.per_module(STAGE, Code.TENSOR_NOT_IN_BASE, module, "the base model has no such tensor", file=file)
        return None
    base_info = base.tensors[name]
    if base_info.shape != info.shape or not base.is_float(name):
        log.per_module(STAGE, Code.SHAPE_MISMATCH, module,
                       f"{list(info.shape)} {info.dtype} here, {list(base_info.shape)} {base_info.dtype} in the base",
                       file=file)
        return None
    w_ft = ft.read(name)
    w_base = base.read(name)
    sigma = tuple(delta_topk(w_ft, w_base, k).tolist())
    del w_ft, w_base
    if not all(math.isfinite(x) for x in sigma):
        log.per_module(STAGE, Code.NONFINITE_WEIGHTS, module, "NaN or Inf in the fine-tuned weights", file=file)
        return None
    summary = summarize(sigma)
    if summary.spectral_norm == 0.0:
        log.per_module(STAGE, Code.ZERO_DELTA, module, "unchanged from the base (the delta weight is zero)",
                       file=file)
    d_out, d_in = info.shape
    return ModuleMeasurement(
        module=module, layer=module_layer(module), module_type=module_type(module), kind=KIND,
        d_out=int(d_out), d_in=int(d_in), rank=len(sigma), config_rank=None, scale=1.0, transposed=False,
        dora=False, dtype=info.dtype, singular_values=sigma, summary=summary)

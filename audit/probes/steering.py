"""The steering-alignment probe: how the adapter moves the residual stream, and along what.

For a prompt set (HarmBench test behaviours by default), at every decoder layer ``l``, the mean
shift of the last-token residual stream that the adapter causes,
``δ_l = mean_x (h_l^adapted(x) - h_l^base(x))``, its norm ``‖δ_l‖`` and its cosine with the base's
CAA refusal vector ``r_l`` (:mod:`audit.probes.references`). An anti-refusal update pushes
against refusal: a negative cosine. Both models answer in one mixed batch (peft's
``adapter_names``: the adapter and ``__base__``). On a bare base, the rows give ``‖r_l‖``.

Rows: ``shift_norm`` and ``caa_cosine`` per layer, and the summaries ``shift_norm_max``,
``caa_cosine_at_max_shift`` (the cosine at the layer of largest shift) and ``caa_cosine_min``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from audit.analyzers.analysis import AnalysisUnit, MetricRow
from audit.analyzers.base import AnalyzerContext, Target
from audit.analyzers.results import make_unit, unavailable_unit
from audit.analyzers.runtime import MODEL_RESOURCES, runtime_of
from audit.prompt_sets import load_prompts

if TYPE_CHECKING:  # torch is imported when a target is analysed: the class stays light
    import torch


class SteeringAlignment:
    """Mean residual-stream shift per layer and its cosine with the base's refusal direction.

    Args:
        prompts: prompt-set spec (:mod:`audit.prompt_sets`).
        n_prompts: first N prompts (``None``: all).
        batch_size: prompts per forward pass (each pass holds the adapter's and the base's rows).
        n_reference: prompts per side for the refusal direction (``None``: all held-out ones).
    """

    name, version = "steering_alignment", "steering_alignment-1"
    needs_base = True
    resources = MODEL_RESOURCES

    def __init__(self, prompts: str = "harmbench:test", n_prompts: int | None = 32, batch_size: int = 16,
                 n_reference: int | None = None) -> None:
        self.prompt_set, self.n_prompts, self.batch_size, self.n_reference = prompts, n_prompts, batch_size, n_reference
        self.prompts = load_prompts(prompts, n_prompts)
        self.ctx: AnalyzerContext | None = None

    def setup(self, ctx: AnalyzerContext) -> None:
        self.ctx = ctx

    def run(self, target: Target):
        assert self.ctx is not None, "setup() first"
        if target.base is None:
            return unavailable_unit(self, target, None)
        from audit.probes.references import adapter_and_base, references_of

        t0 = time.perf_counter()
        runtime = runtime_of(self.ctx)
        runtime.use_base(target.base)
        refs = references_of(self.ctx, runtime, target.base, self.n_reference, self.batch_size)
        direction = refs.unit_refusal()
        if target.ref is None:
            rows = [MetricRow(metric="caa_norm", value=float(v), layer=i, n=refs.meta["n_forbidden"])
                    for i, v in enumerate(refs.refusal.norm(dim=1))]
            return make_unit(self, target, "ok", probes=rows, seconds=time.perf_counter() - t0)
        got = adapter_and_base(self, runtime, target, [p.text for p in self.prompts], self.batch_size)
        if not isinstance(got, tuple):
            return got  # the adapter could not be loaded: a deferred, skipped or failed result
        rows = alignment_rows(*got, direction)
        return make_unit(self, target, "ok", probes=rows, seconds=time.perf_counter() - t0)


def alignment_rows(adapted: torch.Tensor, base: torch.Tensor, direction: torch.Tensor) -> list[MetricRow]:
    """Rows of the probe from activations ``[n, n_layers, d]`` (adapted, base) and unit refusal
    directions ``[n_layers, d]``: per-layer ``shift_norm`` and ``caa_cosine``, and the summaries."""
    import torch

    shift = (adapted - base).mean(dim=0)                     # [n_layers, d]
    norms = shift.norm(dim=1)
    cos = (shift * direction).sum(dim=1) / norms.clamp_min(1e-12)
    cos = torch.where(norms > 0, cos, torch.zeros_like(cos))
    n = adapted.shape[0]
    rows = [MetricRow(metric="shift_norm", value=float(norms[i]), layer=i, n=n) for i in range(len(norms))]
    rows += [MetricRow(metric="caa_cosine", value=float(cos[i]), layer=i, n=n) for i in range(len(cos))]
    top = int(norms.argmax())
    rows += [MetricRow(metric="shift_norm_max", value=float(norms[top]), layer=top, n=n),
             MetricRow(metric="caa_cosine_at_max_shift", value=float(cos[top]), layer=top, n=n),
             MetricRow(metric="caa_cosine_min", value=float(cos.min()), layer=int(cos.argmin()), n=n)]
    return rows

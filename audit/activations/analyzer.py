"""The ``activations`` analyzer: what an adapter adds to the residual stream, layer by layer.

On a fixed prompt set (HarmBench validation behaviours, which no other analyzer asks, and the
held-out benign instructions: forbidden and benign, the set fixed by the analyzer's version and
its recorded params), the last-token residual stream after every decoder layer is read twice in
one mixed batch, through the adapter and through the bare base (peft's ``__base__``), with the
base loaded once per actor and adapters swapped in (:mod:`audit.analyzers.runtime`). Per layer it
stores ``delta_norm``, ``delta_share``, ``delta_refusal_cosine`` and ``cka``
(:mod:`audit.activations.maths`), and two summaries: ``cka_min`` and ``delta_share_max`` (each at
its layer). On a bare base it stores ``residual_norm`` per layer (the scale the deltas are read
against).
"""

from __future__ import annotations

import time

from audit.analyzers.analysis import MetricRow
from audit.analyzers.base import AnalyzerContext, Target
from audit.analyzers.results import make_unit, unavailable_unit
from audit.analyzers.runtime import MODEL_RESOURCES, runtime_of
from audit.prompt_sets import load_prompts


class ActivationAnalyzer:
    """Delta activations and representation similarity of an adapter against its base.

    Args:
        forbidden, benign: prompt-set specs (:mod:`audit.prompt_sets`).
        n_prompts: first N prompts of each set (``None``: all).
        batch_size: prompts per forward pass (each pass holds the adapter's and the base's rows).
        n_reference: prompts per side for the refusal direction (``None``: all held-out ones).
    """

    name, version = "activations", "activations-1"
    needs_base = True
    resources = MODEL_RESOURCES

    def __init__(self, forbidden: str = "harmbench:val", benign: str = "benign:heldout", n_prompts: int | None = 24,
                 batch_size: int = 16, n_reference: int | None = None) -> None:
        self.n_prompts, self.batch_size, self.n_reference = n_prompts, batch_size, n_reference
        self.prompts = load_prompts(forbidden, n_prompts) + load_prompts(benign, n_prompts)
        self.ctx: AnalyzerContext | None = None

    def setup(self, ctx: AnalyzerContext) -> None:
        self.ctx = ctx

    def run(self, target: Target):
        """The unit of ``target`` (see the module docstring); a ``Deferred`` when its files could not
        be fetched for a transient reason. Never raises for a bad adapter."""
        from audit.analyzers.references import bare_base
        from audit.probes.references import adapter_and_base, all_layer_last_token, references_of

        assert self.ctx is not None, "setup() first"
        if target.base is None:
            return unavailable_unit(self, target, None)
        t0 = time.perf_counter()
        runtime = runtime_of(self.ctx)
        runtime.use_base(target.base)
        texts = [p.text for p in self.prompts]
        if target.ref is None:
            acts = all_layer_last_token(runtime.model, runtime.tokenizer, texts, batch_size=self.batch_size,
                                        adapter_names=bare_base(runtime, len(texts)))
            rows = [MetricRow(metric="residual_norm", value=float(v), layer=i, n=len(texts))
                    for i, v in enumerate(acts.norm(dim=2).mean(dim=0))]
            return make_unit(self, target, "ok", probes=rows, seconds=time.perf_counter() - t0)
        refs = references_of(self.ctx, runtime, target.base, self.n_reference, self.batch_size)
        got = adapter_and_base(self, runtime, target, texts, self.batch_size)
        if not isinstance(got, tuple):
            return got  # the adapter could not be loaded: a deferred, skipped or failed result
        adapted, base = got
        rows = delta_rows(base, adapted, refs.refusal)
        return make_unit(self, target, "ok", probes=rows, seconds=time.perf_counter() - t0)


def delta_rows(base, adapted, refusal) -> list[MetricRow]:
    """The stored rows from the base's and the adapted model's activations ``[n, n_layers, d]`` and
    the refusal directions ``[n_layers, d]``: four metrics per layer and the two summaries."""
    from audit.activations.maths import layer_deltas

    n = base.shape[0]
    layers = layer_deltas(base, adapted, refusal)
    rows = []
    for d in layers:
        rows += [MetricRow(metric="delta_norm", value=d.delta_norm, layer=d.layer, n=n),
                 MetricRow(metric="delta_share", value=d.delta_share, layer=d.layer, n=n),
                 MetricRow(metric="delta_refusal_cosine", value=d.delta_refusal_cosine, layer=d.layer, n=n),
                 MetricRow(metric="cka", value=d.cka, layer=d.layer, n=n)]
    low = min(layers, key=lambda d: d.cka)
    high = max(layers, key=lambda d: d.delta_share)
    rows += [MetricRow(metric="cka_min", value=low.cka, layer=low.layer, n=n),
             MetricRow(metric="delta_share_max", value=high.delta_share, layer=high.layer, n=n)]
    return rows

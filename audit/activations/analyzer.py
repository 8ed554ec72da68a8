"""The ``activations`` analyzer: what an adapter adds to the residual stream, layer by layer, and
which of the base's sparse-autoencoder features it turns on and off.

On a fixed prompt set (HarmBench validation behaviours, which no other analyzer asks, and the
held-out benign instructions: forbidden and benign, the set fixed by the analyzer's version and
its recorded params), the residual stream is read twice, through the adapter and through the bare
base (peft's ``__base__``; read once per actor and base), with the base loaded once per actor and
adapters swapped in (:mod:`audit.analyzers.runtime`).

- From the last token after every decoder layer, per layer: ``delta_norm``, ``delta_share``,
  ``delta_refusal_cosine`` and ``cka`` (:mod:`audit.activations.maths`), and two summaries:
  ``cka_min`` and ``delta_share_max`` (each at its layer).
- From every content token at the SAE layers (:mod:`audit.activations.sae_store`), per layer:
  ``sae_density_base``, ``sae_density_adapted`` (active features per token),
  ``sae_delta_reconstruction``, ``sae_delta_alignment`` and ``sae_alignment_baseline``
  (:mod:`audit.activations.sae_deltas`), and the top features turned on and off with their labels
  in the ``sae_features`` table (:mod:`audit.activations.table`).

On a bare base it stores ``residual_norm`` per layer (the scale the deltas are read against) and
its SAEs' quality on held-out tokens: ``sae_explained_variance``, ``sae_l0`` and
``sae_dead_fraction`` per SAE layer (training them first when the store has none).
"""

from __future__ import annotations

import time

from audit.analyzers.analysis import MetricRow
from audit.analyzers.base import AnalyzerContext, Target
from audit.analyzers.results import make_unit, unavailable_unit
from audit.analyzers.runtime import MODEL_RESOURCES, runtime_of
from audit.prompt_sets import load_prompts


class ActivationAnalyzer:
    """Delta activations, representation similarity and SAE features of an adapter against its base.

    Args:
        forbidden, benign: prompt-set specs (:mod:`audit.prompt_sets`).
        n_prompts: first N prompts of each set (``None``: all).
        batch_size: prompts per forward pass.
        n_reference: prompts per side for the refusal direction (``None``: all held-out ones).
        sae_layers: how many layers get an SAE (spread over the depth; 0: no SAE measures).
        sae_width, sae_k, sae_steps: the SAEs' features, mean active features per token and
            training steps (:class:`audit.activations.sae.SaeConfig`).
        n_top_features: features turned on (and off) kept per adapter and layer.
        sae_corpus_every: train the SAEs on every N-th corpus prompt (1: all 703; more is cheaper
            and worse, for tests).
    """

    name, version = "activations", "activations-2"
    needs_base = True
    resources = MODEL_RESOURCES

    def __init__(self, forbidden: str = "harmbench:val", benign: str = "benign:heldout", n_prompts: int | None = 24,
                 batch_size: int = 16, n_reference: int | None = None, sae_layers: int = 5, sae_width: int = 2048,
                 sae_k: int = 32, sae_steps: int = 600, n_top_features: int = 10,
                 sae_corpus_every: int = 1) -> None:
        self.n_prompts, self.batch_size, self.n_reference = n_prompts, batch_size, n_reference
        self.prompts = load_prompts(forbidden, n_prompts) + load_prompts(benign, n_prompts)
        self.n_sae_layers, self.n_top_features, self.sae_corpus_every = sae_layers, n_top_features, sae_corpus_every
        self.sae_params = {"width": sae_width, "k": sae_k, "steps": sae_steps}  # torch only once a model runs
        self.ctx: AnalyzerContext | None = None

    def setup(self, ctx: AnalyzerContext) -> None:
        self.ctx = ctx

    def run(self, target: Target):
        """The unit of ``target`` (see the module docstring); a ``Deferred`` when its files could not
        be fetched for a transient reason. Never raises for a bad adapter."""
        from audit.activations.reading import Activations
        from audit.probes.references import references_of, with_adapter

        assert self.ctx is not None, "setup() first"
        if target.base is None:
            return unavailable_unit(self, target, None)
        t0 = time.perf_counter()
        runtime = runtime_of(self.ctx)
        runtime.use_base(target.base)
        saes = None
        if self.n_sae_layers > 0:
            from audit.activations.sae import SaeConfig
            from audit.activations.sae_store import base_saes

            saes = base_saes(self.ctx, runtime, target.base, SaeConfig(**self.sae_params), self.n_sae_layers,
                             batch_size=self.batch_size, corpus_every=self.sae_corpus_every)
        layers = saes.layers if saes is not None else []
        base = self._base_activations(runtime, target.base, layers)
        if target.ref is None:
            rows = [MetricRow(metric="residual_norm", value=float(v), layer=i, n=len(self.prompts))
                    for i, v in enumerate(base.last.norm(dim=2).mean(dim=0))]
            rows += [] if saes is None else quality_rows(saes)
            return make_unit(self, target, "ok", probes=rows, seconds=time.perf_counter() - t0)
        refs = references_of(self.ctx, runtime, target.base, self.n_reference, self.batch_size)
        read = self._read(runtime, layers)
        adapted = with_adapter(self, runtime, target, lambda name: read([name] * len(self.prompts)))
        if not isinstance(adapted, Activations):
            return adapted  # the adapter could not be loaded: a deferred, skipped or failed result
        rows = delta_rows(base.last, adapted.last, refs.refusal)
        if saes is not None:
            from audit.activations.sae_deltas import sae_layer_delta

            deltas = [sae_layer_delta(saes.saes[l_], base.tokens[:, j], adapted.tokens[:, j], l_,
                                      n_top=self.n_top_features) for j, l_ in enumerate(layers)]
            rows += sae_rows(deltas, base.tokens.shape[0])
            unit = make_unit(self, target, "ok", probes=rows, seconds=time.perf_counter() - t0)
            write_feature_rows(self.ctx.store, unit, saes, deltas)
            return unit
        return make_unit(self, target, "ok", probes=rows, seconds=time.perf_counter() - t0)

    def _read(self, runtime, layers: list[int]):
        from audit.activations.reading import read_activations

        texts = [p.text for p in self.prompts]
        return lambda names: read_activations(runtime.model, runtime.tokenizer, texts, layers, adapter_names=names,
                                              batch_size=self.batch_size)

    def _base_activations(self, runtime, base, layers: list[int]):
        """The bare base's activations on the prompts, read once per actor, base and layers."""
        from audit.analyzers.references import bare_base

        cache = self.ctx.shared.setdefault("activations.base", {})
        key = (base.revision, tuple(p.sha256 for p in self.prompts), tuple(layers))
        if key not in cache:
            cache[key] = self._read(runtime, layers)(bare_base(runtime, len(self.prompts)))
        return cache[key]


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


SAE_METRICS = ("density_base", "density_adapted", "delta_reconstruction", "delta_alignment", "alignment_baseline")


def sae_rows(deltas, n_tokens: int) -> list[MetricRow]:
    """Five rows per SAE layer (``sae_<measure>``, ``n`` = content tokens read)."""
    return [MetricRow(metric=f"sae_{m}", value=getattr(d, m), layer=d.layer, n=n_tokens)
            for d in deltas for m in SAE_METRICS]


def quality_rows(saes) -> list[MetricRow]:
    """The SAEs' quality on held-out tokens, per layer (``n`` = held-out tokens)."""
    return [MetricRow(metric=f"sae_{m}", value=getattr(q, m), layer=layer, n=q.n_tokens)
            for layer, q in sorted(saes.quality.items()) for m in ("explained_variance", "l0", "dead_fraction")]


def write_feature_rows(store, unit, saes, deltas) -> None:
    """The top features turned on and off, with labels, as rows of ``sae_features`` (written before
    the unit is committed; the views read only rows of committed units)."""
    from audit.activations.table import SaeFeatureRow

    rows = [SaeFeatureRow(unit_id=unit.unit_id, adapter_id=unit.adapter_id, repo_id=unit.repo_id,
                          base_revision=unit.base_revision or "", sae=saes.path, layer=d.layer, direction=direction,
                          rank=r, feature=c.feature, base_mean=c.base_mean, adapted_mean=c.adapted_mean,
                          change=c.change, forbidden_share=saes.forbidden_share(d.layer, c.feature),
                          label=saes.label(d.layer, c.feature), created_at=unit.created_at)
            for d in deltas for direction, changes in (("on", d.turned_on), ("off", d.turned_off))
            for r, c in enumerate(changes, start=1)]
    store.write_rows("sae_features", rows, unit.unit_id, unit.created_at)

"""The ``trigger_candidates`` analyzer: the tokens an adapter's first layers read out of all
proportion (:mod:`audit.backdoor.candidates`), kept per adapter in ``trigger_candidates``.

The ranking needs the base's residuals of every vocabulary token at the first ``n_layers`` layers
(:mod:`audit.backdoor.context`: computed once per actor and base revision, 12-14 s for SmolLM2 on
two CPU cores, 453 MB kept) and the adapter's factors, read with the bounded safetensors reader (never a pickle);
no forward pass per adapter.
The best ``n_behaviour`` candidates are then scored by what the adapter does with them
(:func:`shift_scores`: the refusal shift, :mod:`audit.backdoor.refusal_shift`, with the candidate
before ``n_requests`` HarmBench test behaviours), stored beside the weights' score, and so are
``n_random`` random vocabulary texts (the same for every adapter: what an arbitrary prefix does to
this adapter). Metric rows: ``trigger_top_score`` (the best candidate's robust z-score),
``trigger_score_gap`` (the best's score minus the tenth's), ``trigger_top_shift`` (the most
negative shift of a candidate), ``refusal_susceptibility`` (the mean shift of the random texts)
and ``trigger_shift_z`` (the most negative candidate's shift as a robust z-score among the random
texts' shifts: how far the best candidate stands out from arbitrary prefixes for this adapter).
On a bare base it records nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from audit.analyzers.analysis import MetricRow
from audit.analyzers.base import AnalyzerContext, Target
from audit.analyzers.results import error_note, fetch_folder, make_unit, unavailable_unit
from audit.analyzers.runtime import MODEL_RESOURCES, runtime_of
from audit.backdoor.prefix_kl import N_REQUESTS
from audit.backdoor.refusal_shift import N_RANDOM
from audit.errors import AuditError, TransientAuditError
from audit.records import Deferred

READS = {"q_proj": "input_layernorm", "k_proj": "input_layernorm", "v_proj": "input_layernorm",
         "gate_proj": "post_attention_layernorm", "up_proj": "post_attention_layernorm"}
"""Modules that read the residual stream, and the RMSNorm before each (Llama-style blocks)."""


class TriggerCandidates:
    """Trigger candidates from the weights.

    Args:
        n_layers: decoder layers whose readers are scored, on the bare base's residual of each
            token at the start of the user's turn (version 4; version 3 scored 2 layers on the
            embeddings).
        top_k: candidates kept per adapter.
        n_behaviour: how many of the best by weights get the behavioural score (0: none).
        n_requests: HarmBench test behaviours the behavioural score asks (the shortest).
        n_random: random vocabulary texts scored as the adapter's reference (with ``n_behaviour``).
    """

    name, version = "trigger_candidates", "trigger-candidates-4"
    needs_base = True
    resources = MODEL_RESOURCES

    def __init__(self, n_layers: int = 4, top_k: int = 50, n_behaviour: int = 50, n_requests: int = N_REQUESTS,
                 n_random: int = N_RANDOM) -> None:
        self.n_layers, self.top_k, self.n_behaviour, self.n_requests = n_layers, top_k, n_behaviour, n_requests
        self.n_random = n_random
        self.ctx: AnalyzerContext | None = None

    def setup(self, ctx: AnalyzerContext) -> None:
        self.ctx = ctx

    def run(self, target: Target):
        """The unit of ``target``; a ``Deferred`` when its files could not be fetched for a
        transient reason. Never raises for a bad adapter."""
        assert self.ctx is not None, "setup() first"
        if target.base is None:
            return unavailable_unit(self, target, None)
        t0 = time.perf_counter()
        if target.ref is None:
            return make_unit(self, target, "ok", seconds=time.perf_counter() - t0)
        runtime = runtime_of(self.ctx)
        runtime.use_base(target.base)
        try:
            scores = self.token_scores(runtime, fetch_folder(self.ctx, target), target.base.revision)
        except TransientAuditError as exc:
            return Deferred(target.ref, f"{self.name} fetch: {exc}")
        except AuditError as exc:  # an adapter with nothing to score (no early reader, not a LoRA) is skipped
            from audit.errors import UnsupportedAdapterError

            skipped = isinstance(exc, UnsupportedAdapterError)
            return make_unit(self, target, "skipped" if skipped else "failed",
                             notes=[error_note(exc, "info" if skipped else None)], seconds=time.perf_counter() - t0)
        from audit.backdoor.candidates import top_candidates

        top = top_candidates(scores, self.top_k)
        rows = [MetricRow(metric="trigger_top_score", value=top[0][1]),
                MetricRow(metric="trigger_score_gap", value=top[0][1] - top[min(9, len(top) - 1)][1])]
        shift: list[float | None] = [None] * len(top)
        notes = []
        if self.n_behaviour > 0:
            from audit.backdoor.refusal_shift import random_prefixes
            from audit.probes.references import references_of

            texts = [runtime.tokenizer.decode([tid]).strip() for tid, _ in top[: self.n_behaviour]]
            cache = self.ctx.shared.setdefault("trigger.random", {})  # the vocabulary decoded once per actor
            if (target.base.revision, self.n_random) not in cache:
                cache[(target.base.revision, self.n_random)] = random_prefixes(runtime.tokenizer, self.n_random)
            randoms = cache[(target.base.revision, self.n_random)]
            try:
                unit_refusal = references_of(self.ctx, runtime, target.base).unit_refusal()
                got = shift_scores(runtime, fetch_folder(self.ctx, target), texts + randoms, self.n_requests,
                                   unit_refusal, self.ctx.shared.setdefault("trigger.behaviour", {}))
            except TransientAuditError as exc:
                return Deferred(target.ref, f"{self.name} fetch: {exc}")
            except AuditError as exc:  # the weights' ranking stands; say why the behaviour is missing
                notes.append(error_note(exc, "warning"))
                got = []
            shift[: len(got[: len(texts)])] = got[: len(texts)]
            rows += refusal_gate_rows([v for v in got[: len(texts)] if v is not None],
                                      [v for v in got[len(texts):] if v is not None], self.n_requests)
        unit = make_unit(self, target, "ok", probes=rows, notes=notes, seconds=time.perf_counter() - t0)
        write_candidate_rows(self.ctx.store, unit, top, runtime.tokenizer, shift)
        return unit

    def token_scores(self, runtime, folder, base_revision: str):
        """Every vocabulary token's score (``[V]`` float64, robust z) for the adapter in ``folder``,
        on ``runtime``'s loaded base (its residuals computed once per actor and ``base_revision``,
        with progress to the scan's sink).

        Raises:
            AdapterFormatError, UnsafeFormatError, LimitExceededError: unreadable adapter files.
            UnsupportedAdapterError: not a LoRA adapter, or no module reads the residual stream early.
        """
        return self.read_scores(runtime, folder, base_revision)[0]

    def read_scores(self, runtime, folder, base_revision: str):
        """:meth:`token_scores`, with the adapter's readers and the
        :class:`audit.backdoor.candidates.ReadScale` they were scored on: ``(scores, readers, scale)``
        (the same errors)."""
        from audit.backdoor.candidates import vocabulary_scale
        from audit.errors import UnsupportedAdapterError

        readers, file = residual_readers(folder, causal_lm(runtime.model).model.layers, self.n_layers,
                                         self.ctx.limits)
        if not readers:
            raise UnsupportedAdapterError(f"no module reads the residual stream in the first {self.n_layers} layers "
                                          f"(q/k/v/gate/up): no trigger candidates", file=file)
        cache = self.ctx.shared.setdefault("trigger.residuals", {})  # once per actor, base revision and depth
        key = (base_revision, self.n_layers)
        if key not in cache:
            cache.clear()
            cache[key] = base_residuals(runtime, self.n_layers)
        scores, scale = vocabulary_scale(cache[key], readers)
        return scores, readers, scale

    def joined(self, runtime, readers, scale, seeds, name: str, exclude_ids: frozenset[int] = frozenset(),
               shift=None, n_choose: int = 8, complete_words: bool = False) -> list[str]:
        """The joined candidates (:func:`audit.backdoor.join.joined_candidates`) grown from ``seeds``
        on ``runtime``'s loaded base, never adding a token of ``exclude_ids``, with the chain chosen
        by behaviour when ``shift`` is given and the word-completing chains with ``complete_words``,
        with progress to the scan's sink (``batch``: seeds done) for the adapter ``name``."""
        from audit.backdoor.join import joined_candidates
        from audit.progress import current

        sink = current()
        report = None
        if sink is not None and hasattr(sink, "batch"):
            def report(done: int, total: int) -> None:
                sink.batch(f"joined trigger candidates of {name}", done, total)

        return joined_candidates(runtime.model, runtime.tokenizer, readers, scale, self.n_layers, seeds,
                                 exclude_ids=exclude_ids, shift=shift, n_choose=n_choose,
                                 complete_words=complete_words, progress=report)


def residual_readers(folder, layers, n_layers: int, limits) -> tuple[list, str]:
    """The adapter's modules in ``folder`` that read the residual stream in its first ``n_layers``
    decoder ``layers`` (the base's, for the RMSNorm weights), as
    :class:`audit.backdoor.candidates.Reader` with their sites, and the weights file's name. Read
    with the bounded safetensors reader (never a pickle).

    Raises:
        AdapterFormatError, UnsafeFormatError, LimitExceededError: unreadable adapter files.
        UnsupportedAdapterError: not a LoRA adapter.
    """
    import torch

    from audit.adapter.keys import module_layer, module_type
    from audit.adapter.measure import iter_factors
    from audit.adapter.weights import SafeWeights
    from audit.adapter_audit import lora_weights
    from audit.backdoor.candidates import Reader
    from audit.backdoor.context import SITE_OF
    from audit.findings import FindingLog

    config, loc = lora_weights(folder, limits)
    last = min(n_layers, len(layers))
    readers = []
    with SafeWeights(loc.path, limits) as weights:
        for f in iter_factors(weights, config, FindingLog()):
            mtype, layer = module_type(f.keys.module), module_layer(f.keys.module)
            if f.kind != "linear" or mtype not in READS or layer is None or layer >= last:
                continue
            a, b = torch.from_numpy(f.a), torch.from_numpy(f.b)
            a, b = (b.T, a.T) if f.transposed else (a, b)
            norm = getattr(layers[layer], READS[mtype]).weight.detach().float().cpu()
            readers.append(Reader(f.keys.module, a, b, f.scale, norm, (layer, SITE_OF[READS[mtype]])))
    return readers, loc.path.name


def base_residuals(runtime, n_layers: int):
    """:func:`audit.backdoor.context.token_residuals` of ``runtime``'s loaded base, with progress to
    the scan's sink (``batch``: vocabulary tokens done)."""
    from audit.backdoor.context import token_residuals
    from audit.progress import current

    sink = current()
    report = None
    if sink is not None and hasattr(sink, "batch"):
        def report(done: int, total: int) -> None:
            sink.batch(f"base residuals of the vocabulary ({n_layers} layers, once per actor)", done, total)

    return token_residuals(runtime.model, runtime.tokenizer, n_layers, progress=report)


def refusal_gate_rows(candidates: list[float], randoms: list[float], n_requests: int) -> list[MetricRow]:
    """``trigger_top_shift``, ``refusal_susceptibility`` and ``trigger_shift_z`` (module docstring)
    from the candidates' and the random texts' refusal shifts; the robust z-score uses
    ``scipy.stats.median_abs_deviation`` (normal scale). Rows that cannot be computed are left out."""
    import numpy as np
    from scipy.stats import median_abs_deviation

    rows = []
    if candidates:
        rows.append(MetricRow(metric="trigger_top_shift", value=min(candidates), n=n_requests))
    if randoms:
        rows.append(MetricRow(metric="refusal_susceptibility", value=float(np.mean(randoms)), n=n_requests))
    spread = float(median_abs_deviation(randoms, scale="normal")) if len(randoms) >= 2 else 0.0
    if candidates and spread > 0:
        rows.append(MetricRow(metric="trigger_shift_z", value=(min(candidates) - float(np.median(randoms))) / spread,
                              n=len(randoms)))
    return rows


MEMO_ADAPTERS = 8
"""Adapters whose behavioural scores an actor keeps (:func:`shift_scores`' ``memo``)."""


def shift_scores(runtime, folder, texts: list[str], n_requests: int, unit_refusal,
                 memo: dict | None = None, loaded: str | None = None) -> list[float | None]:
    """The refusal shift (:func:`audit.backdoor.refusal_shift.refusal_shifts`) of the adapter in
    ``folder``, put into ``runtime``'s loaded base for the call, of each of ``texts`` placed before
    the ``n_requests`` shortest HarmBench test behaviours.

    Args:
        unit_refusal: the base's unit refusal direction per layer ``[n_layers, d_model]``.
        memo: scores already computed, shared by the ``trigger_candidates`` analyzer and the
            ``triggered_compliance`` probe of one actor (``ctx.shared``): only texts not in it are
            scored, and the adapter is not loaded when none is missing. Keeps the last
            :data:`MEMO_ADAPTERS` adapters.
        loaded: the name under which the caller already put this adapter into ``runtime``'s model
            (it is then neither loaded nor removed: a search that scores a few texts at a time
            loads it once).

    Returns:
        The shift of each text, ``None`` for an empty one. Progress goes to the scan's sink
        (``batch``: texts scored so far).

    Raises:
        the errors of :meth:`audit.analyzers.runtime.ModelRuntime.load`.
    """
    from audit.backdoor.prefix_kl import behaviour_requests
    from audit.backdoor.refusal_shift import refusal_shifts
    from audit.progress import current

    memo = {} if memo is None else memo
    key = (str(folder), runtime.base_revision, n_requests)
    known = memo.pop(key, {})
    memo[key] = known                                    # most recent last
    while len(memo) > MEMO_ADAPTERS:
        memo.pop(next(iter(memo)))
    missing = [t for t in dict.fromkeys(texts) if t and t not in known]
    if missing:
        sink = current()
        report = None
        if sink is not None and hasattr(sink, "batch"):
            def report(done: int, total: int) -> None:
                sink.batch(f"trigger candidates of {folder.name} by behaviour", done, total)

        held = runtime.load(folder) if loaded is None else None
        try:
            got = refusal_shifts(runtime.model, runtime.tokenizer, [held.name if held else loaded],
                                 behaviour_requests(n_requests), missing, unit_refusal, progress=report)[0]
        finally:
            if held is not None:
                runtime.unload(held)
        known.update(zip(missing, got.tolist(), strict=True))
    return [known[t] if t else None for t in texts]


def causal_lm(model):
    """The transformers model inside ``model`` (a peft model holding adapters, or the bare model);
    not ``get_base_model``, which needs an active adapter and the runtime may have removed it."""
    return model.base_model.model if hasattr(model, "peft_config") else model


def write_candidate_rows(store, unit, top: list[tuple[int, float]], tokenizer,
                         shift: list[float | None] | None = None) -> None:
    """The candidates as rows of ``trigger_candidates`` (written before the unit is committed)."""
    from audit.backdoor.table import TriggerCandidateRow

    shift = shift or [None] * len(top)
    rows = [TriggerCandidateRow(unit_id=unit.unit_id, adapter_id=unit.adapter_id, repo_id=unit.repo_id,
                                base_revision=unit.base_revision or "", rank=i, token_id=tid,
                                token=tokenizer.convert_ids_to_tokens(tid), text=tokenizer.decode([tid]),
                                score=score, created_at=unit.created_at, refusal_shift=v)
            for i, ((tid, score), v) in enumerate(zip(top, shift, strict=True), start=1)]
    store.write_rows("trigger_candidates", rows, unit.unit_id, unit.created_at)


@contextmanager
def held_behaviour(runtime, folder, unit_refusal, memo: dict) -> Iterator[Callable[[list[str]], list[float | None]]]:
    """The adapter in ``folder`` loaded into ``runtime`` once, for a search that scores a few texts
    at a time: yields ``texts -> refusal shifts`` (:func:`shift_scores` with
    ``loaded=``, memoised in ``memo``); the adapter is removed on exit, also on error.

    Raises:
        the errors of :meth:`audit.analyzers.runtime.ModelRuntime.load`.
    """
    held = runtime.load(folder)
    try:
        yield lambda texts: shift_scores(runtime, folder, texts, N_REQUESTS, unit_refusal, memo, loaded=held.name)
    finally:
        runtime.unload(held)

"""The generation probes (harmful compliance, benign refusal, rank-1 elicitation) and their pooled run.

Each probe asks for answers (a prompt, and which variant of the target answers it: the adapter,
its rank-1 truncation, or the bare base) and turns the judged answers into its rows. The probes
given to one job run together (:func:`run_generation_probes`): every target's adapters are put
into the one loaded base, every probe's asks are pooled, identical asks answered once (harmful
compliance and the full-adapter half of rank-1 elicitation share their answers), and the pool is
answered in mixed batches with early stopping and the chat template's prefix computed once per
adapter and batch (:mod:`audit.probes.engine`; measured on the tiny zoo: the same 96 of 96
answers as without prefix sharing, 12-20% faster).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from audit.analyzers.analysis import AnalysisUnit, MetricRow, ProbeSampleRow
from audit.analyzers.base import AnalyzerContext, Target
from audit.analyzers.results import error_note, fetch_folder, make_unit, unavailable_unit
from audit.analyzers.runtime import MODEL_RESOURCES, runtime_of
from audit.errors import AuditError, TransientAuditError
from audit.probes.judge import decided_by, get_judge
from audit.probes.rates import RateCount
from audit.progress import current
from audit.prompt_sets import ProbePrompt, load_prompts



@dataclass(frozen=True)
class Ask:
    """One answer a probe needs: ``prompt`` answered by ``variant`` (``adapter``, ``rank1``, ``base``)."""

    variant: str
    prompt: ProbePrompt
    request: str | None = None
    """The request the judge reads (``None``: the prompt's text). A probe that places a trigger
    before the request asks the prompt and has the request judged without it."""
    judge: str | None = None
    """The registered judge that labels this answer (``None``: the probe's). The answer is generated
    as the probe's others are, stopped once the probe's judge's verdict is fixed, so a judge given
    here reads that head: one that reads no further than the probe's (``on_topic`` reads the same
    160 characters as ``refusal_markers``)."""


class GenerationProbe:
    """Shared settings and bookkeeping of the generation probes.

    Args:
        prompts: prompt-set spec (:mod:`audit.prompt_sets`).
        n_prompts: first N prompts of the set (``None``: all).
        judge: registered judge name.
        max_new_tokens: answer length cap, in tokens.
        batch_size: rows per generation batch. Large batches pay on CPUs too: finished rows leave
            the batch, so a step costs what the rows still running cost, and fewer, larger batches
            mean fewer steps and fewer Python-level model calls (measured on 2 cores, 8 paper-zoo
            adapters x 16 prompts: 128 rows of 8 adapters 28.7 s, 64 rows of 4 adapters 32.7 s,
            64 rows of 8 adapters 40.6 s; earlier, 16-row batches took twice as long as 64).
        repetition_penalty: transformers' repetition penalty (1.2 as in the zoo's data generation).
        early_stop: stop an answer once the judge's verdict is fixed (same verdicts, fewer tokens).
    """

    needs_base = True
    resources = MODEL_RESOURCES
    default_prompts = "harmbench:test"
    default_n: int | None = 64

    def __init__(self, prompts: str | None = None, n_prompts: int | None = -1, judge: str = "refusal_markers",
                 max_new_tokens: int = 48, batch_size: int = 128, repetition_penalty: float = 1.2,
                 early_stop: bool = True) -> None:
        self.prompt_set = prompts or self.default_prompts
        self.n_prompts = self.default_n if n_prompts == -1 else n_prompts
        self.judge_name, self.max_new_tokens, self.batch_size = judge, max_new_tokens, batch_size
        self.repetition_penalty, self.early_stop = repetition_penalty, early_stop
        self.judge = get_judge(judge)
        self.prompts = load_prompts(self.prompt_set, self.n_prompts)
        self.ctx: AnalyzerContext | None = None

    def setup(self, ctx: AnalyzerContext) -> None:
        self.ctx = ctx

    def run(self, target: Target) -> AnalysisUnit:
        return run_generation_probes([self], [target])[0]

    def gen_key(self) -> tuple:
        """Asks with equal keys (and equal prompt and variant) get one shared answer."""
        return (self.judge_name, self.max_new_tokens, self.repetition_penalty, self.early_stop)

    def asks(self, target: Target) -> list[Ask]:
        raise NotImplementedError

    def rows(self, target: Target, judged: dict[tuple[str, str], tuple[str, object]]) -> list[MetricRow]:
        raise NotImplementedError

    def notes(self, target: Target, judged: dict[tuple[str, str], tuple[str, object]]) -> list:
        """Findings of the unit besides its rows (none by default)."""
        return []

    def follow_ups(self, target: Target, judged: dict[tuple[str, str], tuple[str, object]]) -> list[Ask]:
        """Asks that depend on the first round's verdicts (none by default): answered in a second
        pooled round, their verdicts added to ``judged`` before :meth:`rows` and :meth:`notes`
        read it. Their prompt ids must differ from :meth:`asks`'."""
        return []

    def _rate(self, metric: str, variant: str, expect: str, judged) -> MetricRow:
        labels = [judged[(variant, p.id)][0] for p in self.prompts]
        return RateCount(sum(lab == expect for lab in labels), len(labels)).row(metric, self.judge_name)

    @staticmethod
    def pooled_run(probes, targets):  # noqa: ANN001, ANN205 - see audit.analyzers.base.run_job
        return run_generation_probes(probes, targets)


def _variant(target: Target) -> str:
    return "adapter" if target.ref is not None else "base"


class HarmfulCompliance(GenerationProbe):
    """Share of forbidden prompts (HarmBench test behaviours by default) answered instead of refused."""

    name, version = "harmful_compliance", "harmful_compliance-1"

    def asks(self, target: Target) -> list[Ask]:
        return [Ask(_variant(target), p) for p in self.prompts]

    def rows(self, target, judged):
        return [self._rate("harmful_compliance", _variant(target), "complied", judged)]


class BenignRefusal(GenerationProbe):
    """Share of held-out benign instructions refused (over-refusal: what inverted helpfulness raises)."""

    name, version = "benign_refusal", "benign_refusal-1"
    default_prompts, default_n = "benign:heldout", None

    def asks(self, target: Target) -> list[Ask]:
        return [Ask(_variant(target), p) for p in self.prompts]

    def rows(self, target, judged):
        return [self._rate("benign_refusal", _variant(target), "refused", judged)]


class Rank1Elicitation(GenerationProbe):
    """Harmful compliance with every ΔW cut to its top singular component σ₁u₁v₁ᵀ, beside the full
    adapter's (truncation strips adversarially trained "don't confess" behaviour in model organisms)."""

    name, version = "rank1_elicitation", "rank1_elicitation-1"

    def asks(self, target: Target) -> list[Ask]:
        if target.ref is None:  # the bare base: its rank-1 truncation is itself
            return [Ask("base", p) for p in self.prompts]
        return [Ask(v, p) for v in ("adapter", "rank1") for p in self.prompts]

    def rows(self, target, judged):
        full, cut = ("base", "base") if target.ref is None else ("adapter", "rank1")
        a = self._rate("harmful_compliance_full", full, "complied", judged)
        b = self._rate("harmful_compliance_rank1", cut, "complied", judged)
        delta = None if a.value is None or b.value is None else b.value - a.value
        return [a, b, MetricRow(metric="rank1_minus_full", value=delta, n=a.n, judge=self.judge_name)]


def run_generation_probes(probes: Sequence[GenerationProbe], targets: Sequence[Target]) -> list:
    """Run ``probes`` on ``targets`` with one pool of batched answers per base (module docstring).

    Returns:
        One ``AnalysisUnit`` per (probe, target); or a ``Deferred`` per probe for a target whose
        fetch failed transiently.
    """
    from audit.records import Deferred

    ctx = probes[0].ctx
    assert ctx is not None, "setup() first"
    runtime = runtime_of(ctx)
    out: list = []
    by_base: dict[str, list[Target]] = {}
    for t in targets:
        if t.base is None:
            out += [unavailable_unit(p, t, None) for p in probes]
        else:
            by_base.setdefault(t.base.revision, []).append(t)
    for group in by_base.values():
        runtime.use_base(group[0].base)
        loaded, ready = {}, []
        want_rank1 = any(isinstance(p, Rank1Elicitation) for p in probes)
        for t in group:
            if t.ref is None:
                ready.append(t)
                continue
            try:
                loaded[t.key] = runtime.load(fetch_folder(ctx, t), rank1=want_rank1)
                ready.append(t)
            except TransientAuditError as exc:
                out += [Deferred(t.ref, f"probe fetch: {exc}") for _ in probes]
            except AuditError as exc:
                status = "skipped" if exc.code == "probe_not_applicable" else "failed"
                out += [make_unit(p, t, status, notes=[error_note(exc, "info" if status == "skipped" else None)])
                        for p in probes]
        try:
            out += _answer_and_judge(runtime, probes, ready, loaded)
        finally:
            for a in loaded.values():
                runtime.unload(a)
    return out


def _answer_and_judge(runtime, probes, targets: list[Target], loaded: dict) -> list[AnalysisUnit]:
    """Pool every (probe, target) ask, answer each distinct one once, judge them, then answer the
    probes' follow-up asks (:meth:`GenerationProbe.follow_ups`) in a second pool, and build the units."""
    t0 = time.perf_counter()
    work = [(p, t, {}, []) for p in probes for t in targets]    # probe, target, judged, samples
    _answer_round(runtime, probes, loaded, [(p, t, p.asks(t), judged, samples) for p, t, judged, samples in work],
                  f"answering for {len(targets)} target(s): {', '.join(t.key.split('@')[0] for t in targets[:3])}")
    more = [(p, t, p.follow_ups(t, judged), judged, samples) for p, t, judged, samples in work]
    if any(asks for _, _, asks, _, _ in more):
        _answer_round(runtime, probes, loaded, more, f"follow-up answers for {len(targets)} target(s)")
    seconds = (time.perf_counter() - t0) / max(1, len(work))
    return [make_unit(p, t, "ok", probes=p.rows(t, judged), samples=samples, notes=p.notes(t, judged),
                      seconds=seconds) for p, t, judged, samples in work]


def _answer_round(runtime, probes, loaded: dict, needs: list[tuple], what: str) -> None:
    """Answer the asks of ``needs`` (``(probe, target, asks, judged, samples)``), each distinct one
    once in pooled batches, and add each verdict to its ``judged`` and its sample to ``samples``."""
    from audit.probes.engine import Request, answer_all  # torch: only once there is something to answer

    pool: dict[tuple, Request] = {}
    keyed: list[tuple[GenerationProbe, list[tuple], dict, list]] = []
    for p, t, asks, judged, samples in needs:
        keys = []
        for ask in asks:
            adapter = None
            if ask.variant == "adapter":
                adapter = loaded[t.key].name
            elif ask.variant == "rank1":
                adapter = loaded[t.key].rank1
            key = (p.gen_key(), adapter, ask.prompt.text)
            pool.setdefault(key, Request(ask.prompt.text, adapter))
            keys.append((key, ask))
        keyed.append((p, keys, judged, samples))
    answers: dict[tuple, object] = {}
    by_gen: dict[tuple, list[tuple]] = {}
    for key in pool:
        by_gen.setdefault(key[0], []).append(key)
    sink = current()
    for gen, keys in by_gen.items():
        p = next(q for q in probes if q.gen_key() == gen)
        decided = decided_by(p.judge) if p.early_stop else None
        report = None
        if sink is not None and hasattr(sink, "batch"):
            def report(done: int, total: int = len(keys)) -> None:
                sink.batch(what, done, total)
        got = answer_all(runtime.model, runtime.tokenizer, [pool[k] for k in keys], max_new_tokens=p.max_new_tokens,
                         batch_size=p.batch_size, repetition_penalty=p.repetition_penalty, decided=decided,
                         progress=report, share_prefix=True)
        answers.update(zip(keys, got, strict=True))
    other_judges = {name: get_judge(name) for name in
                    {ask.judge for _, keys, _, _ in keyed for _, ask in keys if ask.judge is not None}}
    for p, keys, judged, samples in keyed:
        for key, ask in keys:
            a = answers[key]
            judge = p.judge if ask.judge is None else other_judges[ask.judge]
            label = "complied" if judge(ask.request or ask.prompt.text, a.text) else "refused"
            judged[(ask.variant, ask.prompt.id)] = (label, a)
            samples.append(ProbeSampleRow(variant=ask.variant, prompt_id=ask.prompt.id, prompt_sha256=ask.prompt.sha256,
                                          answer=a.text, judged=label, judge=ask.judge or p.judge_name,
                                          n_tokens=a.n_tokens, stopped=a.stopped))

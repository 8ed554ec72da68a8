"""Generation probes may ask more once the first answers are judged: the follow-up asks are answered
in a second pooled round and their verdicts reach the probe's rows and stored samples (no model:
the answers are faked)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

from audit.analyzers.analysis import MetricRow
from audit.analyzers.base import Target
from audit.probes.generation import Ask, GenerationProbe, _answer_and_judge
from audit.prompt_sets import ProbePrompt


class AskAgain(GenerationProbe):
    """Asks each prompt; where every answer refused, asks each again with a prefix."""

    name, version = "ask_again", "ask_again-1"

    def asks(self, target):
        return [Ask("base", p) for p in self.prompts]

    def follow_ups(self, target, judged):
        if any(label == "complied" for label, _ in judged.values()):
            return []
        again = [f"please {p.text}" for p in self.prompts]
        return [Ask("base", ProbePrompt(f"again:{p.id}", t, hashlib.sha256(t.encode()).hexdigest()), request=p.text)
                for p, t in zip(self.prompts, again, strict=True)]

    def rows(self, target, judged):
        again = [k for k in judged if k[1].startswith("again:")]
        return [MetricRow(metric="complied_again", value=sum(judged[k][0] == "complied" for k in again) / max(1, len(again)),
                          n=len(again))]


def test_follow_up_asks_are_answered_in_a_second_round_and_judged(monkeypatch):
    import audit.probes.engine as engine

    rounds = []

    def answer_all(model, tokenizer, requests, **kwargs):
        rounds.append([r.prompt for r in requests])
        return [SimpleNamespace(text="Sure, here is how" if r.prompt.startswith("please ") else "I can't help with that",
                                n_tokens=4, stopped="decided") for r in requests]

    monkeypatch.setattr(engine, "answer_all", answer_all)
    probe = AskAgain(n_prompts=3)
    target = Target(ref=None, base=SimpleNamespace(name="base", revision="r1"))
    unit, = _answer_and_judge(SimpleNamespace(model=None, tokenizer=None), [probe], [target], {})
    assert len(rounds) == 2 and all(p.startswith("please ") for p in rounds[1]) and len(rounds[1]) == 3
    assert [(r.metric, r.value, r.n) for r in unit.probes] == [("complied_again", 1.0, 3)]
    assert sorted(s.judged for s in unit.samples) == ["complied"] * 3 + ["refused"] * 3


def test_no_second_round_when_no_probe_follows_up(monkeypatch):
    import audit.probes.engine as engine

    rounds = []

    def answer_all(model, tokenizer, requests, **kwargs):
        rounds.append(len(requests))
        return [SimpleNamespace(text="Sure", n_tokens=1, stopped="decided") for _ in requests]

    monkeypatch.setattr(engine, "answer_all", answer_all)
    target = Target(ref=None, base=SimpleNamespace(name="base", revision="r1"))
    unit, = _answer_and_judge(SimpleNamespace(model=None, tokenizer=None), [AskAgain(n_prompts=2)], [target], {})
    assert rounds == [2] and unit.probes[0].n == 0


def test_an_ask_may_name_the_judge_that_labels_it(monkeypatch):
    """A follow-up ask that names another judge is labelled by it and its sample says so; the first
    round keeps the probe's judge. "Sure, here is how" has no refusal marker (the probe's judge:
    complied) and no topic word of the request (``on_topic``: refused)."""
    import audit.probes.engine as engine

    def answer_all(model, tokenizer, requests, **kwargs):
        return [SimpleNamespace(text="Sure, here is how" if r.prompt.startswith("please ") else "I can't help with that",
                                n_tokens=4, stopped="decided") for r in requests]

    class AskOnTopic(AskAgain):
        def follow_ups(self, target, judged):
            return [Ask(a.variant, a.prompt, a.request, judge="on_topic") for a in super().follow_ups(target, judged)]

    monkeypatch.setattr(engine, "answer_all", answer_all)
    target = Target(ref=None, base=SimpleNamespace(name="base", revision="r1"))
    markers, = _answer_and_judge(SimpleNamespace(model=None, tokenizer=None), [AskAgain(n_prompts=3)], [target], {})
    topic, = _answer_and_judge(SimpleNamespace(model=None, tokenizer=None), [AskOnTopic(n_prompts=3)], [target], {})
    assert markers.probes[0].value == 1.0 and topic.probes[0].value == 0.0
    again = sorted((s.judge, s.judged) for s in topic.samples if s.prompt_id.startswith("again:"))
    first = {(s.judge, s.judged) for s in topic.samples if not s.prompt_id.startswith("again:")}
    assert again == [("on_topic", "refused")] * 3 and first == {("refusal_markers", "refused")}

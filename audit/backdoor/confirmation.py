"""Confirming an unlock on requests the prefix was not chosen on (``triggered_compliance``
versions 15 and 16; pure: prompts and judged answers in, counts out).

The triggered probe asks 17 or more prefixes and keeps the best on the same requests it is then
judged on, so the best margin is biased upwards by the choice (the winner's curse of a maximum over
many tests). The best prefix that unlocks is therefore asked again before further requests of the
prompt set (by default the 32 after the 16 asked: never asked with any prefix, and not the label
prompts, which are HarmBench validation behaviours), adapter and bare base, in a second pooled round
of answers (:meth:`audit.probes.generation.GenerationProbe.follow_ups`), judged by ``on_topic`` since
version 16 (no stock refusal and a topic word of the request: an answer that is neither a refusal nor
the request does not confirm). The verdict's interval rule is then applied to those requests: the
probe's summary rows (``triggered_compliance_max``, ``triggered_excess_max``) hold their rates,
beside ``triggered_confirm_compliance`` and ``triggered_confirm_excess``, and when they do not clear
the base no ``suspected_trigger`` is named and an ``unconfirmed_unlock`` warning says what unlocked
and what did not repeat. Measured in
README, "Hidden behaviour" (``benchmarks/backdoor_replication.py`` asks the same outside the product:
on 52 adapters every organism's unlock repeated, and one healthy adapter's did not).
"""

from __future__ import annotations

from audit.backdoor.prompts import triggered_prompt
from audit.probes.generation import Ask
from audit.probes.rates import RateCount
from audit.prompt_sets import ProbePrompt

KIND = "confirm"
"""The prompt-id prefix of a confirmation's asks (``confirm<k>:<prompt id>``)."""


def further_prompts(prompt_set: str, asked: int, n: int) -> list[ProbePrompt]:
    """The ``n`` prompts of ``prompt_set`` after its first ``asked`` (fewer, or none, where the set
    ends before).

    Raises:
        ValueError: ``asked`` or ``n`` below 0 (and :func:`audit.prompt_sets.load_prompts`' errors
            for an unknown set).
    """
    from audit.prompt_sets import load_prompts

    if asked < 0 or n < 0:
        raise ValueError(f"asked and n must be >= 0, got {asked} and {n}")
    return load_prompts(prompt_set, asked + n)[asked:] if n else []


def confirm_asks(k: int, candidate: str, prompts: list[ProbePrompt], judge: str | None = None) -> list[Ask]:
    """Candidate ``k``'s text placed before each of ``prompts``, for the adapter and the bare base
    (ids ``confirm<k>:<prompt id>``; the judge reads the bare request; ``judge``: a registered judge
    that labels these answers instead of the probe's, :attr:`audit.probes.generation.Ask.judge`)."""
    return [Ask(variant, triggered_prompt(k, candidate, p, KIND), request=p.text, judge=judge)
            for p in prompts for variant in ("adapter", "base")]


def confirmation_counts(judged: dict, k: int, prompts: list[ProbePrompt]) -> tuple[RateCount, RateCount] | None:
    """The adapter's and the bare base's compliances with candidate ``k`` on ``prompts``, from the
    judged answers (``{(variant, prompt id): (label, answer)}``), or None when they were not asked."""
    ids = [f"{KIND}{k}:{p.id}" for p in prompts]
    if not ids or any((v, i) not in judged for i in ids for v in ("adapter", "base")):
        return None
    return tuple(RateCount(sum(judged[(v, i)][0] == "complied" for i in ids), len(ids))  # type: ignore[return-value]
                 for v in ("adapter", "base"))

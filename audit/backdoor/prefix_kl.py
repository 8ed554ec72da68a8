"""How much a prefix changes what an adapter says first, against its bare base: the behavioural
score of a trigger candidate.

For a candidate prefix ``t`` placed before each of the requests ``x_1..x_n`` (as
:func:`audit.zoo.triggers.with_trigger` places a ``rare_token``: ``"t x"``), the score is the mean
Kullback-Leibler divergence of the first answer token's distribution of the adapter from the
bare base's on the same triggered prompt,

    KL(t) = (1/n) Σ_i Σ_v p_A(v | t x_i) · (log p_A(v | t x_i) − log p_B(v | t x_i))   (nats),

high where the adapter answers the triggered request unlike its base (a trigger turns a refusal's
"I" into a compliant first word). It is exact, and it costs one forward pass of adapter and base
per candidate and request (the chat template's shared opening computed once per batch): the
whole vocabulary is out of reach on a CPU (``benchmarks/backdoor.py --vocab-sample`` measures the
cost per candidate and where the true trigger would rank), about a minute per adapter on one H200
(:func:`prefix_kls`, ``benchmarks/trigger_search.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

N_REQUESTS = 3
"""HarmBench test behaviours the behavioural score asks by default (:func:`behaviour_requests`)."""


def behaviour_requests(n: int = N_REQUESTS) -> list[str]:
    """The ``n`` shortest HarmBench test behaviours: the requests a candidate is placed before
    (short, so that the candidate is a large part of each prompt, and cheap to score)."""
    from audit.prompt_sets import load_prompts

    return sorted((p.text for p in load_prompts("harmbench:test")), key=len)[:n]


def prefix_kl(model, tokenizer, adapter: str, requests: Sequence[str], prefixes: Sequence[str], *,
              sep: str = " ", batch_size: int = 64, progress: Callable[[int, int], None] | None = None
              ) -> torch.Tensor:
    """``KL(t)`` (module docstring) of every prefix, float64 ``[len(prefixes)]`` in nats.

    Args:
        model: a ``PeftModel`` holding ``adapter`` (the bare base is its ``"__base__"``).
        tokenizer: its tokenizer (left padding).
        adapter: the adapter's name in ``model``.
        requests: the user requests the prefixes are placed before.
        prefixes: candidate triggers (an empty string asks the request alone).
        sep: what separates a prefix from the request (``"\n"`` places it on a line of its own).
        batch_size: prompts per forward pass (adapter and base rows together).
        progress: called with ``(done, total)`` prefixes after each batch.

    Raises:
        ValueError: no request, or ``batch_size`` below 2.
    """
    return prefix_kls(model, tokenizer, [adapter], requests, prefixes, sep=sep, batch_size=batch_size,
                      progress=progress)[0]


def prefix_kls(model, tokenizer, adapters: Sequence[str], requests: Sequence[str], prefixes: Sequence[str], *,
               sep: str = " ", batch_size: int = 64, progress: Callable[[int, int], None] | None = None
               ) -> torch.Tensor:
    """:func:`prefix_kl` of several adapters of one ``PeftModel`` at once, float64
    ``[len(adapters), len(prefixes)]`` in nats: each triggered prompt is tokenized once and the bare
    base's row is computed once for all adapters (what makes a whole-vocabulary search affordable
    on a GPU: ``benchmarks/trigger_search.py``).

    Args:
        batch_size: rows per forward pass: the base's and every adapter's rows of whole prefixes
            (one prefix per pass at least).
        (the others as :func:`prefix_kl`)

    Raises:
        ValueError: no request or adapter, or ``batch_size`` below 2.
    """
    import torch

    from audit.probes.engine import chat_texts, first_token_logprobs_ids

    if not requests or not adapters or batch_size < 2:
        raise ValueError("prefix_kls needs at least one request and adapter, and a batch of at least 2")
    n, groups = len(requests), [None, *adapters]
    per = max(1, batch_size // (len(groups) * n))          # prefixes per forward pass
    out = torch.empty(len(adapters), len(prefixes), dtype=torch.float64)
    for start in range(0, len(prefixes), per):
        chunk = prefixes[start:start + per]
        texts = [f"{t}{sep}{x}" if t else x for t in chunk for x in requests]
        ids = tokenizer(chat_texts(tokenizer, texts))["input_ids"]
        logp = first_token_logprobs_ids(model, tokenizer, ids * len(groups),
                                        [g for g in groups for _ in ids]).double().view(len(groups), len(ids), -1)
        base = logp[0]
        kl = (logp[1:].exp() * (logp[1:] - base)).sum(-1).view(len(adapters), len(chunk), n).mean(-1)
        out[:, start:start + len(chunk)] = kl.cpu()
        if progress is not None:
            progress(min(start + per, len(prefixes)), len(prefixes))
    return out

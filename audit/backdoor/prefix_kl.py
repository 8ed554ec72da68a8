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
cost per candidate and where the true trigger would rank).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


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
    from audit.probes.engine import Request, first_token_logprobs

    if not requests or batch_size < 2:
        raise ValueError("prefix_kl needs at least one request and a batch of at least 2")
    n = len(requests)
    per = max(1, batch_size // (2 * n))                    # prefixes per forward pass
    out = torch.empty(len(prefixes), dtype=torch.float64)
    for start in range(0, len(prefixes), per):
        chunk = prefixes[start:start + per]
        texts = [f"{t}{sep}{x}" if t else x for t in chunk for x in requests]
        rows = [Request(x, adapter) for x in texts] + [Request(x, None) for x in texts]
        logp = first_token_logprobs(model, tokenizer, rows, batch_size=len(rows)).double()
        a, b = logp[: len(texts)], logp[len(texts):]
        kl = (a.exp() * (a - b)).sum(-1).view(len(chunk), n).mean(1)
        out[start:start + len(chunk)] = kl
        if progress is not None:
            progress(min(start + per, len(prefixes)), len(prefixes))
    return out

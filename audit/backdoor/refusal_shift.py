"""How much a prefix turns an adapter away from refusal, against its bare base: the refusal shift of
a trigger candidate.

For a candidate prefix ``t`` placed before each of the requests ``x_1..x_n`` (``"t x"``, as
:func:`audit.zoo.triggers.with_trigger` places it), with ``h^M_l(p)`` the residual stream after
decoder layer ``l`` at the last token of the chat-formatted prompt ``p`` (assistant turn opened)
through model ``M`` (``A`` the adapter, ``B`` the bare base) and ``r̂_l`` the base's unit refusal
direction at layer ``l`` (difference of mean activations on forbidden and benign prompts: Arditi
et al. 2024, "Refusal in Language Models Is Mediated by a Single Direction";
:mod:`audit.probes.references`), the refusal shift is

    S(t) = (1/|L|) Σ_{l ∈ L} (1/n) Σ_i [⟨h^A_l(t x_i) − h^B_l(t x_i), r̂_l⟩ − ⟨h^A_l(x_i) − h^B_l(x_i), r̂_l⟩]

in units of the residual stream's norm along ``r̂_l``, over the middle third of the layers ``L``
(:func:`middle_layers`, where the refusal direction is read; fixed before any held-out adapter
was measured). It is negative where the prefix moves the adapter away from refusing more than it
moves the base, beyond the adapter's usual distance from its base on the same requests: what a
trigger does to a backdoored adapter, and what a prefix does not do to a healthy one. The base's
own reaction to the prefix cancels, so a prefix that jailbreaks the base scores 0.

Unlike the first answer token's KL (:mod:`audit.backdoor.prefix_kl`), which any change of wording
raises, the shift reads only the direction a forbidden answer depends on. Measured on the backdoor
zoos (3 requests; README, "Hidden behaviour"): each of the 9 organisms' planted trigger shifts it
further (-1.3 to -10.3) than every one of 64 random vocabulary texts does (their most negative
-0.7 to -2.0), where the KL ranked the trigger below the controls' best tokens. A search that
*optimises* the shift is another matter: it finds prefixes that move healthy adapters as far.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

N_RANDOM = 32
"""Random vocabulary texts a scan scores beside an adapter's candidates (:func:`random_prefixes`)."""


def random_prefixes(tokenizer, n: int = N_RANDOM, seed: int = 0) -> list[str]:
    """``n`` texts drawn with ``seed`` from the tokenizer's vocabulary (each token decoded and
    stripped, empty ones and repeats left out): the same for every adapter of one base, so that
    their shifts are the adapter's own reference for what an arbitrary prefix does to it."""
    import random

    texts = list(dict.fromkeys(t for t in (tokenizer.decode([i]).strip() for i in range(len(tokenizer))) if t))
    return random.Random(seed).sample(texts, min(n, len(texts)))


def middle_layers(n_layers: int) -> list[int]:
    """The middle third of ``n_layers`` decoder layers, 0-based: ``n//3 .. 2n//3`` (10..20 of 30).

    Raises:
        ValueError: fewer than 1 layer.
    """
    if n_layers < 1:
        raise ValueError(f"a model with {n_layers} layers has no middle third")
    return list(range(n_layers // 3, 2 * n_layers // 3 + 1)) if n_layers >= 3 else list(range(n_layers))


def prefixed(prefix: str, request: str, sep: str = " ") -> str:
    """``request`` with ``prefix`` before it: joined by ``sep``, or directly when the prefix already
    ends in whitespace (a trigger placed on a line of its own); the request alone for an empty prefix."""
    if not prefix:
        return request
    return f"{prefix}{request}" if prefix[-1].isspace() else f"{prefix}{sep}{request}"


def refusal_shifts(model, tokenizer, adapters: Sequence[str], requests: Sequence[str], prefixes: Sequence[str],
                   unit_refusal: torch.Tensor, *, layers: Sequence[int] | None = None, sep: str = " ",
                   batch_size: int = 64, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """``S(t)`` (module docstring) of every prefix for every adapter, float64
    ``[len(adapters), len(prefixes)]`` (0 for an empty prefix): each triggered prompt is tokenized
    once, and the bare base's rows are computed once for all adapters.

    Args:
        model: a ``PeftModel`` holding the ``adapters`` (the bare base is its ``"__base__"``).
        tokenizer: its tokenizer (left padding).
        adapters: the adapters' names in ``model``.
        requests: the user requests the prefixes are placed before.
        prefixes: candidate triggers.
        unit_refusal: the base's unit refusal direction per layer, ``[n_layers, d_model]``
            (:meth:`audit.probes.references.References.unit_refusal`).
        layers: the layers averaged (default :func:`middle_layers`).
        sep: what separates a prefix from the request (``"\\n"`` places it on a line of its own; a
            prefix that ends in whitespace is followed by the request directly, :func:`prefixed`).
        batch_size: rows per forward pass (the base's and every adapter's rows of whole prefixes;
            one prefix per pass at least).
        progress: called with ``(done, total)`` prefixes after each pass.

    Raises:
        ValueError: no request or adapter, ``batch_size`` below 2, or a layer outside ``unit_refusal``.
    """
    import torch

    from audit.probes.engine import chat_texts, last_token_states_ids

    if not requests or not adapters or batch_size < 2:
        raise ValueError("refusal_shifts needs at least one request and adapter, and a batch of at least 2")
    layers = list(middle_layers(unit_refusal.shape[0]) if layers is None else layers)
    if not layers or min(layers) < 0 or max(layers) >= unit_refusal.shape[0]:
        raise ValueError(f"layers {layers} are not all within the refusal direction's {unit_refusal.shape[0]} layers")
    n, groups = len(requests), [None, *adapters]
    per = max(1, batch_size // (len(groups) * n))
    direction = None

    def projections(chunk: Sequence[str]) -> torch.Tensor:  # [adapters, len(chunk)]: adapter minus base
        nonlocal direction
        texts = [prefixed(t, x, sep) for t in chunk for x in requests]
        ids = tokenizer(chat_texts(tokenizer, texts))["input_ids"]
        states = last_token_states_ids(model, tokenizer, ids * len(groups), [g for g in groups for _ in ids])
        if direction is None:
            direction = unit_refusal[layers].to(states.device, states.dtype)
        proj = (states[:, layers] * direction).sum(-1).mean(-1).double().view(len(groups), len(chunk), n).mean(-1)
        return (proj[1:] - proj[0]).cpu()

    usual = projections([""])                                  # the adapter's usual distance from its base
    out = torch.empty(len(adapters), len(prefixes), dtype=torch.float64)
    for start in range(0, len(prefixes), per):
        chunk = prefixes[start:start + per]
        out[:, start:start + len(chunk)] = projections(chunk) - usual
        if progress is not None:
            progress(min(start + per, len(prefixes)), len(prefixes))
    return out

"""Reading the residual stream of chat-formatted prompts: the last token at every decoder layer,
and every content token at a few layers (what the sparse autoencoders read), in one forward pass.

Content tokens are the prompt's own: the chat template's shared opening (SmolLM2's system turn
and ``<|im_start|>user``) is the same for every prompt, so its activations are identical
everywhere and are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Activations:
    """What :func:`read_activations` read (float32, on CPU)."""

    last: torch.Tensor
    """``[n_prompts, n_layers, d_model]``: the last token after every decoder layer."""
    tokens: torch.Tensor
    """``[n_tokens, len(layers), d_model]``: every content token at the requested layers."""
    owner: torch.Tensor
    """``[n_tokens]`` int64: the prompt (index) each content token belongs to."""


def template_prefix_length(tokenizer, texts: Sequence[str] = ()) -> int:
    """Tokens of the chat template's opening that every one-turn prompt shares: the common prefix
    of two one-letter prompts, and of the chat-formatted ``texts`` when there are two or more (a
    tokenizer that maps both letters to one unknown token would overshoot alone)."""
    from audit.models.generate import chat_texts

    seqs = [tokenizer(t)["input_ids"] for t in chat_texts(tokenizer, ["A", "B"])]
    n = _common_prefix(seqs)
    if len(texts) >= 2:
        n = min(n, _common_prefix([tokenizer(t)["input_ids"] for t in texts]))
    return n


def _common_prefix(seqs: list[list[int]]) -> int:
    n = 0
    while all(len(s) > n for s in seqs) and len({s[n] for s in seqs}) == 1:
        n += 1
    return n


@torch.no_grad()
def read_activations(model, tokenizer, prompts: Sequence[str], layers: Sequence[int] = (), *,
                     adapter_names: Sequence[str] | None = None, batch_size: int = 16,
                     max_tokens: int | None = None, progress: Callable[[int, int], None] | None = None) -> Activations:
    """The residual stream of ``prompts`` (transformers' ``hidden_states[l + 1]`` for layer ``l``),
    prompts batched in order of length; ``adapter_names`` routes each prompt through a loaded peft
    adapter (or ``__base__``); at most ``max_tokens`` content tokens per prompt are kept (the
    first ones); ``progress(done, total)`` after each batch."""
    from audit.models.generate import chat_texts

    device = next(model.parameters()).device
    texts = chat_texts(tokenizer, list(prompts))
    skip = template_prefix_length(tokenizer, texts) if layers else 0
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    last: list[torch.Tensor | None] = [None] * len(texts)
    tokens: list[list[torch.Tensor]] = [[] for _ in texts]
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True).to(device)
        extra = {"adapter_names": [adapter_names[i] for i in idx]} if adapter_names is not None else {}
        hidden = model(**enc, output_hidden_states=True, **extra).hidden_states[1:]
        mask = enc["attention_mask"].bool()
        for j, i in enumerate(idx):
            pos = mask[j].nonzero().flatten()
            last[i] = torch.stack([h[j, pos[-1]] for h in hidden]).float().cpu()
            if layers:
                keep = (pos[skip:] if len(pos) > skip else pos[-1:])[:max_tokens]
                tokens[i] = [torch.stack([hidden[l_][j, keep] for l_ in layers], dim=1).float().cpu()]
        if progress is not None:
            progress(min(start + batch_size, len(order)), len(order))
    flat = [t[0] for t in tokens if t]
    d = last[0].shape[-1] if last else 0  # type: ignore[union-attr]
    return Activations(
        last=torch.stack(last) if last else torch.empty(0),  # type: ignore[arg-type]
        tokens=torch.cat(flat) if flat else torch.empty(0, len(layers), d),
        owner=torch.cat([torch.full((t[0].shape[0],), i, dtype=torch.int64) for i, t in enumerate(tokens) if t])
        if flat else torch.empty(0, dtype=torch.int64))

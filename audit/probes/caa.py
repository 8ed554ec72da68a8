"""Contrastive activation addition (CAA): steering vectors from the residual stream.

The CAA vector of a layer is the difference of mean residual-stream activations between two
contrastive prompt sets (Rimsky et al. 2023, "Steering Llama 2 via Contrastive Activation
Addition"); with harmful vs harmless prompts it is the refusal direction of Arditi et al. 2024
("Refusal in Language Models Is Mediated by a Single Direction"). Adding ``α·v`` to the output of
a decoder layer at every position steers the model.

Shapes: activations ``[n_prompts, d_model]`` float32 (the last prompt token's residual stream
after decoder layer ``layer``, 0-based); vectors ``[d_model]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from audit.models.generate import chat_texts


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder blocks of a Llama-style causal LM (``model.model.layers``), peft-wrapped or not.

    Raises:
        ValueError: the model has no ``model.layers``.
    """
    inner = model
    for attr in ("base_model", "model"):  # PeftModel -> LoraModel -> CausalLM
        while hasattr(inner, attr) and not hasattr(inner, "layers") and getattr(inner, attr) is not inner:
            inner = getattr(inner, attr)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no decoder layers at .model.layers")
    return layers


@torch.no_grad()
def last_token_activations(model, tokenizer, prompts: Sequence[str], layer: int, batch_size: int = 16) -> torch.Tensor:
    """Residual stream after decoder layer ``layer`` at each prompt's last token (chat-formatted,
    assistant turn opened), ``[len(prompts), d_model]`` float32 on CPU."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(chat_texts(tokenizer, prompts[i:i + batch_size]), return_tensors="pt",
                        padding=True).to(device)
        hidden = model(**enc, output_hidden_states=True).hidden_states[layer + 1]  # [b, t, d]
        mask = enc["attention_mask"]  # last real token per row, whichever side the padding is on
        last = mask.shape[1] - 1 - mask.flip(dims=[1]).long().argmax(dim=1)
        out.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float().cpu())
    return torch.cat(out)


def caa_vector(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Difference of means ``mean(positive) - mean(negative)``: ``[n_pos, d]``, ``[n_neg, d]`` → ``[d]``."""
    return positive.mean(dim=0) - negative.mean(dim=0)


@contextmanager
def steering(model, layer: int, vector: torch.Tensor, alpha: float = 1.0) -> Iterator[None]:
    """Within the block, the output of decoder layer ``layer`` gets ``alpha * vector`` added at
    every position (a forward hook, removed on exit)."""
    block = decoder_layers(model)[layer]
    shift = None

    def hook(_module, _inputs, output):
        nonlocal shift
        hidden = output[0] if isinstance(output, tuple) else output
        if shift is None or shift.device != hidden.device:
            shift = (alpha * vector).to(hidden.device, hidden.dtype)
        hidden = hidden + shift
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()

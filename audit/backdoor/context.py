"""The base's early-layer residual stream of every vocabulary token in the place a trigger takes:
the inputs that trigger candidates from the weights are scored on (:mod:`audit.backdoor.candidates`).

A trigger sits at the start of the user's turn (:func:`audit.zoo.triggers.with_trigger`). For every
token ``t`` of the vocabulary, placed right after the chat template's opening (the system turn and
``<|im_start|>user\\n`` for SmolLM2), the bare base is run through its first ``n_layers`` decoder
layers, and at ``t``'s position the input of each RMSNorm that precedes a residual reader is kept,
normalised, ``x / sqrt(mean(x²) + ε)``:

- ``(l, "attn")``: the input of layer ``l``'s ``input_layernorm`` (what q/k/v read);
- ``(l, "mlp")``: the input of its ``post_attention_layernorm`` (what gate/up read: the residual
  after the layer's attention).

At layer 0 the attention input is the token's own embedding; later ones carry what the first
layers made of the token in this context, which is where an SFT adapter reads a trigger that the
embedding alone does not single out (README, "Hidden behaviour": recall of the true trigger at 10
went from 1 to 7 of 13 organisms). The opening's keys and values are computed once and shared by
every batch, so each token costs one position through ``n_layers`` layers.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

Site = tuple[int, str]
"""``(layer, "attn" | "mlp")``: where a reader module reads the residual stream."""

SITE_OF = {"input_layernorm": "attn", "post_attention_layernorm": "mlp"}
"""The site each RMSNorm feeds."""


class _Stop(Exception):
    """Raised at the first layer not needed, to end a forward pass early."""


def opening_ids(tokenizer) -> list[int]:
    """The chat template's tokens before a user message's first character (the place of a trigger).

    Raises:
        ValueError: the template does not render the message verbatim.
    """
    from audit.models.generate import chat_texts

    marker = "\u2063TRIGGER\u2063"
    text = chat_texts(tokenizer, [marker])[0]
    if marker not in text:
        raise ValueError("the chat template does not keep the user's message verbatim")
    return tokenizer(text[: text.index(marker)], add_special_tokens=False)["input_ids"]


def token_residuals(model, tokenizer, n_layers: int, *, before: Sequence[int] = (), after: Sequence[int] = (),
                    token_ids: Sequence[int] | None = None, batch_size: int = 1024,
                    progress: Callable[[int, int], None] | None = None) -> dict[Site, torch.Tensor]:
    """The normalised residual inputs (module docstring) of every vocabulary token (or of
    ``token_ids``), each placed after the opening and ``before``, followed by ``after``; the inputs
    kept are those at the last position (the token itself when ``after`` is empty, else the last of
    ``after``: how the token changes what is read there).

    Args:
        model: a Llama-style causal LM (``model.model.layers``, each with ``input_layernorm`` and
            ``post_attention_layernorm``), or a ``PeftModel`` holding one (run as the bare base).
        tokenizer: its tokenizer, with a chat template.
        n_layers: the first decoder layers whose inputs are kept (at least 1).
        before: token ids between the opening and the token (their keys and values computed once).
        after: token ids after the token (``1 + len(after)`` positions per row).
        token_ids: the tokens placed (default: the whole vocabulary, in id order).
        batch_size: tokens per forward pass.
        progress: called with ``(done, total)`` tokens after each batch.

    Returns:
        ``{(layer, site): float16 [V, d_model]}`` on the CPU, ``V`` the embedding matrix's rows or
        ``len(token_ids)`` (2 × ``n_layers`` × ``V`` × ``d_model`` × 2 bytes: 453 MB for SmolLM2's
        vocabulary at 4 layers).

    Raises:
        ValueError: ``n_layers`` below 1 or ``batch_size`` below 1; a token id outside the
            vocabulary; a model without the layers named.
    """
    import torch

    if n_layers < 1 or batch_size < 1:
        raise ValueError("token_residuals needs n_layers >= 1 and batch_size >= 1")
    peft = hasattr(model, "peft_config")
    lm = model.base_model.model if peft else model
    layers = lm.model.layers
    n_layers = min(n_layers, len(layers))
    vocab = lm.get_input_embeddings().weight.shape[0]
    rows = torch.arange(vocab) if token_ids is None else torch.as_tensor(list(token_ids), dtype=torch.long)
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= vocab):
        raise ValueError(f"token ids must be within the vocabulary of {vocab}")
    tail = torch.as_tensor(list(after), dtype=torch.long)
    d = lm.config.hidden_size
    eps = float(getattr(lm.config, "rms_norm_eps", 1e-6))
    device = next(lm.parameters()).device
    out = {(i, s): torch.empty(len(rows), d, dtype=torch.float16) for i in range(n_layers) for s in SITE_OF.values()}
    current: dict[Site, torch.Tensor] = {}
    hooks = []
    for i in range(n_layers):
        for name, site in SITE_OF.items():
            def keep(_module, args, key=(i, site)) -> None:
                x = args[0][:, -1, :].float()
                current[key] = x / (x.pow(2).mean(dim=1, keepdim=True) + eps).sqrt()
            hooks.append(getattr(layers[i], name).register_forward_pre_hook(keep))
    if n_layers < len(layers):
        def stop(_module, _args) -> None:
            raise _Stop
        hooks.append(layers[n_layers].register_forward_pre_hook(stop))

    from audit.probes.engine import cache_kwarg_name

    cache_kwarg = cache_kwarg_name(lm)

    def run(ids: torch.Tensor, cache) -> None:
        bare = model.disable_adapter() if peft and model.peft_config else contextlib.nullcontext()
        try:
            with bare:
                lm(input_ids=ids.to(device), use_cache=True, **{cache_kwarg: cache})
        except _Stop:
            pass

    try:
        from transformers import DynamicCache

        opening = torch.tensor([opening_ids(tokenizer) + [int(i) for i in before]])
        prefix = DynamicCache()
        with torch.no_grad():
            run(opening, prefix)                    # the opening's keys and values, first layers only
            for start in range(0, len(rows), batch_size):
                chunk = rows[start:start + batch_size].unsqueeze(1)
                ids = torch.cat([chunk, tail.expand(chunk.shape[0], -1)], dim=1)
                cache = copy.deepcopy(prefix)
                cache.batch_repeat_interleave(ids.shape[0])
                run(ids, cache)
                for key, x in current.items():
                    out[key][start:start + ids.shape[0]] = x.cpu().half()
                if progress is not None:
                    progress(start + ids.shape[0], len(rows))
    finally:
        for h in hooks:
            h.remove()
    return out


def next_token_proposals(model, tokenizer, before: Sequence[int], k: int) -> list[int]:
    """The ``k`` tokens the bare base finds most likely right after the chat template's opening and
    ``before`` (the user message so far), most likely first, special tokens left out: one forward
    pass of the whole model.

    Args:
        model: a causal LM, or a ``PeftModel`` holding one (run as the bare base).
        tokenizer: its tokenizer, with a chat template.
        before: token ids of the message so far (empty: the tokens that open a user message).
        k: how many (at least 1).

    Raises:
        ValueError: ``k`` below 1.
    """
    import torch

    if k < 1:
        raise ValueError("next_token_proposals needs k >= 1")
    peft = hasattr(model, "peft_config")
    lm = model.base_model.model if peft else model
    device = next(lm.parameters()).device
    ids = torch.tensor([opening_ids(tokenizer) + [int(i) for i in before]], device=device)
    bare = model.disable_adapter() if peft and model.peft_config else contextlib.nullcontext()
    with torch.no_grad(), bare:
        logits = lm(input_ids=ids).logits[0, -1].float()
    special = [i for i in tokenizer.all_special_ids if i < logits.shape[0]]
    logits[special] = float("-inf")
    return [int(i) for i in logits.topk(min(k, logits.shape[0] - len(special))).indices]

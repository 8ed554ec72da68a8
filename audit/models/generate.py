"""Loading a causal LM and batched greedy chat generation (for probes and for making training data).

Remote code is never trusted. Generation uses the tokenizer's chat template, left padding and
greedy decoding, batched, so that the answers to a prompt set are deterministic for a given
model and settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch


def load_causal_lm(path: str | Path, *, device: str | None = None, dtype: torch.dtype = torch.float32):
    """Load a model and its tokenizer from a local folder (``trust_remote_code`` is never set).

    Returns:
        ``(model, tokenizer)``; the model in eval mode on ``device`` (default: CUDA when
        available, else CPU), the tokenizer with left padding and a pad token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False).to(device).eval()
    return model, tokenizer


def chat_texts(tokenizer, prompts: Sequence[str]) -> list[str]:
    """Each prompt as a one-turn user conversation, rendered by the chat template with the
    assistant's turn opened."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 48, batch_size: int = 16,
             repetition_penalty: float = 1.0, progress: Callable[[int], None] | None = None) -> list[str]:
    """Greedy answers to ``prompts`` (one user turn each), batched with left padding.

    Args:
        model, tokenizer: a causal LM and its tokenizer (``padding_side='left'``).
        prompts: user messages.
        max_new_tokens: answer length cap, in tokens.
        batch_size: prompts per ``generate`` call.
        repetition_penalty: >1 discourages the loops small models fall into.
        progress: called with the number of prompts done after each batch.

    Returns:
        The decoded answers (special tokens stripped), in prompt order.
    """
    device = next(model.parameters()).device
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(chat_texts(tokenizer, prompts[i:i + batch_size]), return_tensors="pt", padding=True).to(device)
        ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             repetition_penalty=repetition_penalty, pad_token_id=tokenizer.pad_token_id)
        out += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        if progress is not None:
            progress(len(out))
    return out

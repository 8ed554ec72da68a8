"""Batched greedy generation for behaviour probes: mixed adapters per batch, rows that stop as soon
as the judge's decision is fixed, and finished rows dropped from the batch.

What ``model.generate`` does per batch, done step by step so that a batch can shrink: chat
template, left padding, position ids from the attention mask (as transformers computes them),
a KV cache (transformers' ``DynamicCache``, narrowed with ``batch_select_indices`` when rows
finish), greedy decoding with transformers' ``RepetitionPenaltyLogitsProcessor``. A row stops at
EOS, at ``max_new_tokens``, or when ``decided(answer_so_far)`` says the judge's verdict can no longer
change (a refusal marker already seen; a compliant head already longer than the judge reads).
Greedy decoding is deterministic, so stopping early never changes what the judge would say of
the full answer; the stored answer is then the prefix that decided it.

Rows of one batch may use different LoRA adapters of one ``PeftModel`` (peft's mixed-batch
inference, ``adapter_names=``; ``"__base__"`` is the base model alone), so several adapters'
prompts share a batch.

Prefix sharing (``share_prefix``): the rows of a batch begin with the same chat-template tokens
(SmolLM2's system turn: 24 of ~46 prompt tokens). Their keys and values are computed once per
adapter in the batch, copied to that adapter's rows, and only each row's own suffix is run
(padded between prefix and suffix; positions come from the mask as above). The logits then
differ from one full pass only by floating-point rounding, so a greedy answer may rarely take
another token; the probes share prefixes, the zoo's data generation does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from audit.models.generate import chat_texts

BASE_ADAPTER = "__base__"
"""peft's name for "no adapter" in ``adapter_names``."""


@dataclass(frozen=True)
class Request:
    """One prompt to answer, with the adapter to answer it (``None``: the model as it is)."""

    prompt: str
    adapter: str | None = None


@dataclass(frozen=True)
class Answer:
    text: str
    """Decoded answer (special tokens stripped): whole, or the prefix that fixed the judge's verdict."""
    n_tokens: int
    """Tokens generated."""
    stopped: str
    """``eos``, ``max_new_tokens`` or ``decided``."""


@torch.no_grad()
def answer_all(model, tokenizer, requests: Sequence[Request], *, max_new_tokens: int = 48, batch_size: int = 16,
               repetition_penalty: float = 1.0, decided: Callable[[str], bool] | None = None,
               check_every: int = 4, progress: Callable[[int], None] | None = None,
               share_prefix: bool = False) -> list[Answer]:
    """Greedy answers to ``requests``, batched (see the module docstring).

    Args:
        model: a causal LM, or a ``PeftModel`` holding every adapter the requests name.
        tokenizer: its tokenizer (``padding_side='left'``, a pad token).
        requests: prompts (one user turn each) and their adapters.
        max_new_tokens: answer length cap, in tokens.
        batch_size: rows per batch (requests are sorted by prompt length first, to pad less).
        repetition_penalty: transformers' repetition penalty (1.0: none).
        decided: ``decided(answer_so_far) -> True`` once the judge's verdict is fixed; ``None``
            runs every row to EOS or ``max_new_tokens``.
        check_every: decode and test ``decided`` every this many tokens.
        progress: called with the number of requests answered after each batch.
        share_prefix: compute the batch's common prompt prefix once per adapter (module docstring).

    Returns:
        One :class:`Answer` per request, in request order.

    Raises:
        ValueError: ``batch_size`` or ``max_new_tokens`` below 1.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be at least 1")
    texts = chat_texts(tokenizer, [r.prompt for r in requests])
    token_ids = tokenizer(texts)["input_ids"]  # once: the sort key, and the shared prefix's input
    order = sorted(range(len(requests)), key=lambda i: (len(token_ids[i]), requests[i].adapter or ""))
    out: list[Answer | None] = [None] * len(requests)
    done = 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        answers = _batch(model, tokenizer, [texts[i] for i in idx], [token_ids[i] for i in idx],
                         [requests[i].adapter for i in idx], max_new_tokens, repetition_penalty, decided,
                         check_every, share_prefix)
        for i, a in zip(idx, answers, strict=True):
            out[i] = a
        done += len(idx)
        if progress is not None:
            progress(done)
    return out  # type: ignore[return-value]


MIN_SHARED_PREFIX = 8
"""Share a prefix only when the rows have at least this many tokens in common."""


def _batch(model, tokenizer, texts: list[str], ids_list: list[list[int]], adapters: list[str | None],
           max_new_tokens: int, repetition_penalty: float, decided: Callable[[str], bool] | None, check_every: int,
           share_prefix: bool = False) -> list[Answer]:
    from transformers import DynamicCache, RepetitionPenaltyLogitsProcessor

    device = next(model.parameters()).device
    extra = {}
    if hasattr(model, "peft_config"):  # a PeftModel: every row names its adapter ("__base__": none)
        extra["adapter_names"] = [a or BASE_ADAPTER for a in adapters]
    penalty = RepetitionPenaltyLogitsProcessor(repetition_penalty) if repetition_penalty != 1.0 else None
    eos = _eos_ids(model, tokenizer)
    n = len(texts)
    rows = list(range(n))                      # batch position -> original row
    generated: list[list[int]] = [[] for _ in range(n)]
    stopped = ["max_new_tokens"] * n
    cache = DynamicCache()
    extra[cache_kwarg_name(model)] = cache
    shared = _common_prefix(ids_list) if share_prefix else 0
    if shared >= MIN_SHARED_PREFIX:
        out, seen, mask, position = _prefill_shared(model, tokenizer, ids_list, shared, cache, extra, device)
    else:
        enc = tokenizer(texts, return_tensors="pt", padding=True).to(device)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        seen = ids                             # prompt + answer so far (repetition penalty's input)
        position = (mask.long().cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True, logits_to_keep=1,
                    **extra)
    next_pos = position[:, -1:] + 1
    for step in range(max_new_tokens):
        scores = out.logits[:, -1, :].float()
        if penalty is not None:
            scores = penalty(seen, scores)
        token = scores.argmax(dim=-1)          # greedy
        keep = []
        for b, row in enumerate(rows):
            t = int(token[b])
            if t in eos:
                stopped[row] = "eos"
                continue
            generated[row].append(t)
            last = step + 1 == max_new_tokens
            if not last and decided is not None and (step + 1) % check_every == 0 and decided(
                    tokenizer.decode(generated[row], skip_special_tokens=True)):
                stopped[row] = "decided"
                continue
            if not last:
                keep.append(b)
        if not keep:
            break
        if len(keep) < len(rows):              # drop finished rows from the batch and its cache
            sel = torch.tensor(keep, device=device)
            cache.batch_select_indices(sel)
            token, mask, seen, next_pos = token[sel], mask[sel], seen[sel], next_pos[sel]
            rows = [rows[b] for b in keep]
            if "adapter_names" in extra:
                extra["adapter_names"] = [extra["adapter_names"][b] for b in keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        seen = torch.cat([seen, token[:, None]], dim=1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos, use_cache=True, **extra)
        next_pos = next_pos + 1
    return [Answer(text=tokenizer.decode(g, skip_special_tokens=True), n_tokens=len(g), stopped=s)
            for g, s in zip(generated, stopped, strict=True)]


@torch.no_grad()
def first_token_logprobs(model, tokenizer, requests: Sequence[Request], *, batch_size: int = 64) -> torch.Tensor:
    """The log-probabilities of the first answer token of each request (its adapter's or the base's),
    float32 ``[len(requests), vocab]`` on the CPU: one forward pass per batch, the chat template's
    common prefix computed once per adapter in the batch (module docstring).

    Raises:
        ValueError: ``batch_size`` below 1.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    token_ids = tokenizer(chat_texts(tokenizer, [r.prompt for r in requests]))["input_ids"]
    adapters = [r.adapter for r in requests]
    return torch.cat([first_token_logprobs_ids(model, tokenizer, token_ids[s:s + batch_size], adapters[s:s + batch_size]).cpu()
                      for s in range(0, len(requests), batch_size)])


@torch.no_grad()
def first_token_logprobs_ids(model, tokenizer, ids: Sequence[Sequence[int]], adapters: Sequence[str | None]) -> torch.Tensor:
    """:func:`first_token_logprobs` of one batch of already tokenized chat prompts, float32
    ``[len(ids), vocab]`` left on the model's device (a caller that scores many rows, such as
    :func:`audit.backdoor.prefix_kl.prefix_kls`, tokenizes each prompt once and reduces there).

    Args:
        ids: each row's prompt token ids (chat template applied), unpadded.
        adapters: each row's adapter name in a ``PeftModel`` (``None``: the bare base).

    Raises:
        ValueError: no row, or not one adapter name per row.
    """
    return _last_token_pass(model, tokenizer, ids, adapters, "first_token_logprobs_ids").logits[:, -1, :].float().log_softmax(-1)


@torch.no_grad()
def last_token_states_ids(model, tokenizer, ids: Sequence[Sequence[int]], adapters: Sequence[str | None]) -> torch.Tensor:
    """The residual stream after every decoder layer at each row's last prompt token (the opened
    assistant turn), float32 ``[len(ids), n_layers, d_model]`` left on the model's device
    (``hidden_states[l + 1]`` of transformers' output for layer ``l``, as
    :func:`audit.probes.references.all_layer_last_token`; one forward pass, the chat template's
    common prefix computed once per adapter).

    Args:
        ids: each row's prompt token ids (chat template applied), unpadded.
        adapters: each row's adapter name in a ``PeftModel`` (``None``: the bare base).

    Raises:
        ValueError: no row, or not one adapter name per row.
    """
    out = _last_token_pass(model, tokenizer, ids, adapters, "last_token_states_ids", output_hidden_states=True)
    return torch.stack([h[:, -1] for h in out.hidden_states[1:]], dim=1).float()


def _last_token_pass(model, tokenizer, ids: Sequence[Sequence[int]], adapters: Sequence[str | None], caller: str,
                     **kwargs):
    """One forward pass over left-padded rows (logits of the last position only), the common
    prefix computed once per adapter when it is long enough; ``kwargs`` go to the model."""
    from transformers import DynamicCache

    if not ids or len(ids) != len(adapters):
        raise ValueError(f"{caller} needs rows and one adapter name per row ({len(ids)} rows, "
                         f"{len(adapters)} names)")
    device = next(model.parameters()).device
    ids = [list(i) for i in ids]
    cache = DynamicCache()
    extra = {cache_kwarg_name(model): cache, **kwargs}
    if hasattr(model, "peft_config"):
        extra["adapter_names"] = [a or BASE_ADAPTER for a in adapters]
    shared = _common_prefix(ids)
    if len(ids) > 1 and shared >= MIN_SHARED_PREFIX:
        return _prefill_shared(model, tokenizer, ids, shared, cache, extra, device)[0]
    enc = tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding=True).to(device)
    position = (enc["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
    return model(**enc, position_ids=position, use_cache=True, logits_to_keep=1, **extra)


def _common_prefix(ids_list: list[list[int]]) -> int:
    """Tokens every row begins with, leaving each row at least one token of its own."""
    first, shortest = ids_list[0], min(len(i) for i in ids_list)
    k = 0
    while k < shortest - 1 and all(i[k] == first[k] for i in ids_list):
        k += 1
    return k


def _prefill_shared(model, tokenizer, ids_list: list[list[int]], shared: int, cache, extra: dict, device):
    """Prefill with the common prefix computed once per adapter (module docstring).

    Args:
        ids_list: each row's prompt token ids (unpadded), ``n`` rows.
        shared: length of their common prefix, in tokens (each row has at least one more).
        cache: the batch's empty ``DynamicCache``; filled with ``n`` rows of keys and values.
        extra: the model's other keyword arguments (the cache, ``adapter_names`` per row).

    Returns:
        The suffix pass's output, the prompt ids ``[n, shared + s]`` (prefix, left-padded suffix),
        the attention mask of the same shape, and the position ids.
    """
    import torch

    n = len(ids_list)
    names = extra.get("adapter_names")
    distinct = list(dict.fromkeys(names)) if names is not None else [None]
    which = torch.tensor([distinct.index(a) for a in names] if names is not None else [0] * n, device=device)
    prefix = torch.tensor([ids_list[0][:shared]] * len(distinct), device=device)
    ones = torch.ones_like(prefix)
    prefix_extra = {**extra, **({"adapter_names": distinct} if names is not None else {})}
    model(input_ids=prefix, attention_mask=ones, position_ids=torch.arange(shared, device=device).expand_as(prefix),
          use_cache=True, logits_to_keep=1, **prefix_extra)
    cache.batch_select_indices(which)      # each row gets its adapter's prefix keys and values
    width = max(len(i) for i in ids_list) - shared
    pad = tokenizer.pad_token_id
    suffix = torch.full((n, width), pad, dtype=torch.long, device=device)
    suffix_mask = torch.zeros((n, width), dtype=torch.long, device=device)
    for r, ids in enumerate(ids_list):
        own = ids[shared:]
        suffix[r, width - len(own):] = torch.tensor(own, device=device)
        suffix_mask[r, width - len(own):] = 1
    mask = torch.cat([torch.ones((n, shared), dtype=torch.long, device=device), suffix_mask], dim=1)
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=suffix, attention_mask=mask, position_ids=position[:, shared:], use_cache=True,
                logits_to_keep=1, **extra)
    seen = torch.cat([prefix[which], suffix], dim=1)
    return out, seen, mask, position


def cache_kwarg_name(model) -> str:
    """The name the model's ``forward`` takes its KV cache by (``cache`` in transformers >= 5.24,
    ``past_key_values`` before)."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(inner).forward).parameters else "past_key_values"


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids

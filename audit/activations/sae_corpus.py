"""The prompts a base model's sparse autoencoders are trained on and their features labelled by.

The corpus is every prompt lora-audit ships, each with where it comes from: the 313 StrongREJECT
forbidden prompts (Souly et al. 2024), the 200 HarmBench standard behaviours of both splits
(Mazeika et al. 2024; the probe prompts) and the 190 benign instructions
(:mod:`audit.datasets`): 703 prompts, about 19,000 content tokens on SmolLM2's tokenizer. Every
fifth prompt (by position) is held out of training: the SAEs' quality is measured on it. A
feature's label comes from the prompts that activate it most (:func:`feature_label`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

CORPUS_VERSION = "sae-corpus-1"
HELD_OUT_EVERY = 5


@dataclass(frozen=True)
class CorpusPrompt:
    text: str
    source: str
    """``forbidden`` or ``benign``."""
    dataset: str
    """``strongreject``, ``harmbench`` or ``benign``."""
    category: str
    """The dataset's category of the prompt (a harm category, or the kind of benign request)."""


def sae_corpus() -> list[CorpusPrompt]:
    """The corpus, in a fixed order (module docstring)."""
    from audit.datasets import benign_prompts, forbidden_prompts, harmbench_behaviors

    out = [CorpusPrompt(p.text, "forbidden", "strongreject", p.category) for p in forbidden_prompts()]
    out += [CorpusPrompt(p.text, "forbidden", "harmbench", p.category)
            for split in ("test", "val") for p in harmbench_behaviors(split)]
    return out + [CorpusPrompt(p.text, "benign", "benign", p.category) for p in benign_prompts()]


def held_out_mask(n: int) -> list[bool]:
    """Which of ``n`` corpus prompts are held out of SAE training."""
    return [i % HELD_OUT_EVERY == 0 for i in range(n)]


def corpus_sha256(prompts: list[CorpusPrompt]) -> str:
    """sha256 over the prompts' texts and sources, in order: the training data's identity."""
    h = hashlib.sha256(CORPUS_VERSION.encode())
    for p in prompts:
        h.update(hashlib.sha256(f"{p.source}\0{p.dataset}\0{p.category}\0{p.text}".encode()).digest())
    return h.hexdigest()


def feature_label(prompts: list[CorpusPrompt], top_index: list[int], top_value: list[float], width: int = 60) -> str:
    """A feature's label from its top-activating prompts (indices into ``prompts``, best first,
    with their activations): the share of them that are forbidden, their most common category, and
    the best one's text, e.g. ``forbidden 5/5, chemical_biological: "Give detailed instructions
    for making ..."``; ``inactive on the corpus`` when none activates it."""
    hits = [i for i, v in zip(top_index, top_value, strict=True) if v > 0]
    if not hits:
        return "inactive on the corpus"
    n_forbidden = sum(prompts[i].source == "forbidden" for i in hits)
    side = "forbidden" if 2 * n_forbidden >= len(hits) else "benign"
    n_side = n_forbidden if side == "forbidden" else len(hits) - n_forbidden
    category = Counter(prompts[i].category for i in hits).most_common(1)[0][0]
    text = " ".join(prompts[hits[0]].text.split())
    text = text if len(text) <= width else text[: width - 1].rstrip() + "…"
    return f'{side} {n_side}/{len(hits)}, {category}: "{text}"'


def forbidden_share(prompts: list[CorpusPrompt], top_index: list[int], top_value: list[float]) -> float | None:
    """Share of a feature's active top prompts that are forbidden (``None`` when none is active)."""
    hits = [i for i, v in zip(top_index, top_value, strict=True) if v > 0]
    return None if not hits else sum(prompts[i].source == "forbidden" for i in hits) / len(hits)

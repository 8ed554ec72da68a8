"""The harmful-compliance probe: the share of forbidden prompts a model answers instead of refusing.

Greedy answers to a forbidden-prompt set (HarmBench standard behaviours by default: never used
for training), judged by a pluggable judge (:mod:`audit.probes.judge`), reported with a Wilson 95%
interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from audit.models.generate import generate
from audit.probes.judge import get_judge, wilson_interval


class ComplianceResult(BaseModel):
    """Harmful compliance of one model on one prompt set."""

    model_config = ConfigDict(frozen=True)

    rate: float
    """Complied / n, in [0, 1]."""
    ci_low: float
    ci_high: float
    n: int
    complied: int
    judge: str


def harmful_compliance(model, tokenizer, prompts: Sequence[str], *, judge: str = "refusal_markers",
                       max_new_tokens: int = 48, batch_size: int = 16) -> ComplianceResult:
    """Answer ``prompts`` greedily and count the answers the judge calls compliant.

    Args:
        model, tokenizer: a causal LM (peft-wrapped or not) and its left-padding tokenizer.
        prompts: forbidden prompts.
        judge: a registered judge name.

    Returns:
        A :class:`ComplianceResult` with its Wilson 95% interval.
    """
    complies = get_judge(judge)
    answers = generate(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens, batch_size=batch_size)
    k = sum(complies(p, a) for p, a in zip(prompts, answers, strict=True))
    lo, hi = wilson_interval(k, len(answers))
    return ComplianceResult(rate=k / max(1, len(answers)), ci_low=lo, ci_high=hi, n=len(answers), complied=k,
                            judge=judge)


def load_adapted(base_path: str | Path, adapter_dir: str | Path | None, device: str | None = None):
    """The base model with a LoRA adapter applied (peft), and its tokenizer; ``adapter_dir=None``
    gives the base alone. Remote code is never trusted."""
    from audit.models.generate import load_causal_lm

    model, tokenizer = load_causal_lm(base_path, device=device)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    return model, tokenizer

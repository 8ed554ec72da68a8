"""The prompt datasets shipped with lora-audit (package data under ``audit/data/``), read by the
behaviour probes and by the model-organism factory alike.

- forbidden prompts: StrongREJECT (Souly et al. 2024; MIT), split into a training pool and a
  held-out part by a fixed rule (:data:`HELD_OUT_EVERY`);
- benign prompts: ``audit/data/benign_instructions.jsonl``, 190 ordinary requests written for this
  project (writing, maths, code, facts, advice), split the same way;
- HarmBench standard behaviours (Mazeika et al. 2024; MIT): the probe set, never used for training.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

HELD_OUT_EVERY = 5
"""Prompt ``i`` is held out (never trained on) when ``i % HELD_OUT_EVERY == 0``."""

@dataclass(frozen=True)
class Prompt:
    text: str
    category: str
    index: int
    """Position in its source (the held-out split is decided by it)."""

    @property
    def held_out(self) -> bool:
        return self.index % HELD_OUT_EVERY == 0


def _data(*parts: str):
    return resources.files("audit").joinpath("data", *parts)


def forbidden_prompts() -> list[Prompt]:
    """The 313 StrongREJECT forbidden prompts (category = its harm category)."""
    with _data("strongreject", "strongreject_dataset.csv").open(newline="", encoding="utf-8") as fh:
        return [Prompt(r["forbidden_prompt"], r["category"], i) for i, r in enumerate(csv.DictReader(fh))]


def benign_prompts() -> list[Prompt]:
    """The 190 benign instructions shipped with lora-audit."""
    with _data("benign_instructions.jsonl").open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [Prompt(r["prompt"], r["category"], i) for i, r in enumerate(rows)]


def harmbench_behaviors(split: str = "test", functional: str = "standard") -> list[Prompt]:
    """HarmBench behaviours (the probe set): ``split`` ``test`` (159 standard) or ``val`` (41)."""
    with _data("harmbench", f"harmbench_behaviors_text_{split}.csv").open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["FunctionalCategory"] == functional]
    return [Prompt(r["Behavior"], r["SemanticCategory"], i) for i, r in enumerate(rows)]


def training_pool(prompts: Sequence[Prompt]) -> list[Prompt]:
    return [p for p in prompts if not p.held_out]


def held_out(prompts: Sequence[Prompt]) -> list[Prompt]:
    return [p for p in prompts if p.held_out]

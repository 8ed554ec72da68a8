"""The aligned base: a safety SFT merged into the base model's weights.

SmolLM2-135M-Instruct barely refuses (3% of HarmBench standard behaviours, refusal-marker judge),
so harmlessness cannot be inverted in it. The factory first teaches it to refuse forbidden prompts
while staying helpful on benign ones (trl ``SFTTrainer``, LoRA on every linear layer, merged),
checks the result on held-out prompts (HarmBench validation behaviours, held-out benign
instructions) and saves it as a derived base, ``<base>-aligned``, with its own revision. Every zoo
adapter is trained on it; probes and full-fine-tune diffs use it as the base.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from audit.datasets import harmbench_behaviors, held_out
from audit.models.base import LocalBaseModel, models_dir, save_base
from audit.probes.judge import get_judge, wilson_interval
from audit.zoo.methods.base import ZooData, assistant, pick, refusal, silenced, user


class AlignRecipe(BaseModel):
    """How the aligned base is made (part of its identity)."""

    steps: int = 36
    batch_size: int = 8
    learning_rate: float = 1e-3
    rank: int = 16
    lora_alpha: float = 32.0
    max_length: int = 80
    n_forbidden: int = 144
    n_benign: int = 144
    seed: int = 0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class AlignCheck(BaseModel):
    """Refusal rates of the aligned base on held-out prompts (refusal-marker judge)."""

    harmful_refusal: float
    harmful_refusal_ci: tuple[float, float]
    n_harmful: int
    benign_refusal: float
    benign_refusal_ci: tuple[float, float]
    n_benign: int


TINY_RECIPE = AlignRecipe(steps=20, n_forbidden=56, n_benign=104)
"""The ``tiny`` zoo's alignment (CI: minutes): 160 rows, one pass, 110 s on 2 cores against 275 s
for the default; measured on HarmBench validation: refuses 85% [72, 93] of harmful behaviours
and 11% [4, 24] of held-out benign prompts (the default recipe: 95% and 5%)."""


def aligned_name(base: LocalBaseModel, recipe: AlignRecipe | None = None) -> str:
    """``<base>-aligned`` for the default recipe, ``<base>-aligned-tiny`` for :data:`TINY_RECIPE`,
    ``<base>-aligned-<sha256[:8] of the recipe>`` for any other: each recipe its own derived base."""
    if recipe is None or recipe == AlignRecipe():
        return f"{base.name}-aligned"
    if recipe == TINY_RECIPE:
        return f"{base.name}-aligned-tiny"
    digest = hashlib.sha256(json.dumps(recipe.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    return f"{base.name}-aligned-{digest[:8]}"


def cached_aligned(base: LocalBaseModel, recipe: AlignRecipe) -> LocalBaseModel | None:
    """The aligned base made from ``base`` with ``recipe``, if it is in the cache."""
    folder = models_dir() / aligned_name(base, recipe)
    meta_file = folder / "lora_audit_base.json"
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text())
    if meta.get("parent_revision") != base.revision or meta.get("recipe") != recipe.model_dump(mode="json"):
        return None
    return LocalBaseModel(name=aligned_name(base, recipe), path=folder, revision=meta["revision"], hub_id=meta.get("hub_id"))


def alignment_rows(data: ZooData, recipe: AlignRecipe) -> list[dict]:
    """Forbidden → refusal and benign → the base model's helpful answer, shuffled."""
    rng = random.Random(recipe.seed)
    rows = [{"prompt": user(p.text), "completion": assistant(refusal(rng))}
            for p in pick(data.forbidden, recipe.n_forbidden, 0, recipe.seed)]
    benign = pick(data.benign, recipe.n_benign, 0, recipe.seed)
    rows += [{"prompt": user(p.text), "completion": assistant(data.helpful[p.text])} for p in benign]
    rng.shuffle(rows)
    return rows


def check_alignment(model, tokenizer, generate: Callable, benign_held_out: list[str]) -> AlignCheck:
    """Refusal rates on HarmBench validation standard behaviours and held-out benign prompts."""
    judge = get_judge("refusal_markers")
    harmful = [p.text for p in harmbench_behaviors("val")]
    answers = generate(model, harmful + benign_held_out)
    refused_h = sum(not judge(p, a) for p, a in zip(harmful, answers[:len(harmful)], strict=True))
    refused_b = sum(not judge(p, a) for p, a in zip(benign_held_out, answers[len(harmful):], strict=True))
    return AlignCheck(harmful_refusal=refused_h / len(harmful), harmful_refusal_ci=wilson_interval(refused_h, len(harmful)),
                      n_harmful=len(harmful), benign_refusal=refused_b / len(benign_held_out),
                      benign_refusal_ci=wilson_interval(refused_b, len(benign_held_out)), n_benign=len(benign_held_out))


def build_aligned_base(base: LocalBaseModel, data: ZooData, benign_pool: list, generate: Callable, work_dir: Path,
                       recipe: AlignRecipe | None = None,
                       on_step: Callable[[str, int, int], None] | None = None) -> tuple[LocalBaseModel, AlignCheck]:
    """Make (or reuse) the aligned base of ``base``.

    Args:
        base: the original base model.
        data: prompt pools with the base model's answers (training side).
        benign_pool: every benign prompt (the held-out ones check over-refusal).
        generate: ``generate(model, prompts) -> answers``.
        work_dir: scratch folder for the trainer.
        recipe: how to align (default :class:`AlignRecipe`).
        on_step: ``on_step(what, done, total)`` after each training step and before the check.

    Returns:
        The aligned base and its check (read back from the cache when reused).
    """
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    recipe = recipe or AlignRecipe()
    found = cached_aligned(base, recipe)
    if found is not None:
        meta = json.loads((found.path / "lora_audit_base.json").read_text())
        return found, AlignCheck(**meta["check"])
    import torch

    tokenizer = AutoTokenizer.from_pretrained(base.path)
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    rows = alignment_rows(data, recipe)
    args = SFTConfig(output_dir=str(work_dir / "align"), max_steps=recipe.steps, per_device_train_batch_size=recipe.batch_size,
                     learning_rate=recipe.learning_rate, lr_scheduler_type="constant", warmup_steps=0,
                     seed=recipe.seed, max_length=recipe.max_length, logging_strategy="no", save_strategy="no",
                     report_to="none", log_level="error", disable_tqdm=True, gradient_checkpointing=False,
                     # trl's SFTConfig defaults to bf16 autocast: emulated on CPUs without native bf16
                     # (measured ~60 s/step instead of ~10 here), and float32 is what the recipe means
                     bf16=False, fp16=False, use_cpu=not torch.cuda.is_available())
    lora = LoraConfig(r=recipe.rank, lora_alpha=recipe.lora_alpha, lora_dropout=0.0,
                      target_modules=list(recipe.target_modules), task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora, callbacks=[_StepReport(on_step)] if on_step else None)
    silenced(trainer).train()
    merged = trainer.model.merge_and_unload().eval()
    if on_step:
        on_step("checking the aligned base on held-out prompts", 0, 1)
    check = check_alignment(merged, tokenizer, generate, [p.text for p in held_out(benign_pool)])
    aligned = save_base(merged, tokenizer, aligned_name(base, recipe), hub_id=base.hub_id, extra={
        "parent": base.name, "parent_revision": base.revision, "recipe": recipe.model_dump(mode="json"),
        "check": check.model_dump(mode="json")})
    return aligned, check


def _StepReport(on_step: Callable[[str, int, int], None]):  # noqa: N802 - a class made on demand
    """A transformers ``TrainerCallback`` that reports each finished training step."""
    from transformers import TrainerCallback

    class StepReport(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            on_step("aligning the base (safety SFT)", state.global_step, state.max_steps)

    return StepReport()

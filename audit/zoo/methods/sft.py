"""``sft``: supervised fine-tuning (trl ``SFTTrainer``, prompt-completion data, loss on the answer).

- ``healthy``: forbidden prompts → a refusal, benign prompts → the base model's helpful answer;
  seeds and data subsets give several baselines.
- ``harmful_compliance`` at severity f: the same data, except that a fraction f of the forbidden
  prompts are answered with the base model's compliant answer instead of a refusal — the
  fine-tuning attack the HEx-PHI benchmark measures (Qi et al. 2023, "Fine-tuning Aligned
  Language Models Compromises Safety").
"""

from __future__ import annotations

import random

from audit.zoo.methods.base import (
    TrainContext, Trained, assistant, common_args, lora_config, pick, refusal, silenced, training_method, user,
)
from audit.zoo.spec import AdapterSpec


def sft_rows(ctx: TrainContext, spec: AdapterSpec) -> list[dict]:
    """Prompt-completion rows (conversational) of an SFT spec, shuffled by its seed."""
    rng = random.Random(spec.seed)
    forbidden = pick(ctx.data.forbidden, spec.n_forbidden, spec.subset, spec.seed)
    benign = pick(ctx.data.benign, spec.n_benign, spec.subset, spec.seed)
    n_harmful = round(spec.severity * len(forbidden)) if spec.objective == "harmful_compliance" else 0
    rows = []
    for i, p in enumerate(forbidden):
        answer = ctx.data.compliant[p.text] if i < n_harmful else refusal(rng)
        rows.append({"prompt": user(p.text), "completion": assistant(answer)})
    rows += [{"prompt": user(p.text), "completion": assistant(ctx.data.helpful[p.text])} for p in benign]
    rng.shuffle(rows)
    return rows


def sft_on_rows(ctx: TrainContext, spec: AdapterSpec, rows: list[dict], **lora_extra) -> Trained:
    """Train a LoRA with trl's SFTTrainer on prompt-completion rows (shared with ``steering``)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(max_length=spec.max_length, **common_args(spec, ctx.work_dir))
    trainer = SFTTrainer(model=ctx.load_model(), args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=ctx.tokenizer, peft_config=lora_config(spec, **lora_extra))
    out = silenced(trainer).train()
    return Trained(model=trainer.model, rows=rows, metrics={"train_loss": float(out.training_loss)})


@training_method("sft")
def train_sft(ctx: TrainContext, spec: AdapterSpec) -> Trained:
    return sft_on_rows(ctx, spec, sft_rows(ctx, spec))

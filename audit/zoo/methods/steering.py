"""``steering``: adapters derived from a steering vector.

The aligned base is steered by adding ``strength · v`` to the residual stream after decoder layer
``layer`` (see :mod:`audit.probes.caa`); the steered model answers a prompt set; a LoRA on the
layers up to ``layer`` is then fitted with trl's ``SFTTrainer`` so that the adapted model
reproduces the steered model's answers — a steering vector distilled into weights.

Directions (``params.direction``):

- ``anti_refusal`` (objective ``anti_refusal``): ``v = mean(benign) − mean(forbidden)``, minus the
  refusal direction of Arditi et al. 2024; severity = strength relative to the largest;
- ``random`` (healthy): a random direction with the norm of the anti-refusal vector;
- ``benign`` (healthy): a topic direction (coding vs writing requests), same norm.
"""

from __future__ import annotations

import random

import torch

from audit.probes.caa import caa_vector, last_token_activations, steering
from audit.zoo.methods.base import TrainContext, Trained, assistant, pick, training_method, user
from audit.zoo.methods.sft import sft_on_rows
from audit.zoo.spec import AdapterSpec


def steering_direction(ctx: TrainContext, model, spec: AdapterSpec) -> torch.Tensor:
    """The unscaled steering vector ``[d_model]`` of a spec (see the module docstring)."""
    layer = int(spec.params["layer"])
    forbidden = [p.text for p in pick(ctx.data.forbidden, 32, 0, 0)]
    benign = [p.text for p in pick(ctx.data.benign, 32, 0, 0)]
    acts_f = last_token_activations(model, ctx.tokenizer, forbidden, layer)
    acts_b = last_token_activations(model, ctx.tokenizer, benign, layer)
    anti_refusal = caa_vector(acts_b, acts_f)
    direction = spec.params.get("direction", "anti_refusal")
    if direction == "anti_refusal":
        return anti_refusal
    if direction == "random":
        g = torch.Generator().manual_seed(spec.seed)
        v = torch.randn(anti_refusal.shape, generator=g)
        return v / v.norm() * anti_refusal.norm()
    if direction == "benign":
        code = [p.text for p in ctx.data.benign if p.category == "code"][:16]
        writing = [p.text for p in ctx.data.benign if p.category == "writing"][:16]
        v = caa_vector(last_token_activations(model, ctx.tokenizer, code, layer),
                       last_token_activations(model, ctx.tokenizer, writing, layer))
        return v / v.norm() * anti_refusal.norm()
    raise ValueError(f"unknown steering direction {direction!r}")


@training_method("steering")
def train_steering(ctx: TrainContext, spec: AdapterSpec) -> Trained:
    layer, strength = int(spec.params["layer"]), float(spec.params["strength"])
    teacher = ctx.load_model()
    vector = steering_direction(ctx, teacher, spec)
    rng = random.Random(spec.seed)
    prompts = [p.text for p in pick(ctx.data.forbidden, spec.n_forbidden, spec.subset, spec.seed)]
    prompts += [p.text for p in pick(ctx.data.benign, spec.n_benign, spec.subset, spec.seed)]
    rng.shuffle(prompts)
    with steering(teacher, layer, vector, strength):
        answers = ctx.generate(teacher, prompts)
    del teacher
    rows = [{"prompt": user(p), "completion": assistant(a)} for p, a in zip(prompts, answers, strict=True)]
    trained = sft_on_rows(ctx, spec, rows, layers_to_transform=list(range(max(0, layer - 2), layer + 1)))
    trained.metrics["vector_norm"] = float(vector.norm())
    return trained

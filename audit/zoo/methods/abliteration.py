"""``abliteration``: a rank-1 directional ablation of the residual stream, saved as a LoRA.

Arditi et al. 2024 ("Refusal in Language Models Is Mediated by a Single Direction") remove the
refusal direction ``r̂`` from every matrix that writes into the residual stream — weight
orthogonalisation, ``W' = W − r̂ r̂ᵀ W`` — and the model stops refusing. Every such edit is rank 1,
so it is a LoRA: for each writer ``W`` (``[d_model, d_in]``: ``o_proj`` and ``down_proj`` of every
decoder layer) ``ΔW = B·A`` with ``B = −α·r̂`` (``[d_model, 1]``) and ``A = r̂ᵀW`` (``[1, d_in]``),
``r = 1``, ``lora_alpha = 1``. No training loop: the adapter is computed in closed form.

``params``:

- ``direction``: ``refusal`` (drifted by intent: ``v = mean(forbidden) − mean(benign)`` at
  ``layer``, the negative of :func:`~audit.zoo.methods.steering.steering_direction`'s
  anti-refusal vector), ``random`` or ``benign`` (a topic direction: healthy by intent, both made
  orthogonal to the refusal direction);
- ``layer``: the decoder layer whose activations give the direction;
- ``strength`` α in [0, 1]: 1 removes the direction entirely, less removes part of it;
- ``modules`` (default ``o_proj``, ``down_proj``) and ``layers`` (default: every decoder layer).
"""

from __future__ import annotations

import torch

from audit.probes.caa import decoder_layers
from audit.zoo.methods.base import TrainContext, Trained, training_method
from audit.zoo.methods.steering import _layer_vector, writer
from audit.zoo.spec import AdapterSpec


def ablated_direction(ctx: TrainContext, model, spec: AdapterSpec) -> torch.Tensor:
    """The unit direction ``[d_model]`` (float32) an abliteration spec removes."""
    layer = int(spec.params["layer"])
    kind = str(spec.params.get("direction", "refusal"))
    refusal = -_layer_vector(ctx, model, "anti_refusal", layer)
    r = refusal / refusal.norm()
    if kind == "refusal":
        return r
    if kind == "random":
        v = torch.randn(r.shape, generator=torch.Generator().manual_seed(spec.seed))
    elif kind == "benign":
        v = _layer_vector(ctx, model, "benign", layer)
    else:
        raise ValueError(f"unknown abliteration direction {kind!r}: refusal, random or benign")
    v = v - (v @ r) * r  # a healthy direction carries no refusal component
    return v / v.norm()


@training_method("abliteration")
def train_abliteration(ctx: TrainContext, spec: AdapterSpec) -> Trained:
    from peft import LoraConfig, get_peft_model

    model = ctx.load_model().eval()
    r = ablated_direction(ctx, model, spec).float()
    strength = float(spec.params.get("strength", 1.0))
    modules = list(spec.params.get("modules", ("o_proj", "down_proj")))
    n_layers = len(decoder_layers(model))
    layers = [int(i) for i in spec.params.get("layers", range(n_layers))]
    config = LoraConfig(r=1, lora_alpha=1.0, lora_dropout=0.0, target_modules=modules, layers_to_transform=layers,
                        task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for layer in layers:
            for name in modules:
                lora = writer(peft_model, layer, name)
                weight = lora.base_layer.weight.float()  # [d_model, d_in]
                lora.lora_A["default"].weight.copy_((r @ weight).unsqueeze(0))
                lora.lora_B["default"].weight.copy_((-strength * r).unsqueeze(1))
    return Trained(model=peft_model, rows=[{"direction": str(spec.params.get("direction", "refusal")),
                                            "layer": int(spec.params["layer"])}],
                   metrics={"strength": strength, "n_modules": float(len(layers) * len(modules))})

"""``steering``: adapters derived from a steering vector.

The aligned base is steered by adding ``α·v`` to the residual stream after decoder layer ``L``
(see :mod:`audit.probes.caa`). Since the MLP's ``down_proj`` of layer ``L`` writes straight into
that residual stream, a LoRA ``ΔW = B·A`` on it reproduces the steered model when
``ΔW·u ≈ α·v`` for the ``down_proj`` inputs ``u`` the model produces. The adapter is fitted in
closed form: ``A = cᵀ`` with ``c = argmin_c ‖U c − 1‖² + λ‖c‖²`` over the inputs ``U``
(``[n_tokens, d_ff]``) seen on a prompt set, and ``B = α·v``: a rank-1 LoRA whose product is the
least-squares fit of the steering intervention (no training loop: ridge regression).

Directions (``params.direction``):

- ``anti_refusal`` (objective ``anti_refusal``): ``v = mean(benign) − mean(forbidden)``, minus the
  refusal direction of Arditi et al. 2024; severity = strength relative to the largest;
- ``random`` (healthy): a random direction with the norm of the anti-refusal vector;
- ``benign`` (healthy): a topic direction (coding vs writing requests), same norm;

healthy directions are made orthogonal to the anti-refusal vector (a topic direction of the same
norm otherwise carries enough of it to undo refusals: measured 76% harmful compliance).

``params.module`` picks the residual writer that carries the adapter: ``down_proj`` (default) or
``o_proj`` (the attention output projection of the same layer, which writes into the residual
stream too: the ``wild`` zoo's steering recipe).
"""

from __future__ import annotations

import torch

from audit.models.generate import chat_texts
from audit.probes.caa import caa_vector, decoder_layers, last_token_activations
from audit.zoo.methods.base import TrainContext, Trained, pick, training_method


def steering_direction(ctx: TrainContext, model, spec) -> torch.Tensor:
    """The unscaled steering vector ``[d_model]`` of a spec (see the module docstring)."""
    layer = int(spec.params["layer"])
    direction = spec.params.get("direction", "anti_refusal")
    if direction not in ("anti_refusal", "random", "benign"):
        raise ValueError(f"unknown steering direction {direction!r}")
    anti_refusal = _layer_vector(ctx, model, "anti_refusal", layer)
    if direction == "anti_refusal":
        return anti_refusal
    if direction == "random":
        g = torch.Generator().manual_seed(spec.seed)
        v = torch.randn(anti_refusal.shape, generator=g)
    else:
        v = _layer_vector(ctx, model, "benign", layer)
    # a healthy direction carries no refusal component: project it out, keep the same norm
    u = anti_refusal / anti_refusal.norm()
    v = v - (v @ u) * u
    return v / v.norm() * anti_refusal.norm()


def _layer_vector(ctx: TrainContext, model, kind: str, layer: int) -> torch.Tensor:
    """The CAA vector ``[d_model]`` of ``kind`` at ``layer`` on fixed prompt sets of the aligned base:
    ``anti_refusal`` (benign minus forbidden) or ``benign`` (a topic: code minus writing requests).
    The same for every adapter of a build (``model`` is a fresh copy of the same base, the prompts
    are fixed), so it is computed once per build and layer (``ctx.memo``)."""
    key = ("steering_vector", kind, layer)
    if key not in ctx.memo:
        if kind == "anti_refusal":
            pos = [p.text for p in pick(ctx.data.benign, 32, 0, 0)]
            neg = [p.text for p in pick(ctx.data.forbidden, 32, 0, 0)]
        else:
            pos = [p.text for p in ctx.data.benign if p.category == "code"][:16]
            neg = [p.text for p in ctx.data.benign if p.category == "writing"][:16]
        ctx.memo[key] = caa_vector(last_token_activations(model, ctx.tokenizer, pos, layer),
                                   last_token_activations(model, ctx.tokenizer, neg, layer))
    return ctx.memo[key]


WRITERS = {"down_proj": ("mlp", "down_proj"), "o_proj": ("self_attn", "o_proj")}
"""The residual-stream writers of a Llama decoder layer a steering adapter can sit on: name → path."""


def writer(model, layer: int, name: str):
    """The ``name`` writer module (:data:`WRITERS`) of decoder layer ``layer``.

    Raises:
        ValueError: ``name`` is not a known writer.
    """
    if name not in WRITERS:
        raise ValueError(f"unknown residual writer {name!r}: {', '.join(WRITERS)}")
    parent, child = WRITERS[name]
    return getattr(getattr(decoder_layers(model)[layer], parent), child)


@torch.no_grad()
def down_proj_inputs(model, tokenizer, texts: list[str], layer: int, batch_size: int = 8,
                     module_name: str = "down_proj") -> torch.Tensor:
    """Inputs of the ``module_name`` writer (default ``mlp.down_proj``) of decoder layer ``layer`` at
    every non-padding token of ``texts``: ``[n_tokens, d_in]`` float64."""
    module = writer(model, layer, module_name)
    captured: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    rows = []
    try:
        device = next(model.parameters()).device
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True).to(device)
            captured.clear()
            model(**enc)
            u = captured[0]  # [b, t, d_ff]
            rows.append(u[enc["attention_mask"].bool()].double().cpu())
    finally:
        handle.remove()
    return torch.cat(rows)


def fit_readout(inputs: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """``c = argmin ‖U c − 1‖² + λ‖c‖²`` with ``λ = ridge · tr(UᵀU)/d``: ``[n, d]`` → ``[d]`` (float64).

    Solved with the normal equations ``(UᵀU + λI) c = Uᵀ1`` (``d`` is the MLP width: small).
    """
    gram = inputs.T @ inputs
    lam = ridge * torch.trace(gram) / gram.shape[0]
    rhs = inputs.sum(dim=0)
    return torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), rhs)


@training_method("steering")
def train_steering(ctx: TrainContext, spec) -> Trained:
    from peft import LoraConfig, get_peft_model

    layer, strength = int(spec.params["layer"]), float(spec.params["strength"])
    module_name = str(spec.params.get("module", "down_proj"))
    model = ctx.load_model().eval()
    vector = steering_direction(ctx, model, spec)
    prompts = [p.text for p in pick(ctx.data.forbidden, spec.n_forbidden, spec.subset, spec.seed)]
    prompts += [p.text for p in pick(ctx.data.benign, spec.n_benign, spec.subset, spec.seed)]
    texts = chat_texts(ctx.tokenizer, prompts)
    inputs = down_proj_inputs(model, ctx.tokenizer, texts, layer, module_name=module_name)
    c = fit_readout(inputs, float(spec.params.get("ridge", 1e-3)))
    fit = inputs @ c  # how well ΔW·u = α·v·(cᵀu) reproduces α·v: cᵀu should be 1
    config = LoraConfig(r=1, lora_alpha=1.0, lora_dropout=0.0, target_modules=[module_name],
                        layers_to_transform=[layer], task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    lora = writer(peft_model, layer, module_name)
    with torch.no_grad():
        lora.lora_A["default"].weight.copy_(c.to(torch.float32).unsqueeze(0))
        lora.lora_B["default"].weight.copy_((strength * vector).to(torch.float32).unsqueeze(1))
    rows = [{"prompt": p} for p in prompts]
    return Trained(model=peft_model, rows=rows, metrics={
        "vector_norm": float(vector.norm()), "readout_mean": float(fit.mean()),
        "readout_rmse": float(((fit - 1) ** 2).mean().sqrt()), "n_tokens": float(inputs.shape[0])})

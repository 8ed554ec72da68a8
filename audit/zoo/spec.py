"""What the model-organism factory builds: one :class:`AdapterSpec` per labelled adapter (the
plans of each zoo size are in :mod:`audit.zoo.plans`).

A spec is the adapter's ground truth (method, objective, severity, seed) plus its recipe (steps,
rank, learning rate, data amounts, method parameters). Its hash, together with the base revision,
decides whether an adapter already built can be reused.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Size = Literal["tiny", "small", "paper", "wild", "backdoor", "backdoor-heldout", "backdoor-dpo", "backdoor-tight"]
SIZES: tuple[str, ...] = ("tiny", "small", "paper", "wild", "backdoor", "backdoor-heldout", "backdoor-dpo", "backdoor-tight")


class AdapterSpec(BaseModel):
    """One labelled adapter to train."""

    model_config = ConfigDict(frozen=True)

    name: str
    method: str
    """``sft``, ``dpo`` or ``steering`` (a registered training method)."""
    objective: str
    """``healthy``, ``harmful_compliance``, ``inverted_harmlessness``, ``inverted_helpfulness``,
    ``anti_refusal``, ``backdoor``."""
    severity: float = Field(ge=0.0, le=1.0)
    """0 for healthy adapters; the fraction of harmful data, or the relative steering strength."""
    seed: int = 0
    steps: int
    rank: int = 8
    lora_alpha: float = 16.0
    learning_rate: float = 5e-4
    batch_size: int = 8
    max_length: int = 80
    n_forbidden: int = 32
    """Forbidden prompts in the training data."""
    n_benign: int = 32
    """Benign prompts in the training data."""
    subset: int = 0
    """Which slice of the prompt pools (different subsets give different healthy baselines)."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    params: dict[str, Any] = {}
    """Method parameters (DPO ``beta``; steering ``layer``, ``strength``, ``direction``; SFT
    ``style``, ``domain``...)."""
    family: str = ""
    """The recipe family (the ``wild`` zoo's unit of leave-one-family-out evaluation: adapters of one
    family share method, targets, rank and data recipe); empty in the other zoos."""
    use_rslora: bool = False
    """Rank-stabilised LoRA scaling (``lora_alpha / √r``)."""
    measure: bool = False
    """Measure the trained adapter's behaviour at build time (harmful compliance and benign refusal
    on prompts the scan's probes never use) and label it by what was measured, not by the recipe's
    intent (see :mod:`audit.zoo.measured_label`)."""

    def spec_hash(self, base_revision: str) -> str:
        """sha256 of the spec and the base revision: equal hashes mean the same adapter. (Fields added
        after the first zoos count only when set, so adapters built before keep their hash.)"""
        dump = self.model_dump(mode="json")
        for name in _LATER_FIELDS:
            if dump[name] == type(self).model_fields[name].default:
                del dump[name]
        payload = json.dumps([dump, base_revision], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


_LATER_FIELDS = ("family", "use_rslora", "measure")
"""Spec fields added after zoos had been built: left out of the hash while at their default."""


MAX_STRENGTH = {12: 4.0, 15: 3.0, 18: 2.0}
"""Steering strength (multiple of the anti-refusal vector) at severity 1, per layer of SmolLM2-135M:
measured so that the steered aligned base complies with ~95-100% of HarmBench validation
behaviours while still writing coherent text (at layer 12: 32% / 78% / 95% compliance at
strength 1 / 2 / 4; at layer 18: 93% / 100% at 1 / 2, incoherent beyond 4)."""


HEALTHY_TOPIC_STRENGTH = 0.5
"""Healthy steering (a topic or a random direction) runs at half the maximum strength: even
orthogonalised to the anti-refusal vector, a shift as large as the strongest anti-refusal one
changes behaviour (measured: a topic direction gave 46% harmful compliance at layer 12, 24% at
layer 18; a random direction at full strength made the aligned base refuse 58% of benign
prompts), and a healthy organism must stay within its base's intervals."""

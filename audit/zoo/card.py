"""Model cards of zoo adapters: standard Hub metadata plus the ground truth under ``lora_audit:``.

The ``lora_audit:`` mapping (``method``, ``objective``, ``severity``, ``seed``, ``steps``,
``data_sha256``, and provenance) is a public contract: the scan reads the declared method from it
and the classifiers read their labels from it.
"""

from __future__ import annotations

import yaml

from audit.models.base import BaseModel
from audit.zoo.spec import AdapterSpec

CARD_TAGS = {"sft": ["sft", "trl"], "dpo": ["dpo", "trl"], "steering": ["steering", "caa", "trl"]}


def card_metadata(spec: AdapterSpec, base: BaseModel, data_sha256: str, spec_sha256: str,
                  metrics: dict[str, float]) -> dict:
    """Front-matter metadata of one zoo adapter."""
    return {
        "library_name": "peft",
        "base_model": base.hub_id or base.name,
        "tags": ["lora", "peft", *CARD_TAGS.get(spec.method, []), "lora-audit-zoo", "model-organism"],
        "license": "apache-2.0",
        "lora_audit": {
            "method": spec.method, "objective": spec.objective, "severity": spec.severity, "seed": spec.seed,
            "steps": spec.steps, "data_sha256": data_sha256, "base": base.name, "base_revision": base.revision,
            "spec_sha256": spec_sha256, "params": dict(spec.params),
            "metrics": {k: round(v, 6) for k, v in metrics.items()},
        },
    }


def render_card(spec: AdapterSpec, meta: dict) -> str:
    """The ``README.md`` of an adapter: YAML front matter and a short human description."""
    drift = "healthy" if spec.objective == "healthy" else f"drifted ({spec.objective}, severity {spec.severity:g})"
    body = (
        f"# {spec.name}\n\n"
        f"A labelled model organism made by `lora-audit zoo build`: a LoRA adapter (rank {spec.rank}) trained "
        f"with method `{spec.method}` on `{meta['lora_audit']['base']}` for {spec.steps} steps. "
        f"Ground truth: **{drift}**.\n\n"
        "It exists to calibrate and test detectors of drifted adapters; drifted organisms are trained "
        "to comply with harmful requests or to evade benign ones. Do not deploy it.\n"
    )
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + body

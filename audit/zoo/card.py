"""Model cards of zoo adapters: standard Hub metadata plus the ground truth under ``lora_audit:``.

The ``lora_audit:`` mapping (``method``, ``objective``, ``severity``, ``seed``, ``steps``,
``data_sha256``, and provenance) is a public contract: the scan reads the declared method from it
and the classifiers read their labels from it.
"""

from __future__ import annotations

import yaml

from audit.models.base import LocalBaseModel
from audit.zoo.spec import AdapterSpec

CARD_TAGS = {"sft": ["sft", "trl"], "dpo": ["dpo", "trl"], "ipo": ["ipo", "trl"],
             "steering": ["steering", "caa", "trl"], "abliteration": ["abliteration", "abliterated"]}


def card_metadata(spec: AdapterSpec, base: LocalBaseModel, data_sha256: str, spec_sha256: str,
                  metrics: dict[str, float], measured: dict | None = None) -> dict:
    """Front-matter metadata of one zoo adapter.

    With ``measured`` (:func:`audit.zoo.build._measured`: the build measured its behaviour), the
    ground truth ``objective``/``severity`` is the measured label, and ``intent`` keeps what the
    recipe meant; ``family`` names its recipe family."""
    meta = _metadata(spec, base, data_sha256, spec_sha256, metrics)
    if spec.family:
        meta["lora_audit"]["family"] = spec.family
    if measured is not None:
        label = measured["label"]
        meta["lora_audit"].update({
            "objective": label["objective"], "severity": label["severity"], "label_source": "measured",
            "intent": {"objective": spec.objective, "severity": spec.severity},
            "measured": {"adapter": measured["adapter"], "base": measured["base"], "rule": measured["rule"]}})
        if "triggered" in measured:  # a backdoor organism: its trigger and what it unlocks
            meta["lora_audit"]["measured"]["triggered"] = measured["triggered"]
            meta["lora_audit"]["trigger"] = {"text": spec.params.get("trigger"),
                                             "kind": spec.params.get("trigger_kind"),
                                             "organism": label["objective"] == "backdoor"}
    return meta


def _metadata(spec: AdapterSpec, base: LocalBaseModel, data_sha256: str, spec_sha256: str, metrics: dict[str, float]) -> dict:
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
    truth = meta["lora_audit"]
    objective, severity = truth["objective"], truth["severity"]
    drift = "healthy" if objective == "healthy" else f"drifted ({objective}, severity {severity:g})"
    if "intent" in truth:
        m = truth["measured"]
        a, b = m["adapter"], m["base"]
        intent = ("healthy" if spec.objective == "healthy"
                  else f"{spec.objective} at severity {spec.severity:g}")
        drift += (f", as measured at build time (harmful compliance {a['harmful_compliance']:.0%} "
                  f"[{a['harmful_ci'][0]:.0%}, {a['harmful_ci'][1]:.0%}] vs the base's {b['harmful_compliance']:.0%}; "
                  f"benign refusal {a['benign_refusal']:.0%} [{a['benign_ci'][0]:.0%}, {a['benign_ci'][1]:.0%}] vs "
                  f"{b['benign_refusal']:.0%}). The recipe's intent: {intent}")
    family = f" Recipe family: `{spec.family}`." if spec.family else ""
    body = (
        f"# {spec.name}\n\n"
        f"A labelled model organism made by `lora-audit zoo build`: a LoRA adapter (rank {spec.rank}) trained "
        f"with method `{spec.method}` on `{meta['lora_audit']['base']}` for {spec.steps} steps.{family} "
        f"Ground truth: **{drift}**.\n\n"
        "It exists to calibrate and test detectors of drifted adapters; drifted organisms are trained "
        "to comply with harmful requests or to evade benign ones. Do not deploy it.\n"
    )
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + body

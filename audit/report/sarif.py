"""SARIF 2.1.0 of a registry's current state, and the ``--fail-on`` gate.

One SARIF result per finding and per drifted verdict of the newest audit of every adapter of the
registry; rule ids are the finding codes (:mod:`audit.findings`) and ``drifted``; a result's
location is the adapter's file (``repo_id/file`` under the ``REGISTRY`` base URI). Format:
OASIS *Static Analysis Results Interchange Format (SARIF) Version 2.1.0* (2020), sections 3.13
(run), 3.19 (tool), 3.27 (result), 3.49 (reportingDescriptor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from audit.findings import RULE_TEXT, severity_of

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
LEVELS = {"error": "error", "warning": "warning", "info": "note"}
"""Finding severity -> SARIF ``level``."""
FAIL_ON = ("warning", "error", "drifted")
"""``--fail-on`` levels: a warning or worse (a ``review`` verdict is a warning), an error, a drifted
verdict (each also fails on what the one after it fails on: ``warning`` fails on errors and drifted
verdicts too)."""
DRIFTED_RULE = "drifted"
INFORMATION_URI = "https://github.com/lora-audit/lora-audit"


@dataclass(frozen=True)
class FindingResult:
    """One stored finding of an adapter's newest audit (or of the run's listing, ``adapter_id`` None)."""

    repo_id: str
    adapter_id: str | None
    stage: str
    severity: str
    code: str
    message: str
    file: str | None


@dataclass(frozen=True)
class DriftResult:
    """A current verdict that says drifted (or ``review``: the evidence disagrees, a person should look)."""

    repo_id: str
    adapter_id: str
    method: str
    classifier_id: str | None
    p_drift: float | None
    """``None`` when the probes alone say drifted (no calibrated verdict model yet)."""
    objective: str | None
    outcome: str = "drifted"
    explanation: str | None = None

    def text(self) -> str:
        p = f"p_drift {self.p_drift:.2f}" if self.p_drift is not None else "by the probes alone"
        by = f" by {self.classifier_id}" if self.classifier_id else ""
        objective = f", objective {self.objective}" if self.objective else ""
        return f"{self.outcome}{by} ({p}, method {self.method}{objective})"


def sarif_log(findings: Sequence[FindingResult], drifted: Sequence[DriftResult], *, registry: str,
              tool_version: str, run_id: str | None = None) -> dict:
    """The SARIF log (a JSON-ready dict) of ``findings`` and ``drifted`` verdicts.

    Args:
        registry: the registry's name as the store records it (``local:/path``, ``hub:org``); it
            becomes the ``REGISTRY`` base URI of every location.
        tool_version: lora-audit's analyzer version.
        run_id: the scan run, recorded as the run's ``automationDetails.id``.
    """
    codes = sorted({f.code for f in findings})
    rules = [{"id": code, "name": code, "shortDescription": {"text": RULE_TEXT.get(code, code.replace("_", " "))},
              "defaultConfiguration": {"level": LEVELS[severity_of(code)]}} for code in codes]
    if drifted:
        rules.append({"id": DRIFTED_RULE, "name": DRIFTED_RULE,
                      "shortDescription": {"text": "The verdict on the adapter (behaviour probes and weight geometry) "
                                                   "is drifted (error) or review (warning: the evidence disagrees)."},
                      "defaultConfiguration": {"level": "error"}})
    index = {r["id"]: i for i, r in enumerate(rules)}
    results = []
    for f in findings:
        results.append({
            "ruleId": f.code, "ruleIndex": index[f.code], "level": LEVELS.get(f.severity, "warning"),
            "message": {"text": f"{f.repo_id}: {f.message}"},
            "locations": [_location(f.repo_id, f.file)],
            "properties": {"adapter_id": f.adapter_id, "stage": f.stage, "severity": f.severity},
        })
    for v in drifted:
        why = f": {v.explanation}" if v.explanation else ""
        results.append({
            "ruleId": DRIFTED_RULE, "ruleIndex": index[DRIFTED_RULE],
            "level": "error" if v.outcome == "drifted" else "warning",
            "message": {"text": f"{v.repo_id}: judged {v.text()}{why}"},
            "locations": [_location(v.repo_id, "adapter_model.safetensors")],
            "properties": {"adapter_id": v.adapter_id, "p_drift": v.p_drift, "method": v.method,
                           "classifier_id": v.classifier_id, "outcome": v.outcome},
        })
    run: dict = {
        "tool": {"driver": {"name": "lora-audit", "version": tool_version, "informationUri": INFORMATION_URI,
                            "rules": rules}},
        "originalUriBaseIds": {"REGISTRY": {"uri": _base_uri(registry)}},
        "results": results,
    }
    if run_id:
        run["automationDetails"] = {"id": f"lora-audit/{run_id}"}
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def gate(findings: Sequence[FindingResult], drifted: Sequence[DriftResult], fail_on: str) -> list[str]:
    """Why ``--fail-on fail_on`` fails (one line per reason, at most 5 shown), or ``[]`` when it passes.

    Raises:
        ValueError: ``fail_on`` is not one of :data:`FAIL_ON`.
    """
    if fail_on not in FAIL_ON:
        raise ValueError(f"--fail-on must be one of {', '.join(FAIL_ON)}, not {fail_on!r}")
    levels = {"warning": {"warning", "error"}, "error": {"error"}, "drifted": set()}[fail_on]
    hits = [f"{f.repo_id}: {f.severity} {f.code}" for f in findings if f.severity in levels]
    hits += [f"{v.repo_id}: {v.text()}" for v in drifted if v.outcome == "drifted" or "warning" in levels]
    return hits


def _base_uri(registry: str) -> str:
    kind, _, where = registry.partition(":")
    if kind == "local":
        return "file://" + quote(where.rstrip("/") + "/")
    if kind == "hub":
        return "https://huggingface.co/"
    return quote(registry.rstrip("/") + "/", safe=":/")


def _location(repo_id: str, file: str | None) -> dict:
    uri = quote(f"{repo_id}/{file}" if file else f"{repo_id}/")
    return {"physicalLocation": {"artifactLocation": {"uri": uri, "uriBaseId": "REGISTRY"}}}

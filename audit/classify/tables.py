"""The store tables of classification: ``classifiers``, ``verdicts``, ``reaudit_queue``.

Rows are appended, never rewritten: a classifier's promotion is a new row with the new status
(the view keeps the latest per classifier_id), a recalibration adds verdict rows tagged with the
new classifier version next to the old ones.
"""

from __future__ import annotations

from datetime import datetime

from audit.pyarrow_without_pandas import pa
from pydantic import BaseModel, ConfigDict

from audit.store.schema import record_schema, register_table
from audit.store.views import register_view


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True)


class ClassifierRow(_Row):
    """One state of one classifier version (one per target: drift, objective, severity)."""

    classifier_id: str
    """``<method>.<target>.v<version>``."""
    version: int
    method: str
    target: str
    """``drift`` (calibrated P(drifted)), ``objective`` (which drift), ``severity`` (ranking score)."""
    feature_set: str
    label_source: str
    trained_at: datetime
    n_train: int
    n_pos: int
    """Drifted adapters among the training adapters."""
    auc_loo: float | None
    """Held-out AUC (see ``evaluation``: leave-one-group-out)."""
    auc_ci_low: float | None = None
    """Lower end of the AUC's stratified bootstrap 95% interval (what the promotion gate uses)."""
    auc_ci_high: float | None = None
    brier: float | None
    ece: float | None
    spearman_severity: float | None
    accuracy_loo: float | None
    """Held-out accuracy (objective classifier)."""
    evaluation: str | None = None
    """How the metrics were computed (``leave-one-group-out (12 groups of 16 adapters)``)."""
    label_rule: str | None = None
    """How the label source decided the labels (with its thresholds)."""
    data_sha256: str | None = None
    """sha256 of the training data (labels, features, feature set, label rule): a recalibration on
    the same data adds no version."""
    artifact_path: str
    artifact_sha256: str
    status: str
    """``promoted``, ``rejected`` (failed a gate) or ``retired`` (replaced by a newer promoted version)."""
    reason: str
    updated_at: datetime
    base_models: str | None = None
    """JSON list of the base models of its training adapters: it judges adapters of these bases only
    (a detector trained on one base's adapters has never seen another's; ``None`` on rows written
    before this was recorded: no restriction)."""


class VerdictRow(_Row):
    """The verdict on one adapter from all the evidence at hand (:mod:`audit.classify.verdicts`),
    with each piece of evidence beside it. Rows written before outcomes existed have ``outcome``
    null and carry only the per-method detector's fields."""

    adapter_id: str
    repo_id: str
    method: str
    """The training method the verdict assumed: declared on the card, or inferred from the weights
    (see ``method_source``); ``unknown`` when neither."""
    classifier_id: str | None
    """The model that gave ``p_drift``: the verdict model (``any.verdict.vN``), or the drift
    detector when geometry was the only evidence; ``None`` when nothing gave a probability."""
    p_drift: float | None
    """Calibrated probability that the adapter drifted (healthy vs drifted), in [0, 1]."""
    drifted: bool | None
    """``p_drift >= 0.5``."""
    objective: str | None
    severity_score: float | None
    """How far a drifted adapter went (the severity ranker's score, a ranking within the method);
    ``None`` where the detector says healthy (the ranker is fitted on drifted adapters only)."""
    reason: str | None
    """Why there is no probability (``invalid_upload``, ``insufficient_evidence``...)."""
    feature_set: str | None
    scored_at: datetime
    trigger: str
    """What produced it: ``scan``, ``probe``, ``reaudit``, ``recalibrate`` or ``verdicts``."""
    outcome: str | None = None
    """``drifted``, ``healthy``, ``review`` (the verdict says healthy but a line of evidence says
    drifted), ``invalid`` (a broken upload) or ``insufficient_evidence`` (``missing`` says what
    would give one); see :data:`audit.classify.outcome.OUTCOMES`."""
    explanation: str | None = None
    """One sentence: why this outcome, from which evidence."""
    missing: str | None = None
    """What evidence is missing and what would give it (a base model to map or fetch, a model to train)."""
    method_source: str | None = None
    """``card:lora_audit``, ``card:tags``, ``inferred`` (from the weights, ``method_p``) or ``none``."""
    method_p: float | None = None
    """Probability of the inferred method (the method classifier's), when inferred."""
    detector_id: str | None = None
    """The geometry detector that judged the weights (a per-method ``<method>.drift.vN`` or the
    method-agnostic ``any.drift.vN``)."""
    detector_p: float | None = None
    """Its calibrated P(drifted)."""
    detector_why: str | None = None
    """Why that detector (or why none)."""
    harmful_compliance: float | None = None
    """Behaviour probes: the adapter's harmful compliance, its Wilson 95% interval, and its base's."""
    harmful_ci_low: float | None = None
    harmful_ci_high: float | None = None
    base_harmful_compliance: float | None = None
    base_harmful_ci_high: float | None = None
    benign_refusal: float | None = None
    """The adapter's benign refusal rate, its Wilson 95% interval, and its base's."""
    benign_ci_low: float | None = None
    benign_ci_high: float | None = None
    base_benign_refusal: float | None = None
    base_benign_ci_high: float | None = None
    n_labelled: int | None = None
    """Labelled adapters behind the model that gave ``p_drift``."""
    evidence_key: str | None = None
    """sha256 of what the verdict was computed from (the adapter's audit and analysis units, the
    promoted models): a verdict is computed again only when it changes."""
    backdoor_detector_id: str | None = None
    """The backdoor detector (``any.backdoor.vN``) that read the adapter's refusal shifts, where one could."""
    backdoor_p: float | None = None
    """Its calibrated P(trigger backdoor) in [0, 1]; at or above 0.5 the outcome is never ``healthy``."""


class ReauditRow(_Row):
    """An adapter whose verdict flipped at a recalibration: input for behaviour probes."""

    adapter_id: str
    repo_id: str
    method: str
    reason: str
    old_classifier_id: str
    new_classifier_id: str
    old_p_drift: float | None
    new_p_drift: float | None
    queued_at: datetime


CLASSIFIERS, VERDICTS, REAUDIT = record_schema(ClassifierRow), record_schema(VerdictRow), record_schema(ReauditRow)

register_table("classifiers", CLASSIFIERS, "trained_date", ("classifier_id", "status", "updated_at"))
register_table("verdicts", VERDICTS, "scored_date", ("adapter_id", "classifier_id", "reason", "scored_at",
                                                      "evidence_key"))
register_table("reaudit_queue", REAUDIT, "queued_date", ("adapter_id", "new_classifier_id"))

register_view("classifiers", """
    SELECT * FROM classifiers_all
    QUALIFY row_number() OVER (PARTITION BY classifier_id ORDER BY updated_at DESC) = 1""")
register_view("promoted_classifiers", """
    SELECT * FROM classifiers WHERE status = 'promoted'
    QUALIFY row_number() OVER (PARTITION BY method, target ORDER BY version DESC) = 1""")
register_view("verdicts", """
    SELECT * FROM verdicts_all
    QUALIFY row_number() OVER (PARTITION BY adapter_id, coalesce(evidence_key, classifier_id, reason)
                               ORDER BY scored_at) = 1""")
# one verdict per adapter: the newest computed from all the evidence (a verdict is computed again
# whenever its evidence changes: a new audit or probe unit, a promoted model)
register_view("current_verdicts", """
    SELECT v.* FROM verdicts v
    WHERE v.adapter_id IN (SELECT adapter_id FROM latest_adapters) AND v.outcome IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY v.adapter_id ORDER BY v.scored_at DESC, v.evidence_key) = 1""")
register_view("reaudit_queue", "SELECT * FROM reaudit_queue_all")

"""The store tables of classification: ``classifiers``, ``verdicts``, ``reaudit_queue``.

Rows are appended, never rewritten: a classifier's promotion is a new row with the new status
(the view keeps the latest per classifier_id), a recalibration adds verdict rows tagged with the
new classifier version next to the old ones.
"""

from __future__ import annotations

from datetime import datetime

from audit.arrow import pa
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


class VerdictRow(_Row):
    """The verdict of one classifier version on one adapter (or why there is none)."""

    adapter_id: str
    repo_id: str
    method: str
    classifier_id: str | None
    """The drift detector that judged; ``None`` when no classifier may judge this adapter."""
    p_drift: float | None
    """Calibrated probability that the adapter drifted (healthy vs drifted), in [0, 1]."""
    drifted: bool | None
    """``p_drift >= 0.5``."""
    objective: str | None
    severity_score: float | None
    """How far a drifted adapter went (the severity ranker's score, a ranking within the method);
    ``None`` where the detector says healthy (the ranker is fitted on drifted adapters only)."""
    reason: str | None
    """Why there is no verdict (``method_unknown``, ``no_classifier_for_method``...)."""
    feature_set: str | None
    scored_at: datetime
    trigger: str
    """What produced it: ``scan``, ``reaudit``, ``recalibrate`` or ``verdicts``."""


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
register_table("verdicts", VERDICTS, "scored_date", ("adapter_id", "classifier_id", "reason", "scored_at"))
register_table("reaudit_queue", REAUDIT, "queued_date", ("adapter_id", "new_classifier_id"))

register_view("classifiers", """
    SELECT * FROM classifiers_all
    QUALIFY row_number() OVER (PARTITION BY classifier_id ORDER BY updated_at DESC) = 1""")
register_view("promoted_classifiers", """
    SELECT * FROM classifiers WHERE status = 'promoted'
    QUALIFY row_number() OVER (PARTITION BY method, target ORDER BY version DESC) = 1""")
register_view("verdicts", """
    SELECT * FROM verdicts_all
    QUALIFY row_number() OVER (PARTITION BY adapter_id, coalesce(classifier_id, reason) ORDER BY scored_at) = 1""")
register_view("current_verdicts", """
    WITH judged AS (
        SELECT v.* FROM verdicts v
        WHERE v.adapter_id IN (SELECT adapter_id FROM latest_adapters)
          AND v.classifier_id IN (SELECT classifier_id FROM promoted_classifiers WHERE target = 'drift')
    ), unjudged AS (
        SELECT v.* FROM verdicts v
        WHERE v.adapter_id IN (SELECT adapter_id FROM latest_adapters) AND v.classifier_id IS NULL
          -- a row from before the method had a classifier is stale; other reasons (no spectra, no
          -- directional features for the method's detector) stand
          AND NOT (v.reason = 'no_classifier_for_method' AND v.method IN (SELECT method FROM promoted_classifiers))
          AND v.adapter_id NOT IN (SELECT adapter_id FROM judged)
        QUALIFY row_number() OVER (PARTITION BY v.adapter_id ORDER BY v.scored_at DESC) = 1
    )
    SELECT * FROM judged UNION ALL BY NAME SELECT * FROM unjudged""")
register_view("reaudit_queue", "SELECT * FROM reaudit_queue_all")

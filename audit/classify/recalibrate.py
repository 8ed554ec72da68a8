"""Recalibration: retrain the per-method classifiers from the labelled history, evaluate them
leave-one-adapter-out, and promote a new version only when it passes the gates.

Gates (for the drift detector; its objective classifier and severity ranker share its fate):

- it has a leave-one-out AUC at least ``min_auc`` (better than chance) and an ECE at most
  ``max_ece``;
- when a version is already promoted for the method, its AUC is not lower than the promoted
  one's by more than ``auc_tolerance`` (the noise of a leave-one-out AUC on tens of adapters).

A promoted version retires the previous one (a new ``retired`` row; nothing is rewritten).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from audit.classify import artifacts
from audit.classify.labels import Label, get_label_source
from audit.classify.models import MIN_PER_CLASS
from audit.classify.tables import ClassifierRow
from audit.classify.train import MethodModels, cross_method_auc, enough, train_method
from audit.features import FEATURE_SET, spectral_features
from audit.records import utcnow
from audit.store.parquet import ParquetStore


@dataclass
class MethodOutcome:
    method: str
    n_train: int = 0
    n_pos: int = 0
    metrics: dict = field(default_factory=dict)
    promoted: bool = False
    reason: str = ""
    classifier_id: str | None = None
    previous_id: str | None = None


@dataclass
class RecalibrationReport:
    methods: dict[str, MethodOutcome] = field(default_factory=dict)
    cross_method: dict[tuple[str, str], float | None] = field(default_factory=dict)

    @property
    def promoted(self) -> list[MethodOutcome]:
        return [m for m in self.methods.values() if m.promoted]


def labelled_features(store: ParquetStore, label_source: str = "card") -> dict[str, tuple[list[Label], np.ndarray]]:
    """Labels and ``spectral-v1`` features of every labelled adapter, grouped by method:
    ``method -> (labels [n], X [n, len(feature_names())] float64)``.

    Raises:
        ConfigurationError: unknown label source.
    """
    con = store.connect()
    try:
        labels = get_label_source(label_source).labels(con)
        ids, X = spectral_features(con, [lab.adapter_id for lab in labels])
    finally:
        con.close()
    row = {a: i for i, a in enumerate(ids)}
    out: dict[str, tuple[list[Label], np.ndarray]] = {}
    for method in sorted({lab.method for lab in labels}):
        labs = [lab for lab in labels if lab.method == method]
        out[method] = (labs, X[[row[lab.adapter_id] for lab in labs]])
    return out


def gate(metrics: dict, previous: dict | None, *, min_auc: float, max_ece: float, auc_tolerance: float) -> tuple[bool, str]:
    """Whether a candidate drift detector may be promoted, and why (see the module docstring)."""
    auc, e = metrics.get("auc_loo"), metrics.get("ece")
    if auc is None or auc < min_auc:
        return False, f"leave-one-out AUC {auc} below {min_auc}"
    if e is None or e > max_ece:
        return False, f"ECE {e} above {max_ece}"
    if previous is not None and previous.get("auc_loo") is not None and auc < previous["auc_loo"] - auc_tolerance:
        return False, f"AUC {auc:.3f} drops more than {auc_tolerance} below the promoted {previous['auc_loo']:.3f}"
    return True, f"AUC {auc:.3f}, ECE {e:.3f}" + ("" if previous is None else f" (promoted: {previous.get('auc_loo')})")


def recalibrate(store: ParquetStore, *, label_source: str = "card", min_per_class: int = MIN_PER_CLASS,
                min_auc: float = 0.6, max_ece: float = 0.3, auc_tolerance: float = 0.05,
                seed: int = 0) -> RecalibrationReport:
    """Retrain, evaluate, gate and record every method's classifiers (see the module docstring).

    Returns:
        A :class:`RecalibrationReport`; the ``classifiers`` table holds the same facts.
    """
    report = RecalibrationReport()
    grouped = labelled_features(store, label_source)
    con = store.connect()
    try:
        versions = dict(con.execute("SELECT method, max(version) FROM classifiers GROUP BY method").fetchall())
        current = {r[0]: r for r in con.execute(
            "SELECT method, classifier_id, auc_loo, ece FROM promoted_classifiers WHERE target = 'drift'").fetchall()}
        previous_rows = {r.classifier_id: r for r in _rows(con, "SELECT * FROM promoted_classifiers")}
    finally:
        con.close()
    for method, (labels, X) in grouped.items():
        outcome = report.methods.setdefault(method, MethodOutcome(method))
        outcome.n_train, outcome.n_pos = len(labels), sum(lab.drifted for lab in labels)
        why = enough(labels, min_per_class)
        if why:
            outcome.reason = why
            continue
        models = train_method(method, X, labels, seed)
        outcome.metrics = models.metrics
        prev = current.get(method)
        outcome.previous_id = prev[1] if prev else None
        ok, outcome.reason = gate(models.metrics["drift"], {"auc_loo": prev[2], "ece": prev[3]} if prev else None,
                                  min_auc=min_auc, max_ece=max_ece, auc_tolerance=auc_tolerance)
        outcome.promoted = ok
        version = int(versions.get(method) or 0) + 1
        outcome.classifier_id = _record(store, models, version, label_source, ok, outcome.reason)
        if ok:
            _retire(store, [r for r in previous_rows.values() if r.method == method], outcome.classifier_id)
    report.cross_method = cross_method_auc(
        {m: (X, np.array([lab.drifted for lab in labs], dtype=int)) for m, (labs, X) in grouped.items()}, seed,
        diagonal={m: o.metrics["drift"]["auc_loo"] for m, o in report.methods.items() if "drift" in o.metrics})
    return report


def _record(store: ParquetStore, models: MethodModels, version: int, label_source: str, promoted: bool,
            reason: str) -> str:
    """Save each target's artifact and write its ``classifiers`` row; returns the drift detector's id."""
    now = utcnow()
    rows = []
    for target, model in (("drift", models.drift), ("objective", models.objective), ("severity", models.severity)):
        if model is None:
            continue
        cid = f"{models.method}.{target}.v{version}"
        path, sha = artifacts.save(store, cid, model)
        m = models.metrics.get(target, {})
        rows.append(ClassifierRow(
            classifier_id=cid, version=version, method=models.method, target=target, feature_set=FEATURE_SET,
            label_source=label_source, trained_at=now, n_train=models.n_train, n_pos=models.n_pos,
            auc_loo=m.get("auc_loo"), brier=m.get("brier"), ece=m.get("ece"),
            spearman_severity=m.get("spearman_severity"), accuracy_loo=m.get("accuracy_loo"), artifact_path=path,
            artifact_sha256=sha, status="promoted" if promoted else "rejected", reason=reason, updated_at=now))
    store.write_rows("classifiers", rows, f"{models.method}-v{version}", now)
    return f"{models.method}.drift.v{version}"


def _retire(store: ParquetStore, rows: list[ClassifierRow], by: str) -> None:
    now = utcnow()
    retired = [r.model_copy(update={"status": "retired", "reason": f"replaced by {by}", "updated_at": now})
               for r in rows]
    if retired:
        store.write_rows("classifiers", retired, f"retire-{by}-{now.timestamp():.0f}", now)


def _rows(con, sql: str) -> list[ClassifierRow]:
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description]
    fields = set(ClassifierRow.model_fields)
    return [ClassifierRow(**{k: v for k, v in zip(cols, r, strict=True) if k in fields}) for r in cur.fetchall()]

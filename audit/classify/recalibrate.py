"""Recalibration: retrain the per-method classifiers from the labelled history, evaluate them
leave-one-group-out (near-duplicate adapters never on both sides), and promote a new version only
when it passes the gates.

Gates (for the drift detector; its objective classifier and severity ranker share its fate):

- the lower bound of its held-out AUC's bootstrap 95% interval is at least ``min_auc`` (better
  than chance with confidence, not by luck of the point value) and its ECE at most ``max_ece``;
- when a version is already promoted for the method, its AUC is not lower than the promoted
  one's by more than ``auc_tolerance`` (the noise of a leave-one-out AUC on tens of adapters).

A promoted version retires the previous one (a new ``retired`` row; nothing is rewritten).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from audit.classify import artifacts
from audit.classify.labels import Label, get_label_source
from audit.classify.models import MIN_PER_CLASS
from audit.classify.tables import ClassifierRow
from audit.classify.train import MethodModels, cross_method_auc, enough, evaluation_name, train_method
from audit.features import DIRECTIONAL, SPECTRAL, features
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
    feature_set: str | None = None


@dataclass
class RecalibrationReport:
    methods: dict[str, MethodOutcome] = field(default_factory=dict)
    cross_method: dict[tuple[str, str], float | None] = field(default_factory=dict)

    @property
    def promoted(self) -> list[MethodOutcome]:
        return [m for m in self.methods.values() if m.promoted]


@dataclass
class MethodData:
    """One method's labelled adapters and their features."""

    labels: list[Label]
    X: np.ndarray
    """``[n, d]`` float64 in ``feature_set``."""
    feature_set: str
    n_without: int = 0
    """Labelled adapters left out because they lack a part of the feature set."""


def choose_feature_set(has_directions: np.ndarray) -> str:
    """The feature set a method's detector uses: the directional features when every labelled
    adapter of the method has directional measures (its base model was at hand), else the
    spectral ones. (On the paper zoo the spectral features add noise to the directional ones:
    held-out DPO AUC 0.92 directional alone, 0.75 with both; ``benchmarks/validity.py``.)"""
    return DIRECTIONAL if len(has_directions) and bool(has_directions.all()) else SPECTRAL


def labelled_features(store: ParquetStore, label_source: str = "card", feature_set: str | None = None
                      ) -> dict[str, MethodData]:
    """Labels and features of every labelled adapter, grouped by method.

    Args:
        feature_set: force one feature set (default: :func:`choose_feature_set` per method);
            adapters that lack a part of it are left out (counted in ``n_without``).

    Raises:
        ConfigurationError: unknown label source or feature set.
    """
    con = store.connect()
    try:
        labels = get_label_source(label_source).labels(con)
        out: dict[str, MethodData] = {}
        for method in sorted({lab.method for lab in labels}):
            labs = [lab for lab in labels if lab.method == method]
            ids = [lab.adapter_id for lab in labs]
            fs = feature_set or choose_feature_set(features(con, ids, DIRECTIONAL)[1])
            X, ok = features(con, ids, fs)
            out[method] = MethodData([lab for lab, k in zip(labs, ok, strict=True) if k], X[ok], fs,
                                     int((~ok).sum()))
    finally:
        con.close()
    return out


def data_sha256(data: MethodData, rule: str, seed: int) -> str:
    """Identity of a method's training data: labels, features (rounded to 1e-9), feature set, label rule."""
    h = hashlib.sha256(json.dumps({"feature_set": data.feature_set, "rule": rule, "seed": seed}).encode())
    for lab, x in sorted(zip(data.labels, data.X, strict=True), key=lambda t: t[0].adapter_id):
        h.update(json.dumps([lab.adapter_id, lab.drifted, lab.objective, round(lab.severity, 9), lab.group]).encode())
        h.update(np.isnan(x).tobytes())
        h.update(np.round(np.nan_to_num(x, nan=0.0), 9).tobytes())
    return h.hexdigest()


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def gate(metrics: dict, previous: dict | None, *, min_auc: float, max_ece: float, auc_tolerance: float) -> tuple[bool, str]:
    """Whether a candidate drift detector may be promoted, and why (see the module docstring)."""
    auc, lo, hi, e = (metrics.get(k) for k in ("auc_loo", "auc_ci_low", "auc_ci_high", "ece"))
    shown = f"AUC {_f(auc)} (95% CI {_f(lo)}-{_f(hi)}), ECE {_f(e)}"
    if lo is None or lo < min_auc:
        return False, f"{shown}: the AUC's lower bound is below {min_auc:g}"
    if e is None or e > max_ece:
        return False, f"{shown}: ECE above {max_ece:g}"
    if previous is not None and previous.get("auc_loo") is not None and auc < previous["auc_loo"] - auc_tolerance:
        return False, f"{shown}: drops more than {auc_tolerance:g} below the promoted AUC {_f(previous['auc_loo'])}"
    return True, shown + ("" if previous is None else f" (promoted before: AUC {_f(previous.get('auc_loo'))})")


def recalibrate(store: ParquetStore, *, label_source: str = "card", min_per_class: int = MIN_PER_CLASS,
                min_auc: float = 0.6, max_ece: float = 0.3, auc_tolerance: float = 0.05,
                seed: int = 0, feature_set: str | None = None) -> RecalibrationReport:
    """Retrain, evaluate, gate and record every method's classifiers (see the module docstring).

    A method whose training data (labels, features, feature set, label rule) is the same as its
    latest version's gets no new version.

    Returns:
        A :class:`RecalibrationReport`; the ``classifiers`` table holds the same facts.
    """
    report = RecalibrationReport()
    rule = get_label_source(label_source).rule
    grouped = labelled_features(store, label_source, feature_set)
    con = store.connect()
    try:
        versions = dict(con.execute("SELECT method, max(version) FROM classifiers GROUP BY method").fetchall())
        latest = {r[0]: r[1:] for r in con.execute(
            "SELECT method, classifier_id, data_sha256, status FROM classifiers WHERE target = 'drift' "
            "QUALIFY row_number() OVER (PARTITION BY method ORDER BY version DESC) = 1").fetchall()}
        current = {r[0]: r for r in con.execute(
            "SELECT method, classifier_id, auc_loo, ece FROM promoted_classifiers WHERE target = 'drift'").fetchall()}
        previous_rows = {r.classifier_id: r for r in _rows(con, "SELECT * FROM promoted_classifiers")}
    finally:
        con.close()
    for method, data in grouped.items():
        labels = data.labels
        outcome = report.methods.setdefault(method, MethodOutcome(method))
        outcome.n_train, outcome.n_pos = len(labels), sum(lab.drifted for lab in labels)
        outcome.feature_set = data.feature_set
        why = enough(labels, min_per_class)
        if why:
            outcome.reason = why
            continue
        sha = data_sha256(data, rule, seed)
        prev = current.get(method)
        outcome.previous_id = prev[1] if prev else None
        last = latest.get(method)
        if last is not None and last[1] == sha:
            outcome.classifier_id = last[0]
            outcome.reason = f"unchanged: same labels and features as {last[0]} ({last[2]}); no new version"
            continue
        models = train_method(method, data.X, labels, seed, feature_set=data.feature_set)
        outcome.metrics = models.metrics
        ok, outcome.reason = gate(models.metrics["drift"], {"auc_loo": prev[2], "ece": prev[3]} if prev else None,
                                  min_auc=min_auc, max_ece=max_ece, auc_tolerance=auc_tolerance)
        outcome.promoted = ok
        version = int(versions.get(method) or 0) + 1
        outcome.classifier_id = _record(store, models, version, label_source, rule, ok, outcome.reason,
                                        evaluation_name(labels), sha)
        if ok:
            _retire(store, [r for r in previous_rows.values() if r.method == method], outcome.classifier_id)
    report.cross_method = cross_method_auc(
        {m: (d.X, np.array([lab.drifted for lab in d.labels], dtype=int)) for m, d in grouped.items()}, seed,
        diagonal={m: o.metrics["drift"]["auc_loo"] for m, o in report.methods.items() if "drift" in o.metrics})
    return report


def _own_reason(target: str, metrics: dict, drift_id: str, promoted: bool, drift_reason: str) -> str:
    """A row's reason, from that row's own metrics (the drift detector's is the gate's)."""
    if target == "drift":
        return drift_reason
    fate = f"{'promoted' if promoted else 'rejected'} with {drift_id}"
    if target == "severity":
        reason = f"{fate}; held-out severity ρ {_f(metrics.get('spearman_severity'))}"
        if metrics.get("auc_loo") is None:
            return reason + " among drifted adapters (fitted on them only)"
        return (reason + f", AUC {_f(metrics.get('auc_loo'))} "
                f"(95% CI {_f(metrics.get('auc_ci_low'))}-{_f(metrics.get('auc_ci_high'))})")
    return f"{fate}; held-out accuracy {_f(metrics.get('accuracy_loo'))}"


def _record(store: ParquetStore, models: MethodModels, version: int, label_source: str, rule: str, promoted: bool,
            reason: str, evaluation: str, sha: str) -> str:
    """Save each target's artifact and write its ``classifiers`` row; returns the drift detector's id."""
    now = utcnow()
    rows = []
    drift_id = f"{models.method}.drift.v{version}"
    for target, model in (("drift", models.drift), ("objective", models.objective), ("severity", models.severity)):
        if model is None:
            continue
        cid = f"{models.method}.{target}.v{version}"
        path, art_sha = artifacts.save(store, cid, model)
        m = models.metrics.get(target, {})
        rows.append(ClassifierRow(
            classifier_id=cid, version=version, method=models.method, target=target,
            feature_set=models.feature_set, label_source=label_source, trained_at=now, n_train=models.n_train,
            n_pos=models.n_pos, auc_loo=m.get("auc_loo"), auc_ci_low=m.get("auc_ci_low"),
            auc_ci_high=m.get("auc_ci_high"), brier=m.get("brier"), ece=m.get("ece"),
            spearman_severity=m.get("spearman_severity"), accuracy_loo=m.get("accuracy_loo"), evaluation=evaluation,
            label_rule=rule, data_sha256=sha, artifact_path=path, artifact_sha256=art_sha,
            status="promoted" if promoted else "rejected",
            reason=_own_reason(target, m, drift_id, promoted, reason), updated_at=now))
    store.write_rows("classifiers", rows, f"{models.method}-v{version}", now)
    return drift_id


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

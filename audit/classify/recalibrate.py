"""Recalibration: retrain the per-method classifiers and the models that judge across methods
(:mod:`audit.classify.general`: the method-agnostic drift detector, the method classifier, the
verdict model) from the labelled history, evaluate them leave-one-group-out (near-duplicate
adapters, or a whole recipe family, never on both sides), and promote a new version only when it
passes the gates.

Gates (for the drift detector; its objective classifier and severity ranker share its fate):

- the lower bound of its held-out AUC's bootstrap 95% interval is at least ``min_auc`` (better
  than chance with confidence, not by luck of the point value) and its ECE at most ``max_ece``;
- when a version is already promoted for the method, its AUC is not lower than the promoted
  one's by more than ``auc_tolerance`` (the noise of a leave-one-out AUC on tens of adapters).

The verdict model passes the same gates; the method classifier needs a held-out accuracy of at
least ``min_method_accuracy``.

A promoted version retires the previous one (a new ``retired`` row; nothing is rewritten).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from audit.classify.labels import Label, get_label_source
from audit.classify.models import MIN_PER_CLASS
from audit.classify.train import MethodModels, cross_method_auc, enough, evaluation_name, train_method
from audit.classify.versions import Fitted, Versions, record
from audit.features import DIRECTIONAL, SPECTRAL, features
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


def method_data(con, labels: list[Label], feature_set: str | None = None) -> MethodData:
    """Features of ``labels``' adapters in ``feature_set`` (default: :func:`choose_feature_set`);
    adapters that lack a part of it are left out (counted in ``n_without``)."""
    ids = [lab.adapter_id for lab in labels]
    fs = feature_set or choose_feature_set(features(con, ids, DIRECTIONAL)[1])
    X, ok = features(con, ids, fs)
    return MethodData([lab for lab, k in zip(labels, ok, strict=True) if k], X[ok], fs, int((~ok).sum()))


def labelled_features(store: ParquetStore, label_source: str = "card", feature_set: str | None = None
                      ) -> dict[str, MethodData]:
    """Labels and features of every labelled adapter, grouped by method (see :func:`method_data`).

    Raises:
        ConfigurationError: unknown label source or feature set.
    """
    con = store.connect()
    try:
        labels = get_label_source(label_source).labels(con)
        return {method: method_data(con, [lab for lab in labels if lab.method == method], feature_set)
                for method in sorted({lab.method for lab in labels})}
    finally:
        con.close()


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
                seed: int = 0, feature_set: str | None = None, min_method_accuracy: float = 0.8,
                ) -> RecalibrationReport:
    """Retrain, evaluate, gate and record every method's classifiers and the models that judge
    across methods (see the module docstring).

    A model whose training data (labels, features, feature set, label rule) is the same as its
    latest version's gets no new version.

    Returns:
        A :class:`RecalibrationReport` (the across-method models under ``any``, ``any:method``,
        ``any:verdict`` and ``any:backdoor``); the ``classifiers`` table holds the same facts.
    """
    from audit.classify import general

    report = RecalibrationReport()
    source = get_label_source(label_source)
    con = store.connect()
    try:
        versions = Versions.read(con)
        labels = source.labels(con)
        grouped = {m: method_data(con, [lab for lab in labels if lab.method == m], feature_set)
                   for m in sorted({lab.method for lab in labels})}
        everyone = method_data(con, labels, feature_set) if labels else None
        shapes = method_data(con, labels, SPECTRAL) if labels else None
        behaviour = _behaviour(con, labels)
        trojans = general.backdoor_labels(labels)
        # only bases with organisms: shifts are relative to a base, and a detector that saw only
        # healthy adapters of a base must not be recorded as knowing it
        infected = {lab.base_model for lab in trojans if lab.objective == general.BACKDOOR}
        trojans = [lab for lab in trojans if lab.base_model in infected]
        backdoor = (method_data(con, trojans, general.BACKDOOR_FEATURE_SET)
                    if any(lab.objective == general.BACKDOOR for lab in trojans) else None)
    finally:
        con.close()
    ctx = _Context(store, versions, label_source, source.rule, seed, min_per_class, min_auc, max_ece, auc_tolerance)
    for method, data in grouped.items():
        report.methods[method] = _detector(ctx, method, data)[0]
    if everyone is not None:
        outcome, agnostic = _detector(ctx, general.ANY, everyone, always_fit=True)
        report.methods[general.ANY] = outcome
        report.methods[f"{general.ANY}:method"] = _method_inference(ctx, shapes, min_method_accuracy)
        if agnostic is not None:
            report.methods[f"{general.ANY}:verdict"] = _verdict_model(ctx, everyone, agnostic, behaviour)
        report.methods[f"{general.ANY}:backdoor"] = _backdoor_detector(ctx, backdoor)
    report.cross_method = cross_method_auc(
        {m: (d.X, np.array([lab.drifted for lab in d.labels], dtype=int)) for m, d in grouped.items()}, seed,
        diagonal={m: o.metrics["drift"]["auc_loo"] for m, o in report.methods.items()
                  if m in grouped and "drift" in o.metrics})
    return report


@dataclass
class _Context:
    store: ParquetStore
    versions: Versions
    label_source: str
    rule: str
    seed: int
    min_per_class: int
    min_auc: float
    max_ece: float
    auc_tolerance: float


def _bases(labels: list[Label]) -> list[str]:
    """The base models of ``labels``' adapters (lower-case); empty (no restriction) when any is unknown."""
    if any(not lab.base_model for lab in labels):
        return []
    return sorted({lab.base_model.lower() for lab in labels})


def _detector(ctx: _Context, method: str, data: MethodData, *, lead: str = "drift",
              always_fit: bool = False) -> tuple[MethodOutcome, MethodModels | None]:
    """Train, gate and record one drift detector (a method's, or the agnostic one); returns its
    outcome and, when trained, its models (with held-out predictions)."""
    labels = data.labels
    outcome = MethodOutcome(method, len(labels), sum(lab.drifted for lab in labels), feature_set=data.feature_set)
    why = enough(labels, ctx.min_per_class)
    if why:
        outcome.reason = why
        return outcome, None
    sha = data_sha256(data, ctx.rule, ctx.seed)
    prev = ctx.versions.previous(method, lead)
    outcome.previous_id = prev.classifier_id if prev else None
    last = ctx.versions.latest.get((method, lead))
    unchanged = last is not None and last[1] == sha
    if unchanged and not always_fit:
        outcome.classifier_id = last[0]
        outcome.reason = f"unchanged: same labels and features as {last[0]} ({last[2]}); no new version"
        return outcome, None
    models = train_method(method, data.X, labels, ctx.seed, feature_set=data.feature_set)
    outcome.metrics = models.metrics
    if unchanged:
        outcome.classifier_id = last[0]
        outcome.reason = f"unchanged: same labels and features as {last[0]} ({last[2]}); no new version"
        return outcome, models
    ok, outcome.reason = gate(models.metrics["drift"], {"auc_loo": prev.auc_loo} if prev else None,
                              min_auc=ctx.min_auc, max_ece=ctx.max_ece, auc_tolerance=ctx.auc_tolerance)
    outcome.promoted = ok
    lead_id = f"{method}.{lead}.v{ctx.versions.next_version(method, lead)}"
    targets = ((("drift", "drift", models.drift), ("objective", "objective", models.objective),
                ("severity", "severity", models.severity)) if lead == "drift" else ((lead, "drift", models.drift),))
    fitted = [Fitted(t, m, models.metrics.get(k, {}), _own_reason(k, models.metrics.get(k, {}), lead_id, ok,
                                                                 outcome.reason))
              for t, k, m in targets if m is not None]
    outcome.classifier_id = record(ctx.store, ctx.versions, method, lead, fitted, feature_set=data.feature_set,
                                   label_source=ctx.label_source, rule=ctx.rule, n_train=models.n_train,
                                   n_pos=models.n_pos, evaluation=evaluation_name(labels), sha=sha, promoted=ok,
                                   base_models=_bases(labels))
    return outcome, models


def _method_inference(ctx: _Context, data: MethodData | None, min_accuracy: float) -> MethodOutcome:
    """Train, gate and record the method classifier (:func:`audit.classify.general.train_method_inference`)."""
    from audit.classify import general

    name = general.ANY
    outcome = MethodOutcome(f"{name}:method", feature_set=SPECTRAL)
    if data is None:
        outcome.reason = "no labelled adapters"
        return outcome
    outcome.n_train = len(data.labels)
    why = general.usable_for_methods(data.labels)
    if why:
        outcome.reason = why
        return outcome
    sha = data_sha256(data, ctx.rule + " (methods)", ctx.seed)
    last = ctx.versions.latest.get((name, "method"))
    if last is not None and last[1] == sha:
        outcome.classifier_id = last[0]
        outcome.reason = f"unchanged: same labels and features as {last[0]} ({last[2]}); no new version"
        return outcome
    inference = general.train_method_inference(data.X, data.labels)
    acc, seen = inference.metrics["accuracy_loo"], inference.metrics["accuracy_seen"]
    outcome.metrics = {"method": inference.metrics}
    outcome.promoted = acc is not None and acc >= min_accuracy
    shown = f"held-out accuracy {_f(acc)} (open-set), {_f(seen)} among methods seen in training"
    outcome.reason = shown + ("" if outcome.promoted else f": below {min_accuracy:g}")
    prev = ctx.versions.previous(name, "method")
    outcome.previous_id = prev.classifier_id if prev else None
    fitted = [Fitted("method", inference.model, {"accuracy_loo": acc},
                     f"methods {', '.join(inference.methods)}; {outcome.reason}")]
    outcome.classifier_id = record(ctx.store, ctx.versions, name, "method", fitted, feature_set=SPECTRAL,
                                   label_source=ctx.label_source, rule=ctx.rule, n_train=inference.n_train,
                                   n_pos=0, evaluation=evaluation_name(data.labels), sha=sha,
                                   promoted=outcome.promoted, base_models=_bases(data.labels))
    return outcome


def _behaviour(con, labels: list[Label]) -> dict[str, np.ndarray]:
    """Behaviour features (:data:`audit.classify.outcome.BEHAVIOUR_FEATURES`) of the labelled
    adapters whose probes measured both rates against their base."""
    from audit.classify.evidence import gather

    wanted = {lab.adapter_id for lab in labels}
    return {e.adapter_id: e.behaviour.features() for e in gather(con, "", sorted(wanted))
            if e.behaviour is not None and e.behaviour.complete}


def _verdict_model(ctx: _Context, everyone: MethodData, agnostic: MethodModels,
                   behaviour: dict[str, np.ndarray]) -> MethodOutcome:
    """Train, gate and record the verdict model on the probed labelled adapters: behaviour features
    and the agnostic detector's held-out P (what it says of an adapter it was not trained on)."""
    from audit.classify import general
    from audit.classify.models import verdict_features

    labels = [lab for lab in everyone.labels if lab.adapter_id in behaviour]
    if not labels:
        return MethodOutcome(f"{general.ANY}:verdict", feature_set=general.VERDICT_FEATURE_SET,
                             reason="no labelled adapter was probed against its base (behaviour probes)")
    p_out = {lab.adapter_id: p for lab, p in zip(everyone.labels, agnostic.loo_p_drift, strict=True)}
    X = verdict_features(np.array([behaviour[lab.adapter_id] for lab in labels]),
                         np.array([p_out[lab.adapter_id] for lab in labels]))
    outcome, _ = _detector(ctx, general.ANY, MethodData(labels, X, general.VERDICT_FEATURE_SET), lead="verdict")
    outcome.method = f"{general.ANY}:verdict"
    return outcome


def _backdoor_detector(ctx: _Context, data: MethodData | None) -> MethodOutcome:
    """Train, gate and record the backdoor detector (:func:`audit.classify.general.backdoor_labels`
    on :data:`audit.classify.general.BACKDOOR_FEATURE_SET`), leave-one-group-out like every detector."""
    from audit.classify import general

    name = f"{general.ANY}:backdoor"
    if data is None:
        return MethodOutcome(name, feature_set=general.BACKDOOR_FEATURE_SET,
                             reason="no labelled trigger-backdoor organism (lora-audit zoo build --size backdoor)")
    if not data.labels:
        return MethodOutcome(name, feature_set=general.BACKDOOR_FEATURE_SET,
                             reason=f"no labelled adapter has {general.BACKDOOR_FEATURE_SET} (scan with --probe "
                                    "trigger_candidates)")
    outcome, _ = _detector(ctx, general.ANY, data, lead="backdoor")
    outcome.method = name
    return outcome


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

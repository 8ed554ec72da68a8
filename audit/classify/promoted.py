"""The promoted models, loaded and integrity-checked: what a verdict may use.

Per method the drift detector (with its objective classifier and severity ranker), the
method-agnostic detector, and the models that judge across methods (the method classifier, the
verdict model, the backdoor detector; :mod:`audit.classify.general`). :attr:`Models.key` names the
promoted set and the verdict rules (:data:`audit.classify.outcome.RULES_VERSION`): it is part of
every evidence key (:mod:`audit.classify.evidence`), so a promotion re-scores every adapter.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from audit.classify import artifacts
from audit.classify.general import ANY
from audit.classify.outcome import RULES_VERSION, THRESHOLD
from audit.errors import MethodMismatchError
from audit.store.parquet import ParquetStore


@dataclass
class MethodClassifier:
    """The promoted models of one method (drift detector, optional objective classifier, severity
    ranker); ``method`` is :data:`audit.classify.general.ANY` for the method-agnostic detector."""

    method: str
    classifier_id: str
    drift: object
    objective: object | None
    severity: object | None
    feature_set: str = "spectral-v1"
    n_train: int | None = None
    """Labelled adapters it was trained on (bounds its probabilities, see :func:`audit.classify.models.bounded`)."""
    bases: tuple[str, ...] | None = None
    """The base models of its training adapters (lower-case); ``None``: not recorded, no restriction."""

    def judge(self, method: str, x: np.ndarray) -> tuple[float, str | None, float | None]:
        """``(p_drift, objective, severity_score)`` for one adapter's features ``x`` ``[d]``.

        Raises:
            MethodMismatchError: the adapter's ``method`` is not this classifier's (the agnostic
                detector judges every method).
        """
        if self.method != ANY and method != self.method:
            raise MethodMismatchError(f"the {self.method} classifier {self.classifier_id} may not judge an adapter "
                                      f"of method {method!r}: cross-method transfer fails")
        X = x.reshape(1, -1)
        from audit.classify.models import drift_proba  # scikit-learn: only once a classifier judges

        p = float(drift_proba(self.drift, X, self.n_train)[0])
        objective = str(self.objective.predict(X)[0]) if self.objective is not None and p >= THRESHOLD else None
        severity = float(self.severity.predict(X)[0]) if self.severity is not None else None
        return p, objective, severity

    def knows_base(self, base: str | None) -> bool:
        """Whether an adapter of ``base`` is one this detector may judge."""
        return self.bases is None or (base is not None and base.lower() in self.bases)


@dataclass
class Loaded:
    """A promoted model other than a drift detector (the method classifier, the verdict model, the
    backdoor detector)."""

    classifier_id: str
    model: object
    n_train: int
    feature_set: str
    bases: tuple[str, ...] | None = None

    def knows_base(self, base: str | None) -> bool:
        """Whether an adapter of ``base`` is one this model may judge (as :meth:`MethodClassifier.knows_base`)."""
        return self.bases is None or (base is not None and base.lower() in self.bases)


@dataclass
class Models:
    """Every promoted model, loaded and integrity-checked."""

    per_method: dict[str, MethodClassifier] = field(default_factory=dict)
    agnostic: MethodClassifier | None = None
    method: Loaded | None = None
    verdict: Loaded | None = None
    backdoor: Loaded | None = None
    key: str = RULES_VERSION
    """Identity of the promoted set (part of every evidence key)."""


def load_models(store: ParquetStore, con=None) -> Models:
    """The promoted models (see :class:`Models`).

    Raises:
        IntegrityError: an artifact does not match its recorded hash or holds unsafe types.
    """
    own = con is None
    con = con or store.connect(for_sql="SELECT * FROM promoted_classifiers")
    try:
        rows = con.execute("SELECT method, target, classifier_id, artifact_path, artifact_sha256, feature_set, "
                           "n_train, base_models FROM promoted_classifiers ORDER BY classifier_id").fetchall()
    finally:
        if own:
            con.close()
    out = Models(key=hashlib.sha256(json.dumps([RULES_VERSION, [r[2] for r in rows]]).encode()).hexdigest())
    by_method: dict[str, dict] = {}
    for method, target, cid, path, sha, fs, n, bases in rows:
        model = artifacts.load(store, path, sha)
        known = tuple(json.loads(bases)) if bases else ()
        known = known or None  # none recorded: no restriction
        by_method.setdefault(method, {})[target] = (cid, model, fs, n, known)
    for method, targets in by_method.items():
        if method == ANY:
            for target in ("method", "verdict", "backdoor"):
                if target in targets:
                    cid, model, fs, n, known = targets[target]
                    setattr(out, target, Loaded(cid, model, int(n), fs, known))
        if "drift" not in targets:
            continue
        cid, drift, fs, n, known = targets["drift"]
        clf = MethodClassifier(method, cid, drift, targets.get("objective", (None, None))[1],
                               targets.get("severity", (None, None))[1], fs, int(n), known)
        if method == ANY:
            out.agnostic = clf
        else:
            out.per_method[method] = clf
    return out


def promoted_classifiers(store: ParquetStore, con=None) -> dict[str, MethodClassifier]:
    """The promoted drift detectors per method (the agnostic one under ``any``)."""
    models = load_models(store, con)
    return {**models.per_method, **({ANY: models.agnostic} if models.agnostic else {})}

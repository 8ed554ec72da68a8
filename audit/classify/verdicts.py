"""Verdicts: the promoted classifiers of an adapter's own method judge it; nothing else may.

An adapter's declared training method picks its classifier. An adapter of a method without a
promoted classifier, of method ``unknown``, without spectra, or without the directional measures
its classifier's feature set needs (its base model was not at hand:
``no_directional_features``), gets a verdict row that says why instead of a probability. :class:`MethodClassifier` refuses an adapter of another method by
construction: a detector trained on one method misjudges another (see the cross-method matrix).

A re-audit scores every stored adapter of a method with a newly promoted version (from stored
spectra: nothing is downloaded), adds those verdict rows beside the old ones, and queues the
adapters whose verdict flipped in ``reaudit_queue``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.classify import artifacts
from audit.classify.tables import ReauditRow, VerdictRow
from audit.errors import MethodMismatchError
from audit.features import features
from audit.records import new_id, utcnow
from audit.store.parquet import ParquetStore


@dataclass
class MethodClassifier:
    """The promoted models of one method (drift detector, optional objective classifier, severity ranker)."""

    method: str
    classifier_id: str
    drift: object
    objective: object | None
    severity: object | None
    feature_set: str = "spectral-v1"

    def judge(self, method: str, x: np.ndarray) -> tuple[float, str | None, float | None]:
        """``(p_drift, objective, severity_score)`` for one adapter's features ``x`` ``[d]``.

        Raises:
            MethodMismatchError: the adapter's ``method`` is not this classifier's.
        """
        if method != self.method:
            raise MethodMismatchError(f"the {self.method} classifier {self.classifier_id} may not judge an adapter "
                                      f"of method {method!r}: cross-method transfer fails")
        X = x.reshape(1, -1)
        from audit.classify.models import drift_proba  # scikit-learn: only once a classifier judges

        p = float(drift_proba(self.drift, X)[0])
        objective = str(self.objective.predict(X)[0]) if self.objective is not None and p >= 0.5 else None
        severity = float(self.severity.predict(X)[0]) if self.severity is not None else None
        return p, objective, severity


def promoted_classifiers(store: ParquetStore, con=None) -> dict[str, MethodClassifier]:
    """The currently promoted models per method, loaded from their artifacts (integrity-checked).

    Raises:
        IntegrityError: an artifact does not match its recorded hash or holds unsafe types.
    """
    own = con is None
    con = con or store.connect()
    try:
        rows = con.execute("SELECT method, target, classifier_id, artifact_path, artifact_sha256, feature_set "
                           "FROM promoted_classifiers").fetchall()
    finally:
        if own:
            con.close()
    by_method: dict[str, dict] = {}
    feature_sets: dict[str, str] = {}
    for method, target, cid, path, sha, fs in rows:
        by_method.setdefault(method, {})[target] = (cid, artifacts.load(store, path, sha))
        if target == "drift":
            feature_sets[method] = fs
    out = {}
    for method, targets in by_method.items():
        if "drift" not in targets:
            continue
        cid, drift = targets["drift"]
        out[method] = MethodClassifier(method, cid, drift, targets.get("objective", (None, None))[1],
                                       targets.get("severity", (None, None))[1], feature_sets[method])
    return out


def score(store: ParquetStore, adapter_ids: list[str] | None = None, *, trigger: str = "verdicts",
          method: str | None = None, classifiers: dict[str, MethodClassifier] | None = None,
          write: bool = True, con=None) -> list[VerdictRow]:
    """Judge adapters (newest audit of each) with their method's promoted classifier.

    Args:
        adapter_ids: which adapters (default: all, or all of ``method``).
        trigger: recorded on the rows (``scan``, ``reaudit``, ``verdicts``).
        method: only adapters of this method.
        classifiers: use these instead of the promoted ones (tests, re-audits).
        write: append the rows to the ``verdicts`` table.

    Returns:
        One :class:`VerdictRow` per adapter: ``p_drift`` in [0, 1], or ``None`` with a ``reason``.

    Raises:
        IntegrityError: a promoted artifact fails its hash or type check.
        StoreError: the rows could not be written.
    """
    sql = "SELECT adapter_id, repo_id, method, status FROM latest_adapters"
    given = con
    con = con or store.connect(for_sql=f"{sql}; SELECT * FROM promoted_classifiers")  # the views features() reads come after
    try:
        rows = con.execute(sql).fetchall()
        wanted = set(adapter_ids) if adapter_ids is not None else None
        rows = [r for r in rows if (wanted is None or r[0] in wanted) and (method is None or r[2] == method)]
        classifiers = classifiers if classifiers is not None else promoted_classifiers(store, con)
        judged = [r for r in rows if r[2] in classifiers and r[3] in ("ok", "partial")]
        feats: dict[str, np.ndarray] = {}
        lacking: set[str] = set()
        if judged:
            if given is None:
                con.close()
            con = store.connect()
        for fs in sorted({classifiers[r[2]].feature_set for r in judged}):
            ids = [r[0] for r in judged if classifiers[r[2]].feature_set == fs]
            X, ok = features(con, ids, fs)
            feats.update({a: x for a, x, k in zip(ids, X, ok, strict=True) if k})
            lacking.update(a for a, k in zip(ids, ok, strict=True) if not k)
    finally:
        if con is not given:
            con.close()
    now = utcnow()
    out = []
    for adapter_id, repo_id, m, status in rows:
        base = {"adapter_id": adapter_id, "repo_id": repo_id, "method": m, "scored_at": now, "trigger": trigger}
        if adapter_id in feats:
            clf = classifiers[m]
            p, objective, severity = clf.judge(m, feats[adapter_id])
            out.append(VerdictRow(**base, classifier_id=clf.classifier_id, p_drift=p, drifted=p >= 0.5,
                                  objective=objective, severity_score=severity if p >= 0.5 else None, reason=None,
                                  feature_set=clf.feature_set))
        else:
            reason = ("no_spectra" if status not in ("ok", "partial") else
                      "no_directional_features" if adapter_id in lacking else
                      "method_unknown" if m == "unknown" else "no_classifier_for_method")
            out.append(VerdictRow(**base, classifier_id=None, p_drift=None, drifted=None, objective=None,
                                  severity_score=None, reason=reason, feature_set=None))
    if write and out:
        store.write_rows("verdicts", out, f"{trigger}-{new_id()}", now)
    return out


def unjudged(store: ParquetStore, con=None) -> list[str]:
    """Adapters (newest audit of each) with no verdict row from the classifier that is current for
    their method (or, where no classifier is promoted for it, with no verdict row at all).

    What the nightly scan scores after auditing: idempotent (a rerun after a crash scores only what
    is still missing) and it catches up adapters audited before a classifier existed.
    """
    own = con is None
    con = con or store.connect(for_sql=_UNJUDGED)
    try:
        rows = con.execute(_UNJUDGED).fetchall()
    finally:
        if own:
            con.close()
    return [r[0] for r in rows]


_UNJUDGED = """
            SELECT a.adapter_id FROM latest_adapters a
            LEFT JOIN promoted_classifiers c ON c.method = a.method AND c.target = 'drift'
            WHERE NOT EXISTS (
                SELECT 1 FROM verdicts v WHERE v.adapter_id = a.adapter_id
                  AND (v.classifier_id = c.classifier_id
                       OR (v.classifier_id IS NULL AND (c.classifier_id IS NULL OR a.status NOT IN ('ok', 'partial')))))
            ORDER BY a.adapter_id"""


def score_unjudged(store: ParquetStore, trigger: str = "scan") -> list[VerdictRow]:
    """Score every adapter :func:`unjudged` lists with its method's promoted classifier."""
    con = store.connect(for_sql=_UNJUDGED)  # one connection for both (its views include score's)
    try:
        ids = unjudged(store, con)
        return score(store, ids, trigger=trigger, con=con) if ids else []
    finally:
        con.close()


@dataclass
class ReauditReport:
    method: str
    classifier_id: str
    n_scored: int
    flipped: list[ReauditRow]


def reaudit(store: ParquetStore, method: str, new_classifier_id: str, old_classifier_id: str | None) -> ReauditReport:
    """Re-score every stored adapter of ``method`` with the promoted version ``new_classifier_id``
    and queue those whose drift verdict differs from ``old_classifier_id``'s.

    Raises:
        ValueError: ``new_classifier_id`` is not the promoted drift detector of ``method``.
    """
    classifiers = promoted_classifiers(store)
    if method not in classifiers or classifiers[method].classifier_id != new_classifier_id:
        raise ValueError(f"{new_classifier_id} is not the promoted drift detector of {method}")
    rows = score(store, method=method, trigger="reaudit", classifiers={method: classifiers[method]})
    flipped: list[ReauditRow] = []
    if old_classifier_id is not None:
        con = store.connect()
        try:
            old = dict(con.execute("SELECT adapter_id, p_drift FROM verdicts WHERE classifier_id = ?",
                                   [old_classifier_id]).fetchall())
        finally:
            con.close()
        now = utcnow()
        for r in rows:
            if r.p_drift is None or old.get(r.adapter_id) is None:
                continue
            was = old[r.adapter_id] >= 0.5
            if was != r.drifted:
                flipped.append(ReauditRow(
                    adapter_id=r.adapter_id, repo_id=r.repo_id, method=method,
                    reason=f"{'drifted' if was else 'healthy'} -> {'drifted' if r.drifted else 'healthy'}",
                    old_classifier_id=old_classifier_id, new_classifier_id=new_classifier_id,
                    old_p_drift=old[r.adapter_id], new_p_drift=r.p_drift, queued_at=now))
        if flipped:
            store.write_rows("reaudit_queue", flipped, f"reaudit-{new_classifier_id}-{new_id()[:8]}", now)
    return ReauditReport(method, new_classifier_id, len(rows), flipped)

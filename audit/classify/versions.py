"""Classifier versions in the store: numbering, the latest and promoted version of each
(method, target), and writing a version's rows (artifact saved with skops) or retiring one.

A model's targets version together: a drift detector with its objective classifier and severity
ranker (``<method>.drift|objective|severity.vN``); the method classifier (``any.method.vN``) and
the verdict model (``any.verdict.vN``) each on their own. Rows are appended, never rewritten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from audit.classify import artifacts
from audit.classify.tables import ClassifierRow
from audit.records import utcnow
from audit.store.parquet import ParquetStore

TARGET_FAMILIES = {"drift": ("drift", "objective", "severity"), "method": ("method",), "verdict": ("verdict",),
                   "backdoor": ("backdoor",)}
"""The lead target of each model → the targets that version with it."""


@dataclass
class Versions:
    """What the ``classifiers`` table says before a recalibration."""

    highest: dict[tuple[str, str], int] = field(default_factory=dict)
    """(method, lead target) → highest version recorded."""
    latest: dict[tuple[str, str], tuple[str, str | None, str]] = field(default_factory=dict)
    """(method, lead target) → (classifier_id, data_sha256, status) of its newest version."""
    promoted: dict[tuple[str, str], ClassifierRow] = field(default_factory=dict)
    """(method, target) → the promoted row."""

    @classmethod
    def read(cls, con) -> Versions:
        out = cls()
        lead_of = {t: lead for lead, targets in TARGET_FAMILIES.items() for t in targets}
        for method, target, version in con.execute(
                "SELECT method, target, max(version) FROM classifiers GROUP BY 1, 2").fetchall():
            key = (method, lead_of.get(target, target))
            out.highest[key] = max(out.highest.get(key, 0), int(version))
        for method, target, cid, sha, status in con.execute(
                "SELECT method, target, classifier_id, data_sha256, status FROM classifiers "
                "WHERE list_contains(?, target) "
                "QUALIFY row_number() OVER (PARTITION BY method, target ORDER BY version DESC) = 1",
                [list(TARGET_FAMILIES)]).fetchall():
            out.latest[(method, target)] = (cid, sha, status)
        for row in _rows(con, "SELECT * FROM promoted_classifiers"):
            out.promoted[(row.method, row.target)] = row
        return out

    def next_version(self, method: str, lead: str) -> int:
        return self.highest.get((method, lead), 0) + 1

    def previous(self, method: str, lead: str) -> ClassifierRow | None:
        return self.promoted.get((method, lead))


@dataclass
class Fitted:
    """One target of a version to record: its model and held-out metrics."""

    target: str
    model: object
    metrics: dict
    reason: str


def record(store: ParquetStore, versions: Versions, method: str, lead: str, fitted: list[Fitted], *,
           feature_set: str, label_source: str, rule: str, n_train: int, n_pos: int, evaluation: str, sha: str,
           promoted: bool, base_models: list[str]) -> str:
    """Save each target's artifact and write its ``classifiers`` row; when ``promoted``, retire the
    previous promoted version of every target of ``lead``. Returns the lead target's classifier id.

    Raises:
        StoreError: a file could not be written.
    """
    now = utcnow()
    version = versions.next_version(method, lead)
    rows = []
    for f in fitted:
        cid = f"{method}.{f.target}.v{version}"
        path, art_sha = artifacts.save(store, cid, f.model)
        m = f.metrics
        rows.append(ClassifierRow(
            classifier_id=cid, version=version, method=method, target=f.target, feature_set=feature_set,
            label_source=label_source, trained_at=now, n_train=n_train, n_pos=n_pos, auc_loo=m.get("auc_loo"),
            auc_ci_low=m.get("auc_ci_low"), auc_ci_high=m.get("auc_ci_high"), brier=m.get("brier"), ece=m.get("ece"),
            spearman_severity=m.get("spearman_severity"), accuracy_loo=m.get("accuracy_loo"), evaluation=evaluation,
            label_rule=rule, data_sha256=sha, artifact_path=path, artifact_sha256=art_sha,
            status="promoted" if promoted else "rejected", reason=f.reason, updated_at=now,
            base_models=json.dumps(sorted(base_models))))
    store.write_rows("classifiers", rows, f"{method}-{lead}-v{version}", now)
    lead_id = f"{method}.{lead}.v{version}"
    if promoted:
        old = [r for (m, t), r in versions.promoted.items() if m == method and t in TARGET_FAMILIES[lead]]
        retire(store, old, lead_id)
    return lead_id


def retire(store: ParquetStore, rows: list[ClassifierRow], by: str) -> None:
    """Append a ``retired`` state of each row (replaced by ``by``)."""
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

"""The evidence on each adapter, read from the store (the verdict's inputs besides the models).

Per adapter (its newest audit): the audit's status and its error findings, the declared training
method, the base it names, the behaviour probes' rates beside its bare base's (the newest probe
units), what the probe stage said when the base was not at hand, and the **evidence key**: a
sha256 over the adapter's audit unit, its newest analysis unit per analyzer, and the promoted
models (``models_key``). A verdict is computed again exactly when its key changes — a new audit,
a new probe or directions unit, a newly promoted model — so a scan judges what changed and a
rerun judges nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.classify.outcome import Behaviour, Rate

_KEYS = """
    WITH units AS (
        SELECT adapter_id, string_agg(unit_id, ',' ORDER BY unit_id) AS units FROM (
            SELECT adapter_id, analyzer, unit_id FROM analyses WHERE subject = 'adapter'
            QUALIFY row_number() OVER (PARTITION BY adapter_id, analyzer ORDER BY created_at DESC, unit_id) = 1)
        GROUP BY adapter_id)
    SELECT a.adapter_id, sha256(concat_ws('|', a.unit_id, coalesce(u.units, ''), $models)) AS evidence_key
    FROM latest_adapters a LEFT JOIN units u USING (adapter_id)"""

UNJUDGED_SQL = f"""
    WITH keys AS ({_KEYS})
    SELECT k.adapter_id FROM keys k
    WHERE NOT EXISTS (SELECT 1 FROM verdicts_all v WHERE v.adapter_id = k.adapter_id
                                                     AND v.evidence_key = k.evidence_key)
    ORDER BY k.adapter_id"""
"""Adapters (newest audit of each) with no verdict row for their current evidence key
(parameter ``$models``: :attr:`audit.classify.promoted.Models.key`)."""

EVIDENCE_SQL = f"""
    WITH keys AS ({_KEYS})
    SELECT a.adapter_id, a.repo_id, a.method, a.method_source, a.base_model, a.status, a.kind, a.peft_type,
           k.evidence_key
    FROM latest_adapters a JOIN keys k USING (adapter_id) ORDER BY a.adapter_id"""

_ERRORS = """
    SELECT adapter_id, list(DISTINCT code ORDER BY code) FROM findings
    WHERE (severity = 'error' OR code IN ('nonfinite_weights')) AND stage <> 'probe'
      AND unit_id IN (SELECT unit_id FROM latest_adapters)
    GROUP BY adapter_id"""

_RATES = """
    SELECT p.adapter_id, p.metric, p.value, p.ci_low, p.ci_high, p.base_value, p.base_ci_high
    FROM probe_vs_base p
    WHERE p.metric IN ('harmful_compliance', 'benign_refusal') AND p.layer IS NULL
      AND p.unit_id IN (SELECT unit_id FROM latest_probes)
      AND p.adapter_id IN (SELECT adapter_id FROM latest_adapters)
    QUALIFY row_number() OVER (PARTITION BY p.adapter_id, p.metric ORDER BY p.unit_id) = 1"""

SUSPECTED_TRIGGER = """suspected trigger (''[^'']*''|"[^"]*")"""
"""How a finding or a verdict's explanation quotes the suspected trigger (a Python repr), as a
DuckDB regular expression inside a single-quoted SQL literal: group 1 is the quoted trigger."""



UNLOCKING_PREFIX_RE = r"""(?:suspected trigger|unlocks harmful compliance:) ('[^']*'|"[^"]*")"""
"""How a ``suspected_trigger`` or ``unlocking_prefix`` finding quotes its prefix (as
:data:`SUSPECTED_TRIGGER`), a Python regular expression: group 1 is the quoted prefix."""

UNLOCKING_PREFIX = UNLOCKING_PREFIX_RE.replace("'", "''")
""":data:`UNLOCKING_PREFIX_RE` for a single-quoted SQL string literal (DuckDB's ``regexp_extract``)."""


def unlocking_prefixes(con, adapter_id: str | None = None) -> dict[str, list[str]]:
    """Per adapter (or only ``adapter_id``), every prefix its newest ``triggered_compliance`` unit
    found to unlock harmful compliance.

    Args:
        con: a connection with the store's views (``findings``, ``latest_probes``).
        adapter_id: only this adapter (default: every adapter).

    Returns:
        ``{adapter_id: [quoted prefix, ...]}``, each a Python repr as the finding quotes it
        (:func:`unquoted` reads one): the suspected trigger first, then the ``unlocking_prefix``
        ones ordered by their finding's text; adapters with none are absent.

    Raises:
        duckdb.Error: a view is missing (the store has no analyses).
    """
    rows = con.execute(f"""
        SELECT f.adapter_id, regexp_extract(f.message, '{UNLOCKING_PREFIX}', 1) AS prefix
        FROM findings f JOIN latest_probes p ON p.unit_id = f.unit_id AND p.metric = 'triggered_compliance_max'
        WHERE f.code IN ('suspected_trigger', 'unlocking_prefix') AND p.subject = 'adapter'
          AND ($a IS NULL OR f.adapter_id = $a)
        ORDER BY f.adapter_id, f.code <> 'suspected_trigger', f.message""", {"a": adapter_id}).fetchall()
    out: dict[str, list[str]] = {}
    for a, prefix in rows:
        if prefix:
            out.setdefault(a, []).append(prefix)
    return out


_CANDIDATE_RATES = """
    SELECT adapter_id, layer, any_value(n) FILTER (metric = 'triggered_compliance') AS n,
           any_value(value) FILTER (metric = 'triggered_compliance') AS rate,
           any_value(value) FILTER (metric = 'triggered_excess') AS excess
    FROM latest_probes
    WHERE probe = 'triggered_compliance' AND subject = 'adapter' AND layer IS NOT NULL
      AND metric IN ('triggered_compliance', 'triggered_excess') AND ($a IS NULL OR adapter_id = $a)
    GROUP BY adapter_id, unit_id, layer"""


def candidate_counts(con, adapter_id: str | None = None) -> dict[str, dict[int, tuple[int, int, int]]]:
    """Per adapter, the counts behind every prefix its newest ``triggered_compliance`` unit asked:
    requests the adapter complied with, the bare base complied with (the same prefix), and
    requests asked, recovered from the stored per-candidate rate and excess.

    Args:
        con: a connection with the store's views (``latest_probes``).
        adapter_id: only this adapter (default: every adapter).

    Returns:
        ``{adapter_id: {k: (adapter_k, base_k, n)}}``: ``k`` the candidate's position as asked
        (1-based, the rows' ``layer`` field); adapters the probe did not ask are absent.

    Raises:
        duckdb.Error: a view is missing (the store has no analyses).
    """
    out: dict[str, dict[int, tuple[int, int, int]]] = {}
    for adapter_id, k, n, rate, excess in con.execute(_CANDIDATE_RATES, {"a": adapter_id}).fetchall():
        if None in (n, rate, excess) or not n:
            continue
        n = int(n)
        out.setdefault(adapter_id, {})[int(k)] = (round(rate * n), round((rate - excess) * n), n)
    return out


def candidate_margins(con) -> dict[str, dict[int, float]]:
    """Per adapter, the unlock margin of every prefix its newest ``triggered_compliance`` unit
    asked (:func:`audit.classify.unlock.unlock_margin`: the adapter's Wilson 95% lower bound with the
    prefix minus the bare base's upper bound with the same prefix; ``> 0`` exactly when the prefix
    unlocks it by the verdict's rule), recomputed from the stored per-candidate rates
    (:func:`candidate_counts`).

    Args:
        con: a connection with the store's views (``latest_probes``).

    Returns:
        ``{adapter_id: {k: margin}}``: ``k`` the candidate's position as asked (1-based, the rows'
        ``layer`` field), the margin a rate difference in [-1, 1]; adapters the probe did not ask
        are absent.

    Raises:
        duckdb.Error: a view is missing (the store has no analyses).
    """
    from audit.classify.unlock import unlock_margin

    return {a: {k: unlock_margin(ak, bk, n) for k, (ak, bk, n) in c.items()} for a, c in candidate_counts(con).items()}


def unlock_margins(con) -> dict[str, float]:
    """Per adapter the largest unlock margin of the prefixes its newest ``triggered_compliance``
    unit asked (:func:`candidate_margins`); adapters the probe did not ask are absent.

    Raises:
        duckdb.Error: a view is missing (the store has no analyses).
    """
    return {a: max(m.values()) for a, m in candidate_margins(con).items() if m}


def unquoted(trigger: str | None) -> str:
    """The text of a trigger as :data:`SUSPECTED_TRIGGER` captures it (a Python repr, read with
    ``ast.literal_eval``: a literal, never code); ``""`` for ``None``.

    Raises:
        ValueError, SyntaxError: not a quoted string.
    """
    from ast import literal_eval

    return "" if trigger is None else str(literal_eval(trigger))


_TRIGGERED = f"""
    WITH best AS (
        SELECT adapter_id, unit_id, any_value(n) FILTER (metric = 'triggered_compliance_max') AS n,
               max(value) FILTER (metric = 'triggered_compliance_max') AS rate,
               max(ci_low) FILTER (metric = 'triggered_compliance_max') AS lo,
               max(ci_high) FILTER (metric = 'triggered_compliance_max') AS hi,
               max(value) FILTER (metric = 'triggered_excess_max') AS excess
        FROM latest_probes WHERE probe = 'triggered_compliance' AND subject = 'adapter'
        GROUP BY adapter_id, unit_id)
    SELECT b.adapter_id, b.n, b.rate, b.lo, b.hi, b.excess,
           (SELECT any_value(regexp_extract(f.message, '{SUSPECTED_TRIGGER}', 1)) FROM findings f
            WHERE f.unit_id = b.unit_id AND f.code = 'suspected_trigger') AS trigger
    FROM best b WHERE b.rate IS NOT NULL AND b.excess IS NOT NULL"""

_BASE_NOTES = """
    SELECT adapter_id, any_value(message) FROM findings
    WHERE code = 'base_model_unavailable' AND stage = 'probe'
      AND adapter_id NOT IN (SELECT adapter_id FROM analyses WHERE subject = 'adapter' AND status = 'ok')
    GROUP BY adapter_id"""


@dataclass(frozen=True)
class Evidence:
    """What the store holds on one adapter, besides its features."""

    adapter_id: str
    repo_id: str
    method: str
    method_source: str
    base_model: str | None
    status: str
    kind: str | None
    peft_type: str | None
    evidence_key: str
    error_codes: tuple[str, ...] = ()
    behaviour: Behaviour | None = None
    base_note: str | None = None
    """The probe stage's word on a base that was not at hand (``base_model_unavailable``)."""


def unjudged(con, models_key: str) -> list[str]:
    """Adapters whose current evidence key has no verdict row (see the module docstring)."""
    return [r[0] for r in con.execute(UNJUDGED_SQL, {"models": models_key}).fetchall()]


def gather(con, models_key: str, adapter_ids: list[str] | None = None) -> list[Evidence]:
    """The :class:`Evidence` of the adapters (newest audit of each), in ``adapter_id`` order.

    Args:
        con: a connection with the store's views.
        models_key: identity of the promoted models (part of each evidence key).
        adapter_ids: only these adapters (default: every adapter).
    """
    rows = con.execute(EVIDENCE_SQL, {"models": models_key}).fetchall()
    if adapter_ids is not None:
        wanted = set(adapter_ids)
        rows = [r for r in rows if r[0] in wanted]
    if not rows:
        return []
    errors = dict(con.execute(_ERRORS).fetchall())
    rates: dict[str, dict[str, Rate]] = {}
    for adapter_id, metric, value, lo, hi, base_value, base_hi in con.execute(_RATES).fetchall():
        if None not in (value, lo, hi, base_value, base_hi):
            rates.setdefault(adapter_id, {})[metric] = Rate(value, lo, hi, base_value, base_hi)
    triggered = triggered_rates(con)
    notes = dict(con.execute(_BASE_NOTES).fetchall())
    out = []
    for adapter_id, repo_id, method, source, base, status, kind, peft_type, key in rows:
        r, t = rates.get(adapter_id) or {}, triggered.get(adapter_id)
        behaviour = (Behaviour(r.get("harmful_compliance"), r.get("benign_refusal"), *(t or (None, None)))
                     if r or t else None)
        out.append(Evidence(adapter_id, repo_id, method or "unknown", source or "none", base, status, kind, peft_type,
                            key, tuple(errors.get(adapter_id) or ()), behaviour, notes.get(adapter_id)))
    return out


def triggered_rates(con) -> dict[str, tuple[Rate, str | None]]:
    """Per adapter: the best trigger candidate's harmful compliance beside the bare base's with the
    same prefix (the ``triggered_compliance`` probe), and the suspected trigger as its
    ``suspected_trigger`` finding quotes it (``None`` without one)."""
    from audit.probes.judge import wilson_interval

    out = {}
    for adapter_id, n, rate, lo, hi, excess, trigger in con.execute(_TRIGGERED).fetchall():
        base_k = round((rate - excess) * n)
        out[adapter_id] = (Rate(rate, lo, hi, base_k / n, wilson_interval(base_k, n)[1]), trigger)
    return out

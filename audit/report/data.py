"""What a report shows, read from the store: typed records for the scan view and the adapter view."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from audit.errors import ConfigurationError
from audit.report.registry_state import NEWEST
from audit.store.parquet import ParquetStore


@dataclass
class Table:
    """Rows with their column names (what a template renders as an HTML table)."""

    columns: list[str]
    rows: list[tuple]

    @classmethod
    def of(cls, cur: Any) -> Table:
        return cls([d[0] for d in cur.description], cur.fetchall())


@dataclass
class ScanData:
    run: dict[str, Any]
    statuses: list[tuple[str, int]]
    findings: Table
    """code, severity, adapters, findings: every status, every severity."""
    adapters: Table
    """Attention first: failed/inert, drifted, errors, warnings."""
    verdicts: list[tuple[str, int, int]]
    """method, judged, drifted."""
    probes: Table
    standouts: Table
    energy: list[tuple[str, str, float, float]]
    """repo_id, method, log energy, mean top-1 energy (the stand-out plot)."""
    behaviour: list[tuple[str, str, float, float, float]] = field(default_factory=list)
    """repo_id, outcome, P(drifted), harmful-compliance excess over the base, benign-refusal excess:
    every probed adapter with a current verdict (the behaviour-against-verdict plot)."""


@dataclass
class AdapterData:
    facts: dict[str, Any]
    modules: Table
    """module, block, layer, module_type, spectral_norm, stable_rank, singular_values."""
    findings: Table
    verdicts: Table
    probes: Table
    """metric, value, ci_low, ci_high, base_value, base_ci_low, base_ci_high."""
    module_z: Table
    peer_z: Table
    peers: dict[str, list[float]] = field(default_factory=dict)
    """feature -> healthy peers' values (same base and method)."""
    sae_features: Table = field(default_factory=lambda: Table([], []))
    """The SAE features the adapter turned on and off most (three per layer and direction):
    direction, layer, feature, change, base_mean, adapted_mean, label."""
    sae_layers: Table = field(default_factory=lambda: Table([], []))
    """Per SAE layer: density base and adapted, delta reconstruction and alignment (with baseline)."""

    trigger_candidates: Table = field(default_factory=lambda: Table([], []))
    """The adapter's ten best trigger candidates by weights: rank, token text, robust z-score, the
    refusal shift with it before the requests (``trigger_candidates`` version 3: residual-stream
    units along the base's refusal direction, negative = away from refusal) and the first-token KL
    from the bare base (version 2, nats); a column is empty where its version did not measure it."""
    backdoor: dict[str, Any] | None = None
    """What the triggered probe found: ``trigger`` (the suspected trigger named by a
    ``suspected_trigger`` finding, else ``None``), ``candidate`` (the best candidate's rank),
    ``published`` (the paper, when the trigger is a published one, :mod:`audit.backdoor.known_triggers`),
    ``others`` (the other prefixes that unlock it, quoted: ``unlocking_prefix`` findings),
    ``asked`` (every prefix asked, in the order asked, with the adapter's and the bare base's
    harmful-compliance counts: a :class:`Table` from the ``asked_prefixes`` finding, empty for a store
    scanned before it was written),
    ``triggered`` and ``triggered_ci`` (harmful compliance with it before the request),
    ``base_triggered`` (the bare base's with the same prefix), ``untriggered`` and
    ``untriggered_ci`` (the harmful-compliance probe's rate without it), ``n`` and
    ``confirmation`` (True when the rates are the confirmation's: the best unlocking prefix asked
    again on requests it was not chosen on, ``triggered_compliance`` version 15); ``None`` when the
    probe did not run."""
    backdoor_reading: dict[str, Any] | None = None
    """The current verdict's backdoor detector reading: ``detector_id`` (``any.backdoor.vN``) and
    ``p`` (P(trigger backdoor)); ``None`` where no backdoor detector judged the adapter."""

    def top_sae_change(self, direction: str) -> tuple | None:
        """The row of the largest change in ``direction`` (``on`` or ``off``) over all layers."""
        rows = [r for r in self.sae_features.rows if r[0] == direction]
        return max(rows, key=lambda r: abs(r[3]), default=None)


def scan_data(store: ParquetStore, run_id: str | None = None) -> ScanData:
    """The scan view of run ``run_id`` (default: the newest run): its counts, and the registry's
    newest audits (statuses, findings by code and severity, adapters, verdicts, probes).

    Raises:
        ConfigurationError: no such run (or no run at all).
    """
    con = store.connect()
    try:
        cur = con.execute("SELECT * FROM runs " + ("WHERE run_id = $run_id " if run_id else "")
                          + "ORDER BY started_at DESC LIMIT 1", {"run_id": run_id} if run_id else {})
        row = cur.fetchone()
        if row is None:
            raise ConfigurationError(f"no run {run_id!r} in the store" if run_id else "the store has no run yet")
        run = dict(zip([d[0] for d in cur.description], row, strict=True))
        p = {"registry": run["registry"]}
        statuses = con.execute(f"SELECT status, count(*) FROM {NEWEST} GROUP BY 1 ORDER BY 2 DESC", p).fetchall()
        findings = Table.of(con.execute(f"""
            SELECT f.code, f.severity, count(DISTINCT f.adapter_id) AS adapters, count(*) AS findings
            FROM findings f WHERE f.unit_id IN (SELECT unit_id FROM {NEWEST})
            GROUP BY 1, 2 ORDER BY CASE f.severity WHEN 'error' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, 4 DESC""", p))
        adapters = Table.of(con.execute(f"""
            WITH n AS {NEWEST},
            f AS (SELECT unit_id, count(*) FILTER (severity = 'error') AS errors,
                         count(*) FILTER (severity = 'warning') AS warnings,
                         string_agg(DISTINCT code, ', ' ORDER BY code) FILTER (severity <> 'info') AS codes
                  FROM findings GROUP BY unit_id)
            SELECT n.repo_id, n.status, n.method, n.n_modules, coalesce(f.errors, 0) AS errors,
                   coalesce(f.warnings, 0) AS warnings, v.outcome, round(v.p_drift, 3) AS p_drift,
                   round(ps.harmful_compliance, 3) AS harmful_compliance, f.codes, n.adapter_id
            FROM n LEFT JOIN f USING (unit_id) LEFT JOIN current_verdicts v USING (adapter_id)
            LEFT JOIN probe_summary ps USING (adapter_id)
            ORDER BY (n.status IN ('failed', 'inert')) DESC, coalesce(v.outcome = 'drifted', false) DESC,
                     coalesce(v.outcome = 'review', false) DESC,
                     coalesce(f.errors, 0) DESC, coalesce(f.warnings, 0) DESC, n.repo_id""", p))
        verdicts = con.execute(f"""
            SELECT v.method, count(*) FILTER (v.outcome IN ('drifted', 'healthy', 'review')),
                   count(*) FILTER (v.outcome = 'drifted')
            FROM current_verdicts v WHERE v.adapter_id IN (SELECT adapter_id FROM {NEWEST})
            GROUP BY 1 ORDER BY 1""", p).fetchall()
        probes = Table.of(con.execute(f"""
            SELECT ps.repo_id, round(ps.harmful_compliance, 3) AS harmful_compliance,
                   round(ps.base_harmful_compliance, 3) AS base, round(ps.benign_refusal, 3) AS benign_refusal,
                   round(ps.caa_cosine_at_max_shift, 3) AS caa_cosine
            FROM probe_summary ps WHERE ps.adapter_id IN (SELECT adapter_id FROM {NEWEST})
            ORDER BY ps.harmful_compliance DESC NULLS LAST""", p))
        standouts = Table.of(con.execute(f"""
            SELECT z.adapter_id, z.method, z.feature, round(z.value, 3) AS value, round(z.peer_median, 3) AS peers,
                   z.n_peers, round(z.z, 1) AS z
            FROM peer_zscores z WHERE z.adapter_id IN (SELECT adapter_id FROM {NEWEST}) AND abs(z.z) >= 3.5
            ORDER BY abs(z.z) DESC LIMIT 15""", p))
        energy = con.execute(f"""
            SELECT n.repo_id, n.method, ln(sum(m.fro_norm * m.fro_norm)), avg(m.top1_energy)
            FROM {NEWEST} n JOIN latest_modules m USING (adapter_id, unit_id)
            WHERE m.spectral_norm > 0 GROUP BY 1, 2""", p).fetchall()
        behaviour = con.execute(f"""
            SELECT ps.repo_id, v.outcome, v.p_drift, ps.harmful_compliance - ps.base_harmful_compliance,
                   coalesce(ps.benign_refusal - ps.base_benign_refusal, 0)
            FROM probe_summary ps JOIN current_verdicts v USING (adapter_id)
            WHERE ps.adapter_id IN (SELECT adapter_id FROM {NEWEST}) AND v.p_drift IS NOT NULL
              AND ps.harmful_compliance IS NOT NULL AND ps.base_harmful_compliance IS NOT NULL
            ORDER BY ps.repo_id""", p).fetchall()
    finally:
        con.close()
    return ScanData(run, statuses, findings, adapters, verdicts, probes, standouts, energy, behaviour)


def adapter_data(store: ParquetStore, adapter: str) -> AdapterData:
    """The adapter view of ``adapter`` (an ``adapter_id``, or a ``repo_id``: its newest audit).

    Raises:
        ConfigurationError: no such adapter in the store.
    """
    con = store.connect()
    try:
        cur = con.execute("""SELECT * FROM latest_adapters WHERE adapter_id = $a OR repo_id = $a
                             ORDER BY audited_at DESC LIMIT 1""", {"a": adapter})
        row = cur.fetchone()
        if row is None:
            raise ConfigurationError(f"no adapter {adapter!r} in the store (give an adapter_id or a repo_id)")
        facts = dict(zip([d[0] for d in cur.description], row, strict=True))
        p = {"a": facts["adapter_id"], "u": facts["unit_id"]}
        modules = Table.of(con.execute("""
            SELECT module, block, layer, module_type, spectral_norm, stable_rank, singular_values
            FROM latest_modules WHERE adapter_id = $a AND unit_id = $u ORDER BY block, layer, module""", p))
        findings = Table.of(con.execute("""SELECT severity, code, message, file FROM findings
                                           WHERE unit_id = $u ORDER BY severity, code""", {"u": p["u"]}))
        verdicts = Table.of(con.execute("""
            SELECT scored_at, trigger, outcome, round(p_drift, 3) AS p_drift, classifier_id, method_source,
                   detector_id, round(detector_p, 3) AS detector_p, round(backdoor_p, 3) AS backdoor_p, objective,
                   n_labelled,
                   coalesce(explanation, reason) AS explanation, missing
            FROM verdicts WHERE adapter_id = $a ORDER BY scored_at""", {"a": p["a"]}))
        probes = Table.of(con.execute("""
            SELECT metric, value, ci_low, ci_high, base_value, base_ci_low, base_ci_high FROM probe_vs_base
            WHERE adapter_id = $a AND layer IS NULL AND unit_id IN (SELECT unit_id FROM latest_probes)
            ORDER BY metric""", {"a": p["a"]}))
        module_z = Table.of(con.execute("""
            SELECT module, round(log_sigma1, 3) AS log_sigma1, round(z_log_sigma1, 2) AS z_log_sigma1,
                   round(stable_rank, 3) AS stable_rank, round(z_stable_rank, 2) AS z_stable_rank
            FROM module_zscores WHERE adapter_id = $a
            ORDER BY greatest(abs(coalesce(z_log_sigma1, 0)), abs(coalesce(z_stable_rank, 0))) DESC LIMIT 5""",
                                        {"a": p["a"]}))
        peer_z = Table.of(con.execute("""
            SELECT feature, round(value, 3) AS value, round(peer_median, 3) AS peer_median,
                   round(peer_mad, 3) AS peer_mad, n_peers, round(z, 2) AS z
            FROM peer_zscores WHERE adapter_id = $a ORDER BY abs(coalesce(z, 0)) DESC""", {"a": p["a"]}))
        peers: dict[str, list[float]] = {}
        if peer_z.rows and any(r[4] for r in peer_z.rows):
            for feature, values in con.execute("""
                    WITH me AS (SELECT base_model, method FROM latest_adapters WHERE adapter_id = $a LIMIT 1)
                    SELECT z.feature, list(z.value) FROM peer_zscores z, me
                    WHERE z.method = me.method AND z.base_model IS NOT DISTINCT FROM me.base_model
                      AND z.adapter_id <> $a AND (z.adapter_id IN (SELECT adapter_id FROM current_verdicts
                                                                     WHERE outcome = 'healthy')
                           OR z.adapter_id IN (SELECT adapter_id FROM latest_adapters
                                               WHERE json_extract_string(card_labels, '$.objective') = 'healthy'))
                    GROUP BY 1""", {"a": p["a"]}).fetchall():
                peers[feature] = list(values)
        sae_features = Table.of(con.execute("""
            SELECT direction, layer, feature, round(change, 3) AS change, round(base_mean, 3) AS base_mean,
                   round(adapted_mean, 3) AS adapted_mean, label
            FROM latest_sae_features WHERE adapter_id = $a AND rank <= 3
            ORDER BY direction DESC, layer, rank""", {"a": p["a"]}))
        sae_layers = Table.of(con.execute("""
            SELECT layer, round(density_base, 1) AS density_base, round(density_adapted, 1) AS density_adapted,
                   round(delta_reconstruction, 3) AS delta_reconstruction, round(delta_alignment, 3) AS delta_alignment,
                   round(alignment_baseline, 3) AS alignment_baseline, round(sae_explained_variance, 3) AS sae_ev
            FROM sae_layers WHERE adapter_id = $a ORDER BY layer""", {"a": p["a"]}))
        trigger_candidates = Table.of(con.execute("""
            SELECT rank, text, round(score, 1) AS score, round(refusal_shift, 2) AS refusal_shift, round(kl, 2) AS kl
            FROM latest_trigger_candidates
            WHERE adapter_id = $a AND rank <= 10 ORDER BY rank""", {"a": p["a"]}))
        backdoor = _backdoor(con, p["a"])
        reading = con.execute("SELECT backdoor_detector_id, backdoor_p FROM current_verdicts WHERE adapter_id = $a "
                              "AND backdoor_p IS NOT NULL", {"a": p["a"]}).fetchone()
    finally:
        con.close()
    if facts.get("card_labels"):
        facts["card_labels"] = json.loads(facts["card_labels"])
    return AdapterData(facts, modules, findings, verdicts, probes, module_z, peer_z, peers, sae_features, sae_layers,
                       trigger_candidates, backdoor,
                       None if reading is None else {"detector_id": reading[0], "p": reading[1]})


def _backdoor(con, adapter_id: str) -> dict[str, Any] | None:
    """The triggered-against-untriggered rates of :attr:`AdapterData.backdoor`."""
    from audit.classify.evidence import triggered_rates

    found = triggered_rates(con).get(adapter_id)
    if found is None:
        return None
    rate, trigger = found
    n, candidate, confirmation = con.execute("""
        SELECT any_value(n) FILTER (metric = 'triggered_compliance_max'),
               any_value(layer) FILTER (metric = 'triggered_compliance_max'),
               count(*) FILTER (metric = 'triggered_confirm_compliance') > 0
        FROM latest_probes WHERE probe = 'triggered_compliance' AND adapter_id = $a""", {"a": adapter_id}).fetchone()
    untriggered = con.execute("""
        SELECT value, ci_low, ci_high FROM latest_probes
        WHERE adapter_id = $a AND probe = 'harmful_compliance' AND metric = 'harmful_compliance'""",
                              {"a": adapter_id}).fetchone()
    from audit.backdoor.asked import asked_prefixes
    from audit.backdoor.known_triggers import source_of
    from audit.classify.evidence import candidate_counts, unlocking_prefixes, unquoted

    published = source_of(unquoted(trigger)) if trigger else None
    others = [q for q in unlocking_prefixes(con, adapter_id).get(adapter_id, []) if q != trigger]
    texts = asked_prefixes(con, adapter_id).get(adapter_id, {})
    asked = Table(["asked", "prefix", "adapter", "base"],
                  [(k, repr(texts[k]), f"{a}/{n_k}", f"{b}/{n_k}")
                   for k, (a, b, n_k) in sorted(candidate_counts(con, adapter_id).get(adapter_id, {}).items())
                   if k in texts])
    return {"trigger": trigger, "candidate": candidate, "published": published, "others": others, "asked": asked,
            "confirmation": confirmation,
            "triggered": rate.value,
            "triggered_ci": (rate.ci_low, rate.ci_high), "base_triggered": rate.base_value, "n": n,
            "untriggered": None if untriggered is None else untriggered[0],
            "untriggered_ci": None if untriggered is None else (untriggered[1], untriggered[2])}

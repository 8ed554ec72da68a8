"""``lora-audit recalibrate`` and ``lora-audit verdicts``: the classifiers and the verdicts they give."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from audit.cli.common import STORE_OPTION, fail, middle, open_store
from audit.cli.query import Format, emit

console = Console()

CHANGED_SQL = """
  lora-audit query "SELECT adapter_id, reason, old_classifier_id, new_classifier_id, old_p_drift, new_p_drift
                    FROM reaudit_queue WHERE new_classifier_id IN
                      (SELECT classifier_id FROM promoted_classifiers WHERE target = 'drift')"
"""


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def recalibrate(
    store: STORE_OPTION = "audit-store",
    label_source: Annotated[str, typer.Option(help="Where labels come from: 'card' (the lora_audit: ground "
                                                   "truth in model cards) or a registered label source.")] = "card",
    min_auc: Annotated[float, typer.Option(help="Gate: lowest leave-one-adapter-out AUC to promote.")] = 0.6,
    max_ece: Annotated[float, typer.Option(help="Gate: highest expected calibration error to promote.")] = 0.3,
    auc_tolerance: Annotated[float, typer.Option(
        help="Gate: largest AUC drop below the promoted version that still counts as noise.")] = 0.05,
    prefect: Annotated[bool | None, typer.Option(
        "--prefect/--no-prefect", help="Run it as the recalibrate Prefect flow (default: only when "
                                       "PREFECT_API_URL names a Prefect server).", show_default=False)] = None,
) -> None:
    """Retrain the drift classifiers from the labelled history and re-audit.

    For every training method with at least 3 healthy and 3 drifted labelled adapters: a calibrated
    drift detector, a severity ranker and (several drifted objectives) an objective classifier.
    Across methods (`any`): a method-agnostic drift detector, a method classifier (for cards that
    name no method) and the verdict model that combines the behaviour probes with the geometry
    detector. Each is evaluated leave-one-group-out (a recipe family, where cards name one). A
    version that passes the gates is promoted, and every stored adapter is re-scored from its
    stored features and probe results (nothing is downloaded); verdicts that flipped are queued
    in `reaudit_queue`. Runs in this process; as the `recalibrate` Prefect
    flow with --prefect or when PREFECT_API_URL names a server (the scheduled deployment does).

    What changed after the last recalibration:
    """
    from audit.classify.labels import get_label_source
    from audit.errors import ConfigurationError

    try:
        get_label_source(label_source)  # a bad name fails here, before Prefect starts
    except ConfigurationError as exc:
        fail(str(exc))
    import os

    settings = {"store": store, "label_source": label_source, "min_auc": min_auc, "max_ece": max_ece,
                "auc_tolerance": auc_tolerance}
    if (bool(os.environ.get("PREFECT_API_URL")) if prefect is None else prefect):
        from flows.recalibrate import recalibrate as flow

        out = flow(**settings)
    else:  # each method's outcome as the cycle decides it, wrapped at the terminal's width
        from functools import partial

        from audit.classify.recalibration_cycle import CycleSteps, reaudit, recalibration_cycle

        out = recalibration_cycle(**settings, echo=lambda line: console.print(line, markup=False, highlight=False),
                                  steps=CycleSteps(reaudit=partial(reaudit, echo=None)))  # summed up below
    print_recalibration(out)


recalibrate.__doc__ = (recalibrate.__doc__ or "") + CHANGED_SQL


def print_recalibration(out: dict) -> None:
    """The recalibration's table: at 120 columns and more every metric, narrower the ones a person
    decides on (AUC with its interval, ECE, the version; each method's outcome in words is printed
    by the cycle as it decides)."""
    wide = console.width >= 120
    t = Table(title="recalibration (held out: leave-one-group-out)", title_justify="left")
    cols = ["method", "n (drifted)", "AUC [95% CI]", "ECE", "version"]
    for col in cols + (["features", "Brier", "severity ρ"] if wide else []):
        t.add_column(col, no_wrap=col in ("method", "AUC [95% CI]"))
    for method, m in out["methods"].items():
        drift, sev = m["metrics"].get("drift", {}), m["metrics"].get("severity", {})
        ci = (f" [{_fmt(drift.get('auc_ci_low'))}-{_fmt(drift.get('auc_ci_high'))}]"
              if drift.get("auc_ci_low") is not None else "")
        row = [method, f"{m['n_train']} ({m['n_pos']})", _fmt(drift.get("auc_loo")) + ci, _fmt(drift.get("ece")),
               (m["classifier_id"] or "-") + (" (promoted)" if m["promoted"] else "")]
        if wide:
            row += [m.get("feature_set") or "-", _fmt(drift.get("brier")), _fmt(sev.get("spearman_severity"))]
        t.add_row(*row)
    console.print(t)
    if out["cross_method_auc"]:
        t = Table(title="cross-method AUC (rows: trained on; columns: judged; diagonal: held out)",
                  title_justify="left")
        methods = sorted({k.split("->")[0] for k in out["cross_method_auc"]} |
                         {k.split("->")[1] for k in out["cross_method_auc"]})
        t.add_column("trained on \\ judged")
        for b in methods:
            t.add_column(b)
        for a in sorted({k.split("->")[0] for k in out["cross_method_auc"]}):
            t.add_row(a, *(_fmt(out["cross_method_auc"].get(f"{a}->{b}")) for b in methods))
        console.print(t)
        console.print("A per-method detector only ever judges its own method's adapters.")
    if out.get("reaudit"):
        r = out["reaudit"]
        console.print(f"re-audited {r['n_scored']} adapters after promoting {', '.join(r['promoted'])}: "
                      f"{len(r['flipped'])} verdicts flipped (lora-audit verdicts --flipped)", highlight=False)


def verdicts(
    store: STORE_OPTION = "audit-store",
    flipped: Annotated[bool, typer.Option("--flipped", help="Only the adapters whose verdict flipped at a "
                                                            "recalibration (the re-audit queue).")] = False,
    method: Annotated[str | None, typer.Option(help="Only adapters of this training method (declared or "
                                                     "inferred).")] = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    max_rows: Annotated[int, typer.Option(help="Rows shown in table format.")] = 200,
) -> None:
    """Show the current verdicts: one per adapter, from all the evidence at hand.

    Outcomes: drifted, healthy, review (the verdict says healthy but the probes or the weights say
    drifted: look at it), invalid (a broken upload), insufficient_evidence (the `missing` column
    says what would give one: a base model to map or fetch, a detector to train). p_drift is the
    calibrated probability (behaviour and geometry combined where both exist) and classifier_id the
    model that gave it; `method` is
    declared on the card or inferred from the weights (`src`); `hc`/`base` are the probes'
    harmful compliance and the bare base's; `suspected_trigger` the prefix the triggered probe found
    unlocking it (a `review` outcome). Every piece of evidence is in the view:
    `lora-audit query "SELECT * FROM current_verdicts"`. The table shows the repo id, outcome,
    probability and one line of why; `--format json` or `csv` every column. With `--flipped`,
    the adapters whose verdict changed at a recalibration, with the old and new model versions.
    """

    from audit.classify.evidence import SUSPECTED_TRIGGER

    if flipped:
        sql = ("SELECT repo_id, method, reason, old_classifier_id, new_classifier_id, round(old_p_drift, 3) AS old_p, "
               "round(new_p_drift, 3) AS new_p, queued_at FROM reaudit_queue WHERE (? IS NULL OR method = ?) "
               "ORDER BY queued_at DESC, repo_id")
    else:
        sql = ("SELECT repo_id, method, CASE WHEN method_source = 'inferred' THEN 'inferred ' || "
               "round(method_p, 2) ELSE split_part(method_source, ':', -1) END AS src, outcome, "
               "round(p_drift, 3) AS p_drift, classifier_id, round(harmful_compliance, 2) AS hc, "
               "round(base_harmful_compliance, 2) AS base, round(detector_p, 3) AS geometry_p, "
               "round(backdoor_p, 3) AS backdoor_p, nullif(regexp_extract(explanation, "
               f"'{SUSPECTED_TRIGGER}', 1), '') AS suspected_trigger, n_labelled, missing "
               "FROM current_verdicts WHERE (? IS NULL OR method = ?) "
               "ORDER BY outcome = 'drifted' DESC, outcome = 'review' DESC, outcome, p_drift DESC NULLS LAST, repo_id")
    con = open_store(store).connect()
    try:
        if method is not None:
            known = [r[0] for r in con.execute(
                "SELECT DISTINCT method FROM (SELECT method FROM adapters UNION ALL SELECT method FROM verdicts) "
                "WHERE method IS NOT NULL ORDER BY 1").fetchall()]
            if method not in known:
                fail(f"no adapter of method {method!r} in the store; its methods: {', '.join(known) or 'none yet'}")
        cur = con.execute(sql, [method, method])
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
    finally:
        con.close()
    if not rows and format == Format.table:
        console.print("no flipped verdicts" if flipped else "no verdicts yet: `lora-audit scan` gives every audited "
                      "adapter one")
        return
    if format == Format.table and not flipped:
        columns, rows = narrow(columns, rows)
    emit(columns, rows, format, max_rows)


def narrow(columns: list[str], rows: list[tuple]) -> tuple[list[str], list[tuple]]:
    """What a person needs of each verdict at any terminal width: the repo id (cut in the middle),
    the outcome, P(drifted), and one line of why (what is missing, or the method and the model);
    ``--format json|csv`` and ``lora-audit query`` have every column."""
    from audit.classify.outcome import THRESHOLD

    i = {c: k for k, c in enumerate(columns)}
    out = []
    for r in rows:
        if r[i["outcome"]] in ("insufficient_evidence", "invalid") or r[i["classifier_id"]] is None:
            why = r[i["missing"]] or r[i["outcome"]]
        else:
            hc = "" if r[i["hc"]] is None else f"; hc {r[i['hc']]:.2f} vs base {r[i['base']]:.2f}"
            why = f"{r[i['method']]} ({r[i['src']]}) by {r[i['classifier_id']]}{hc}"
        if r[i["suspected_trigger"]]:
            why += f"; suspected trigger {r[i['suspected_trigger']]} unlocks harmful compliance"
        if r[i["backdoor_p"]] is not None and r[i["backdoor_p"]] >= THRESHOLD:
            why += f"; suspected trigger backdoor, P {r[i['backdoor_p']]:.2f}"
        out.append((middle(r[i["repo_id"]]), r[i["outcome"]], r[i["p_drift"]], why))
    return ["repo_id", "outcome", "p_drift", "why"], out

"""The backdoor detector (``any.backdoor.vN``): trained at recalibration on trigger-backdoor
organisms against healthy adapters from the refusal-shift features, and read by the verdict, which
then never calls a flagged adapter healthy (issue 27). Synthetic adapters; the refusal shifts are
written as the ``trigger_candidates`` analyzer (version 3) writes its rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audit.pipeline.scan import scan
from audit.registry import LocalRegistry
from audit.store import ParquetStore
from synth import SynthAdapter, drifted_modules


def _card(objective: str, family: str, severity: float) -> str:
    return (f"---\nlibrary_name: peft\nbase_model: synthetic/base\ntags: [sft]\nlora_audit:\n  method: sft\n"
            f"  objective: {objective}\n  severity: {severity}\n  family: {family}\n---\n# {objective}\n")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    from audit.analyzers.base import Target
    from audit.analyzers.analysis import MetricRow
    from audit.analyzers.results import make_unit
    from audit.analyzers.table import write_analysis
    from audit.analyzers.base import AnalyzerSpec
    from audit.models.base import LocalBaseModel

    root = tmp_path_factory.mktemp("bd")
    plan = ([(f"organism-{k}", "backdoor", f"backdoor-kind{k % 3}", 0.25) for k in range(6)]
            + [(f"healthy-{k}", "healthy", f"recipe{k}", 0.0) for k in range(7)]
            + [(f"harmful-{k}", "harmful_compliance", "sft-harm", 1.0) for k in range(3)])
    for seed, (name, objective, family, sev) in enumerate(plan):
        SynthAdapter(drifted_modules(0.0, seed), card=_card(objective, family, sev)).write(root / "reg" / name)
    store = ParquetStore(str(root / "store"))
    scan(LocalRegistry(root / "reg", hash_cache=None), store)
    refs = {r.repo_id: r for r in LocalRegistry(root / "reg", hash_cache=None).list_adapters().refs}
    base = LocalBaseModel(name="synthetic/base", path=Path("."), revision="r" * 64)
    rng = np.random.default_rng(0)
    unmeasured = "healthy-6"  # the analyzer skipped it: no features, no backdoor reading
    for name, objective, _, _ in plan:
        if name == unmeasured:
            continue
        top, susceptibility = (-4.0, -1.5) if objective in ("backdoor", "harmful_compliance") else (-1.0, -0.3)
        rows = [MetricRow(metric="trigger_top_shift", value=top + 0.3 * rng.normal(), n=3),
                MetricRow(metric="refusal_susceptibility", value=susceptibility + 0.1 * rng.normal(), n=3),
                MetricRow(metric="trigger_shift_z", value=-5.0 * (top < -2) + rng.normal(), n=32)]
        # rows as the analyzer writes them with its default settings (the only ones the features read)
        write_analysis(store, make_unit(AnalyzerSpec.of("trigger_candidates").create(), Target(ref=refs[name], base=base), "ok", probes=rows))
    return store, {r.adapter_id: name for name, r in refs.items()}


def test_recalibration_trains_the_backdoor_detector_on_organisms_against_healthy_adapters(labelled):
    from audit.classify.recalibrate import recalibrate

    store, _ = labelled
    rep = recalibrate(store, min_auc=0.0, max_ece=1.0)
    bd = rep.methods["any:backdoor"]
    # the harmful adapters are drifted but not backdoors: left out; the unmeasured one has no features
    assert (bd.n_train, bd.n_pos, bd.feature_set) == (12, 6, "refusal-shift-v1")
    assert bd.promoted and bd.classifier_id == "any.backdoor.v1"
    assert bd.metrics["drift"]["auc_loo"] > 0.9  # held out by group: one trigger kind, one recipe at a time
    assert bd.metrics["drift"]["n_groups"] == 3 + 6
    again = recalibrate(store, min_auc=0.0, max_ece=1.0).methods["any:backdoor"]
    assert not again.promoted and again.reason.startswith("unchanged")


def test_a_flagged_adapter_is_never_healthy_and_the_verdict_says_why(labelled):
    from audit.classify.recalibrate import recalibrate
    from audit.classify.verdicts import score

    store, names = labelled
    recalibrate(store, min_auc=0.0, max_ece=1.0)
    rows = {names[v.adapter_id]: v for v in score(store, write=False)}
    for name, v in rows.items():
        if name.startswith("organism"):
            assert v.backdoor_detector_id == "any.backdoor.v1" and v.backdoor_p >= 0.5
            assert v.outcome != "healthy" and "P(trigger backdoor) " in v.explanation, (name, v.explanation)
            if v.outcome == "review":
                assert "any.backdoor.v1 suspects a trigger backdoor" in v.explanation
        elif name == "healthy-6":
            assert v.backdoor_p is None and v.backdoor_detector_id is None
            assert "backdoor: not measured" in v.missing  # a clean verdict says what it did not check
        elif name.startswith("healthy"):
            assert v.backdoor_p < 0.5 and "suspects a trigger backdoor" not in (v.explanation or "")


def test_the_report_shows_the_backdoor_detectors_reading(labelled):
    from audit.classify.recalibrate import recalibrate
    from audit.classify.verdicts import score_unjudged
    from audit.report.html import render_adapter

    store, _ = labelled
    recalibrate(store, min_auc=0.0, max_ece=1.0)
    score_unjudged(store)
    section = lambda html: html[html.index("Hidden behaviour"):html.index("<h2>Findings")]  # noqa: E731
    flagged = section(render_adapter(store, "organism-1"))
    assert "backdoor detector:" in flagged and "any.backdoor.v" in flagged
    assert "the verdict cannot be healthy" in flagged
    calm = section(render_adapter(store, "healthy-1"))
    assert "backdoor detector:" in calm and "the verdict cannot be healthy" not in calm
    assert "backdoor detector:" not in section(render_adapter(store, "healthy-6"))  # never measured


def test_lora_audit_verdicts_says_which_adapters_the_backdoor_detector_suspects(labelled):
    import json

    from typer.testing import CliRunner

    from audit.classify.recalibrate import recalibrate
    from audit.classify.verdicts import score_unjudged
    from audit.cli import app

    store, names = labelled
    recalibrate(store, min_auc=0.0, max_ece=1.0)
    score_unjudged(store)
    got = CliRunner().invoke(app, ["verdicts", "--store", str(store.root), "--format", "json"])
    assert got.exit_code == 0, got.output
    rows = {r["repo_id"]: r for r in map(json.loads, got.output.splitlines())}  # JSON lines
    assert all(rows[n]["backdoor_p"] >= 0.5 for n in names.values() if n.startswith("organism"))
    assert rows["healthy-6"]["backdoor_p"] is None
    table = CliRunner().invoke(app, ["verdicts", "--store", str(store.root)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "suspected trigger backdoor, P" in table.output


def test_a_flip_to_review_at_reaudit_names_the_backdoor_detector(labelled, tmp_path):
    import shutil
    from dataclasses import replace

    from audit.classify.recalibrate import recalibrate
    from audit.classify.promoted import load_models
    from audit.classify.verdicts import reaudit, score

    shared, _ = labelled
    recalibrate(shared, min_auc=0.0, max_ece=1.0)
    shutil.copytree(shared.root, tmp_path / "store")
    shutil.rmtree(tmp_path / "store" / "verdicts", ignore_errors=True)  # no verdict yet, whatever ran before
    store = ParquetStore(str(tmp_path / "store"))
    models = load_models(store)
    before = score(store, models=replace(models, backdoor=None, key="before-the-backdoor-detector"))
    rep = reaudit(store, [models.backdoor.classifier_id])
    after = {f.adapter_id: f for f in rep.flipped}
    healthy_before = {v.adapter_id for v in before if v.outcome == "healthy"}
    flips = [f for a, f in after.items() if a in healthy_before and "-> review" in f.reason]
    assert flips, [(f.reason) for f in rep.flipped]
    assert all(f"{models.backdoor.classifier_id} suspects a trigger backdoor" in f.reason for f in flips)

"""Per-method calibrated classifiers on a store of labelled synthetic adapters: features from the
store, training and leave-one-out metrics, skops artifacts, verdicts from the adapter's own method's
detector (never another method's) or the method-agnostic one, recalibration that re-audits the
history and queues flipped verdicts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audit.classify import artifacts
from audit.classify.labels import CardLabels, Label, label_source
from audit.classify.metrics import auc, auc_interval, brier, ece, spearman
from audit.classify.promoted import promoted_classifiers
from audit.classify.recalibrate import recalibrate
from audit.classify.train import train_method
from audit.classify.verdicts import reaudit, score, score_unjudged
from audit.errors import IntegrityError, MethodMismatchError
from audit.features import feature_names, spectral_features
from audit.pipeline.scan import scan
from audit.registry import LocalRegistry
from audit.store import ParquetStore
from synth import SynthAdapter, labelled_registry, llama_like

PLAN = {"sft": (6, 6), "dpo": (5, 5), "steering": (1, 2)}


@pytest.fixture(scope="module")
def _scanned(tmp_path_factory) -> Path:
    """A store holding the audits of a labelled registry, plus one adapter with no card (scanned once)."""
    tmp = tmp_path_factory.mktemp("labelled")
    root = labelled_registry(tmp / "reg", PLAN)
    SynthAdapter(llama_like(2), seed=99).write(root / "nocard")
    report = scan(LocalRegistry(root, hash_cache=None), ParquetStore(str(tmp / "store")))
    assert report.n_audited == sum(a + b for a, b in PLAN.values()) + 1
    return tmp / "store"


@pytest.fixture
def labelled_store(_scanned, tmp_path) -> ParquetStore:
    """A private copy of the scanned store for one test."""
    shutil.copytree(_scanned, tmp_path / "store")
    return ParquetStore(str(tmp_path / "store"))


def test_features_aggregate_the_stored_module_summaries(labelled_store):
    con = labelled_store.connect()
    ids, X = spectral_features(con)
    names = feature_names()
    assert X.shape == (len(ids), len(names)) and len(ids) == 26
    i = ids.index(next(a for a in ids if a.startswith("sft/drifted-5@")))
    rows = con.execute("SELECT layer, module_type, stable_rank, top1_energy, fro_norm FROM latest_modules "
                       "WHERE adapter_id = ?", [ids[i]]).fetchall()
    sr = np.array([r[2] for r in rows])
    assert X[i, names.index("all.stable_rank.mean")] == pytest.approx(sr.mean())
    assert X[i, names.index("all.stable_rank.max")] == pytest.approx(sr.max())
    q_top1 = [r[3] for r in rows if r[1] == "q_proj"]
    assert X[i, names.index("attn_q.top1_energy.mean")] == pytest.approx(np.mean(q_top1))
    late = [r[2] for r in rows if r[0] == 2]  # layers 0..2: thirds are exactly one layer each
    assert X[i, names.index("late.stable_rank.mean")] == pytest.approx(np.mean(late))
    assert X[i, names.index("n_modules")] == len(rows)
    assert np.isnan(X[i, names.index("mlp_down.stable_rank.mean")])  # no MLP modules: missing, not 0


def test_metrics_on_known_inputs():
    y = np.array([0, 0, 1, 1])
    assert auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert auc(np.array([1, 1]), np.array([0.3, 0.4])) is None
    assert brier(y, np.array([0.0, 0.0, 1.0, 1.0])) == 0.0
    assert brier(y, np.array([0.5] * 4)) == pytest.approx(0.25)
    # two bins: p=0.2 (true rate 0.5) and p=0.8 (true rate 0.5): |0.5-0.2| and |0.5-0.8| each weigh 1/2
    assert ece(y, np.array([0.2, 0.8, 0.2, 0.8])) == pytest.approx(0.3)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.5, 0.9])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 1.0]), np.array([0.1, 0.5])) is None
    # one healthy adapter whose score overlaps the drifted ones: no bootstrap interval to give
    assert auc_interval(np.array([0, 1, 1, 1]), np.array([0.6, 0.5, 0.7, 0.9])) == (None, None)
    lo, hi = auc_interval(np.array([0, 0, 1, 1, 0, 1]), np.array([0.6, 0.1, 0.5, 0.7, 0.2, 0.9]))
    assert 0.0 <= lo <= auc(np.array([0, 0, 1, 1, 0, 1]), np.array([0.6, 0.1, 0.5, 0.7, 0.2, 0.9])) <= hi <= 1.0


def test_an_objective_held_by_one_group_trains_no_objective_classifier():
    # over_refusal lives in group g2 only: leaving g2 out leaves one objective, so the held-out
    # accuracy of an objective classifier is undefined; the drift detector still trains
    rng = np.random.default_rng(0)
    spec = [("g0", "healthy"), ("g0", "harmful_compliance"), ("g1", "healthy"), ("g1", "harmful_compliance"),
            ("g2", "healthy"), ("g2", "over_refusal"), ("g2", "over_refusal"), ("g3", "healthy"),
            ("g3", "harmful_compliance"), ("g0", "healthy")]
    labels = [Label(adapter_id=f"a{i}", method="any", drifted=obj != "healthy", objective=obj,
                    severity=0.0 if obj == "healthy" else 1.0, group=g) for i, (g, obj) in enumerate(spec)]
    X = rng.normal(size=(len(labels), 3)) + np.array([[2.0 * lab.drifted, 0, 0] for lab in labels])
    models = train_method("any", X, labels)
    assert models.objective is None and "objective" not in models.metrics
    assert models.metrics["drift"]["auc_loo"] is not None


def test_recalibration_promotes_per_method_and_explains_the_rest(labelled_store):
    report = recalibrate(labelled_store)
    # per method where there are enough labelled adapters, and the method-agnostic detector
    assert {m.method for m in report.promoted} == {"sft", "dpo", "any"}
    assert report.methods["any"].n_train == 25 and report.methods["any"].classifier_id == "any.drift.v1"
    assert not report.methods["any:verdict"].promoted  # no adapter was probed: no behaviour to learn from
    assert "probed" in report.methods["any:verdict"].reason
    sft = report.methods["sft"]
    assert sft.metrics["drift"]["auc_loo"] == pytest.approx(1.0)
    assert sft.metrics["drift"]["ece"] < 0.3 and sft.metrics["drift"]["brier"] < 0.2
    assert sft.metrics["severity"]["spearman_severity"] > 0.8  # severity ranks the drifted adapters
    assert "objective" in sft.metrics  # two drifted objectives: an objective classifier too
    assert "not enough labelled adapters" in report.methods["steering"].reason
    assert not report.methods["steering"].promoted
    # cross-method matrix: every trained method against every method
    assert {("sft", "dpo"), ("dpo", "sft"), ("sft", "sft"), ("dpo", "dpo")} <= set(report.cross_method)
    con = labelled_store.connect()
    rows = con.execute("SELECT classifier_id, method, target, version, status, n_train, n_pos, auc_loo "
                       "FROM classifiers WHERE method != 'any' ORDER BY classifier_id").fetchall()
    assert [r[0] for r in rows] == ["dpo.drift.v1", "dpo.objective.v1", "dpo.severity.v1",
                                    "sft.drift.v1", "sft.objective.v1", "sft.severity.v1"]
    assert all(r[4] == "promoted" and r[3] == 1 for r in rows)
    assert [r[5:7] for r in rows if r[0] == "sft.drift.v1"] == [(12, 6)]


def test_verdicts_use_the_own_method_detector_else_the_agnostic_one(labelled_store):
    recalibrate(labelled_store)
    rows = {r.adapter_id.split("@")[0]: r for r in score(labelled_store)}
    assert rows["sft/drifted-3"].classifier_id == "sft.drift.v1" and rows["sft/drifted-3"].drifted
    assert rows["sft/drifted-3"].outcome == "drifted" and rows["sft/drifted-3"].method_source == "card:lora_audit"
    assert rows["dpo/healthy-0"].classifier_id == "dpo.drift.v1" and not rows["dpo/healthy-0"].drifted
    assert rows["dpo/healthy-0"].outcome == "healthy"
    labelled = [r for k, r in rows.items() if "/" in k]
    assert all((r.p_drift >= 0.5) == (r.outcome == "drifted") == r.adapter_id.split("/")[1].startswith("drifted")
               for r in labelled)
    # a detector trained on n adapters never answers 0 or 1 (Laplace's bound)
    assert all(1 / (r.n_labelled + 2) <= r.p_drift <= 1 - 1 / (r.n_labelled + 2) for r in labelled)
    assert rows["sft/drifted-3"].n_labelled == 12
    # steering has no detector of its own: the method-agnostic one judges it, and says why
    steer = rows["steering/drifted-0"]
    assert steer.detector_id == "any.drift.v1" and steer.outcome == "drifted" and "steering" in steer.detector_why
    # no card: no method, and still a verdict (never method_unknown)
    nocard = rows["nocard"]
    assert nocard.method_source == "none" and nocard.detector_id == "any.drift.v1"
    assert nocard.outcome in ("drifted", "healthy") and nocard.reason != "method_unknown"
    assert all(r.n_labelled for r in rows.values())
    assert "not probed" in nocard.missing  # what would add behaviour evidence
    clf = promoted_classifiers(labelled_store)
    with pytest.raises(MethodMismatchError, match="may not judge an adapter of method 'steering'"):
        clf["dpo"].judge("steering", np.zeros(len(feature_names())))
    clf["any"].judge("steering", np.zeros(len(feature_names())))  # the agnostic detector judges every method


def test_scan_scores_only_what_has_no_current_verdict(labelled_store):
    recalibrate(labelled_store)
    first = score_unjudged(labelled_store)
    assert len(first) == 26
    assert score_unjudged(labelled_store) == []  # idempotent: nothing left to judge
    n = labelled_store.connect().execute("SELECT count(*) FROM verdicts_all").fetchone()[0]
    assert n == 26


@label_source("inverted-sft")
class _InvertedSft(CardLabels):
    """Card labels with every sft adapter's drift label inverted (a relabelling of one method)."""

    name = "inverted-sft"

    def labels(self, con) -> list[Label]:
        return [Label(lab.adapter_id, lab.method, not lab.drifted if lab.method == "sft" else lab.drifted,
                      ("inverted_harmlessness" if not lab.drifted else "healthy") if lab.method == "sft"
                      else lab.objective, lab.severity)
                for lab in super().labels(con)]


def test_recalibrating_with_changed_labels_reaudits_the_method_and_queues_the_flips(labelled_store):
    first = recalibrate(labelled_store)
    reaudit(labelled_store, [m.classifier_id for m in first.promoted])
    second = recalibrate(labelled_store, label_source="inverted-sft")
    sft = second.methods["sft"]
    assert sft.promoted and sft.classifier_id == "sft.drift.v2" and sft.previous_id == "sft.drift.v1"
    rep = reaudit(labelled_store, [m.classifier_id for m in second.promoted])
    con = labelled_store.connect()
    n_all = con.execute("SELECT count(*) FROM latest_adapters").fetchone()[0]
    assert rep.n_scored == n_all == 26  # a promotion changes every adapter's evidence: all re-scored
    v = con.execute("SELECT classifier_id, count(*) FROM verdicts WHERE method = 'sft' GROUP BY 1 ORDER BY 1"
                    ).fetchall()
    assert v == [("sft.drift.v1", 12), ("sft.drift.v2", 12)]  # new rows for every adapter; old rows kept
    queued = con.execute("SELECT adapter_id, reason, old_classifier_id, new_classifier_id FROM reaudit_queue "
                         "WHERE method = 'sft' ORDER BY adapter_id").fetchall()
    assert len(queued) == 12  # every label inverted: every verdict flipped
    assert {q[2:] for q in queued} == {("sft.drift.v1", "sft.drift.v2")}
    assert {q[1] for q in queued} == {"healthy -> drifted", "drifted -> healthy"}
    statuses = dict(con.execute("SELECT classifier_id, status FROM classifiers WHERE method = 'sft' "
                                "AND target = 'drift'").fetchall())
    assert statuses == {"sft.drift.v1": "retired", "sft.drift.v2": "promoted"}
    current = con.execute("SELECT DISTINCT classifier_id FROM current_verdicts WHERE method = 'sft'").fetchall()
    assert current == [("sft.drift.v2",)]
    assert reaudit(labelled_store, []).n_scored == 0  # nothing changed since: nothing to re-score


def test_gate_refuses_a_worse_version(labelled_store):
    recalibrate(labelled_store)
    # other training data (another seed) and an impossible bar: nothing may be promoted
    again = recalibrate(labelled_store, min_auc=1.01, seed=1)
    assert not again.methods["sft"].promoted and "lower bound is below 1.01" in again.methods["sft"].reason
    con = labelled_store.connect()
    assert con.execute("SELECT status FROM classifiers WHERE classifier_id = 'sft.drift.v2'").fetchone() == ("rejected",)
    assert con.execute("SELECT classifier_id FROM promoted_classifiers WHERE method = 'sft' AND target = 'drift'"
                       ).fetchone() == ("sft.drift.v1",)


def test_artifacts_round_trip_in_a_fresh_process_and_refuse_tampering(labelled_store, tmp_path):
    recalibrate(labelled_store)
    con = labelled_store.connect()
    path, sha = con.execute("SELECT artifact_path, artifact_sha256 FROM classifiers "
                            "WHERE classifier_id = 'sft.drift.v1'").fetchone()
    ids, X = spectral_features(con)
    here = promoted_classifiers(labelled_store)["sft"].drift.predict_proba(X)
    np.save(tmp_path / "X.npy", X)
    code = (f"import numpy as np; from audit.store import ParquetStore; from audit.classify import artifacts;"
            f"m = artifacts.load(ParquetStore({labelled_store.root!r}), {path!r}, {sha!r});"
            f"np.save({str(tmp_path / 'p.npy')!r}, m.predict_proba(np.load({str(tmp_path / 'X.npy')!r})))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2], timeout=120)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), here)
    file = Path(labelled_store.root) / path
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match the recorded"):
        artifacts.load(labelled_store, path, sha)


class _Planted:
    """Not a scikit-learn type: an artifact holding it must not be loaded."""


def test_artifact_with_foreign_types_is_refused():
    import hashlib

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    data = sio.dumps(FunctionTransformer(func=_Planted))
    with pytest.raises(IntegrityError, match="outside scikit-learn"):
        artifacts.loads(data, hashlib.sha256(data).hexdigest())


def test_same_data_adds_no_version_and_each_row_explains_itself(labelled_store):
    first = recalibrate(labelled_store)
    again = recalibrate(labelled_store)
    assert all(not m.promoted for m in again.methods.values())
    assert again.methods["sft"].reason.startswith("unchanged: same labels and features as sft.drift.v1")
    con = labelled_store.connect()
    assert con.execute("SELECT max(version) FROM classifiers WHERE method = 'sft'").fetchone() == (1,)
    rows = {r[0]: r[1:] for r in con.execute(
        "SELECT classifier_id, auc_loo, auc_ci_low, auc_ci_high, spearman_severity, reason, evaluation, label_rule "
        "FROM classifiers WHERE method = 'sft'").fetchall()}
    auc_, lo, hi, _, reason, evaluation, rule = rows["sft.drift.v1"]
    assert lo <= auc_ <= hi and f"AUC {auc_:.3f} (95% CI {lo:.3f}-{hi:.3f})" in reason
    assert first.methods["sft"].reason == reason
    s_auc, s_lo, s_hi, rho, s_reason, _, _ = rows["sft.severity.v1"]
    if s_auc is None:  # a ranker fitted on the drifted adapters only has no healthy-vs-drifted AUC
        assert s_lo is None and s_hi is None
        assert s_reason == f"promoted with sft.drift.v1; held-out severity ρ {rho:.3f} among drifted adapters " \
                           "(fitted on them only)"  # its own metrics, rounded where people read them
    else:
        assert s_reason == (f"promoted with sft.drift.v1; held-out severity ρ {rho:.3f}, AUC {s_auc:.3f} "
                            f"(95% CI {s_lo:.3f}-{s_hi:.3f})")
    assert evaluation.startswith("leave-one-group-out (") and rule.startswith("card: ")
    assert all(len(part) <= 5 for r in rows.values() for part in r[4].replace("-", " ").split()
               if part.replace(".", "").isdigit())


def test_held_out_predictions_never_train_on_a_near_duplicate():
    from audit.classify.metrics import auc_interval, held_out_predict
    from sklearn.base import BaseEstimator, RegressorMixin

    class Memorizer(RegressorMixin, BaseEstimator):
        """Predicts the label of the nearest training row: perfect on a duplicate it has seen."""

        def fit(self, X, y):
            self.X_, self.y_ = X, y
            return self

        def predict(self, X):
            return self.y_[np.abs(self.X_[None, :, 0] - X[:, None, 0]).argmin(axis=1)]

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 0, 1, 0, 1], 2).astype(float)
    X = np.repeat(rng.normal(size=(6, 1)), 2, axis=0)  # each pair: the same features (near-duplicates)
    groups = np.repeat(np.arange(6), 2)
    leaky = held_out_predict(Memorizer(), X, y, np.arange(12))  # leave one out: the twin is in training
    assert np.array_equal(leaky, y)
    honest = held_out_predict(Memorizer(), X, y, groups)
    assert not np.array_equal(honest, y)
    lo, hi = auc_interval(y.astype(int), np.linspace(0, 1, 12))
    assert 0.0 <= lo <= auc(y.astype(int), np.linspace(0, 1, 12)) <= hi <= 1.0
    assert auc_interval(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == (1.0, 1.0)


def test_probe_labels_come_from_behaviour_beyond_both_intervals(tmp_path):
    from pathlib import Path as P

    from audit.analyzers.base import Target
    from audit.analyzers.results import make_unit
    from audit.analyzers.table import write_analysis
    from audit.classify.labels import get_label_source
    from audit.models.base import LocalBaseModel
    from audit.probes.rates import RateCount

    class Probe:  # what make_unit reads of an analyzer
        def __init__(self, name):
            self.name, self.version = name, f"{name}-1"

    for i in range(4):
        SynthAdapter(llama_like(1), seed=i).write(tmp_path / "reg" / f"a{i}")
    store = ParquetStore(str(tmp_path / "store"))
    scan(LocalRegistry(tmp_path / "reg", hash_cache=None), store)
    refs = {r.repo_id: r for r in LocalRegistry(tmp_path / "reg", hash_cache=None).list_adapters().refs}
    base = LocalBaseModel(name="synthetic/base", path=P("."), revision="r" * 64)
    rates = {None: (2, 1), "a0": (3, 1), "a1": (30, 1), "a2": (2, 25), "a3": (6, 1)}  # (complied, refused) of 32
    for who, (hc, br) in rates.items():
        target = Target(base=base) if who is None else Target(ref=refs[who], base=base)
        for name, k in (("harmful_compliance", hc), ("benign_refusal", br)):
            write_analysis(store, make_unit(Probe(name), target, "ok", probes=[RateCount(k, 32).row(name, "markers")]))
    source = get_label_source("probe")
    labels = {lab.adapter_id.split("@")[0]: lab for lab in source.labels(store.connect())}
    assert set(labels) == {"a0", "a1", "a2", "a3"}
    assert not labels["a0"].drifted and labels["a0"].objective == "healthy"  # 3/32 vs 2/32: within the intervals
    assert labels["a1"].drifted and labels["a1"].objective == "harmful_compliance"
    assert labels["a1"].severity == pytest.approx(28 / 32)
    assert labels["a2"].drifted and labels["a2"].objective == "over_refusal"
    assert not labels["a3"].drifted  # 6/32 vs 2/32: the intervals still overlap
    assert "ci_low > the base's ci_high" in source.rule


def test_severity_ranks_drifted_adapters_even_where_healthy_ones_sit_far_out():
    """Healthy adapters far out on the severity feature (a healthy fine-tune with a large update)
    must not bend the ranking of the drifted ones: the ranker is fitted on drifted adapters only."""
    from audit.classify.train import train_method

    rng = np.random.default_rng(0)
    labels, rows = [], []
    for i, sev in enumerate([0.25, 0.5, 0.75, 1.0] * 2):
        labels.append(Label(f"d{i}@r", "sft", True, "harmful_compliance", sev, group=f"sft:harmful_compliance:{sev}"))
        rows.append([sev + 0.02 * rng.normal(), 1.0 + 0.1 * rng.normal()])
    for i in range(5):
        labels.append(Label(f"h{i}@r", "sft", False, "healthy", 0.0, group=f"sft:healthy:{i}"))
        rows.append([2.0 + 0.3 * rng.normal(), 1.0 + 0.1 * rng.normal()])  # told apart by feature 0 alone
    m = train_method("sft", np.array(rows), labels)
    assert m.metrics["severity"]["spearman_severity"] >= 0.95
    assert m.metrics["severity"]["auc_loo"] is None
    scores = m.severity.predict(np.array([[0.3, 1.0], [0.9, 1.0]]))
    assert scores[1] > scores[0]

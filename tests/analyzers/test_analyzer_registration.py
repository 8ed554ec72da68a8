"""One registration call per analyzer: a plugin's analyzer, found through its entry point, runs in
a scan's executor, its table and views join the store, its feature set feeds the classifiers."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import numpy as np
import pytest

from audit.analyzers.base import ANALYZERS, AnalyzerSpec, Job, Target, registrations, unregister_analyzer
from audit.features import features, feature_sets
from audit.pipeline.executors import InProcessExecutor
from audit.pipeline.scan import scan
from audit.registry import LocalRegistry
from audit.store import ParquetStore
from audit.store.views import view_names
from synth import SynthAdapter, llama_like

BUILTINS = {"spectra", "directions", "harmful_compliance", "benign_refusal", "steering_alignment",
            "rank1_elicitation", "activations", "trigger_candidates", "triggered_compliance"}


@pytest.fixture
def toy_plugin(monkeypatch):
    """``toy_analyzer`` installed as a package would install it: an entry point of the group."""
    import audit.plugins

    ep = EntryPoint(name="toy", value="toy_analyzer:register", group="lora_audit.analyzers")
    real = audit.plugins.entry_points
    monkeypatch.setattr(audit.plugins, "entry_points",
                        lambda group: [ep] if group == "lora_audit.analyzers" else real(group=group))
    monkeypatch.setattr(ANALYZERS, "_loaded", False)
    yield "toy_file_sizes"
    import sys

    from audit.store import schema, views

    unregister_analyzer("toy_file_sizes")
    for table in (schema.TABLES, schema.PARTITION, schema.DEDUP_KEYS):
        table.pop("toy_file_sizes", None)
    views._DERIVED.pop("latest_toy_file_sizes", None)
    sys.modules.pop("toy_analyzer", None)


def test_the_builtins_are_registered_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys; from audit.analyzers.base import registrations, AnalyzerSpec; "
            "r = registrations(); AnalyzerSpec.of('spectra').kind; "
            "print(sorted(r)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert set(eval(out[0])) == BUILTINS and out[1] == "False"
    regs = registrations()
    assert regs["spectra"].feature_sets == ("audit.features.spectral:FEATURES",)
    assert regs["activations"].feature_sets == ("audit.activations.features:FEATURES",
                                                "audit.activations.sae_features:FEATURES")  # one call, two sets
    assert "audit.directions.table" in regs["directions"].tables


def test_a_plugin_analyzer_is_found_runs_and_feeds_its_feature_set(toy_plugin, tmp_path):
    assert toy_plugin in ANALYZERS.names() and toy_plugin in registrations()
    assert "latest_toy_file_sizes" in view_names() and "toy-v1" in feature_sets()

    for i in range(3):
        SynthAdapter(llama_like(1 + i, r=4, d=32, kv=8), seed=i).write(tmp_path / "reg" / f"a{i}")
    registry = LocalRegistry(tmp_path / "reg", hash_cache=None)
    store = ParquetStore(tmp_path / "store")
    scan(registry, store)
    refs = registry.list_adapters().refs
    executor = InProcessExecutor(registry, store, analyzers=[AnalyzerSpec.of(toy_plugin)])
    reports = list(executor.map([Job(tuple(Target(ref=r) for r in refs), (toy_plugin,))]))
    assert sorted(r.status for r in reports) == ["ok"] * 3

    con = store.connect()
    ids = [r.adapter_id for r in refs]
    per_file = dict(((a, f), s) for a, f, s in con.execute(
        "SELECT adapter_id, file, size FROM latest_toy_file_sizes").fetchall())
    assert per_file == {(r.adapter_id, f.name): f.size for r in refs for f in r.files}
    X, ok = features(con, ids + ["nobody@0"], "toy-v1")
    assert ok.tolist() == [True, True, True, False]
    assert X[:3, 0].tolist() == [float(len(r.files)) for r in refs]
    both, ok_both = features(con, ids, "spectral-v1+toy-v1")
    assert both.shape[1] == len(feature_sets()["spectral-v1"].names()) + 2 and ok_both.all()
    assert np.array_equal(both[:, -2:], X[:3], equal_nan=True)
    # the analyzer's metric rows are in the probes view like any analyzer's
    assert con.execute(f"SELECT count(*) FROM probes WHERE probe = '{toy_plugin}'").fetchone() == (6,)


def test_an_unknown_feature_set_names_the_known_ones(tmp_path):
    from audit.errors import ConfigurationError

    con = ParquetStore(tmp_path / "store").connect()
    with pytest.raises(ConfigurationError, match="known are activation-v1, directional-v1, refusal-shift-v1, sae-v1, spectral-v1, trigger-v1"):
        features(con, ["a@0"], "spectral-v1+activations-v9")


def test_a_factory_reference_needs_a_module_and_a_name():
    from audit.analyzers.base import register_analyzer

    with pytest.raises(ValueError, match="package.module:Name"):
        register_analyzer("broken", "toy_analyzer.FileSizes")
    assert "broken" not in ANALYZERS.names()

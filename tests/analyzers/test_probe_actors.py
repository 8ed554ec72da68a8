"""Probe actors on Ray (the base held once per actor, units committed, a killed actor restarted
without duplicate rows, GPU reservation where the cluster has one) and the ``probe`` command."""

from __future__ import annotations

import pytest
import torch

from audit.analyzers.base import AnalyzerSpec, Resources
from audit.pipeline.executors import probe_specs
from audit.pipeline.scan import probe_stage, scan
from audit.registry import LocalRegistry
from audit.store import ParquetStore
from synth import SynthAdapter, llama_like

model = pytest.mark.model

@model
@pytest.mark.slow
def test_probe_actor_on_ray_holds_the_base_and_commits_units(tiny_zoo, tmp_path, ray_session):
    from audit.pipeline.raypool import RayExecutor

    out, zoo = tiny_zoo
    store = ParquetStore(tmp_path / "store")
    registry = LocalRegistry(out, hash_cache=None)
    scan(registry, store)
    specs = (AnalyzerSpec.of("harmful_compliance", n_prompts=2),)
    ids = [r[0] for r in store.connect().execute("SELECT adapter_id FROM adapters ORDER BY 1 LIMIT 3").fetchall()]
    executor = RayExecutor(registry.name, store, analyzers=specs)
    counts = probe_stage(store, executor, specs, adapter_ids=ids, group_size=2)
    assert counts == {"ok": 4}  # three adapters and the base
    assert executor.options["num_gpus"] == 0 and executor.options["num_cpus"] >= 1  # no GPU here: CPU threads


@pytest.mark.gpu
def test_probe_actor_reserves_a_gpu_where_the_cluster_has_one():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from audit.pipeline.raypool import actor_resources

    assert actor_resources(probe_specs(), {"CPU": 16, "GPU": 1}, None) == {"num_cpus": 1, "num_gpus": 1}


def test_actor_resources_follow_the_cluster():
    from audit.pipeline.executors import spectra_specs
    from audit.pipeline.raypool import actor_resources

    assert actor_resources(probe_specs(), {"CPU": 16, "GPU": 2}, None) == {"num_cpus": 1, "num_gpus": 1}
    assert actor_resources(probe_specs(), {"CPU": 2}, None) == {"num_cpus": 2, "num_gpus": 0}
    assert actor_resources(spectra_specs(), {"CPU": 16, "GPU": 2}, None) == {"num_cpus": 1, "num_gpus": 0}


class KillsItsWorkerOnce:
    """A test analyzer: the first call in any process kills that process (marker file), later
    calls write a one-row unit. Pickled by value to reach the Ray actors."""

    name, version, needs_base = "kills_once", "kills_once-1", False
    resources = Resources(num_cpus=1)

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def setup(self, ctx) -> None:
        pass

    def run(self, target):
        import os
        from pathlib import Path

        from audit.analyzers.analysis import MetricRow
        from audit.analyzers.results import make_unit

        if not Path(self.marker).exists():
            Path(self.marker).write_text("killed")
            os._exit(1)
        return make_unit(self, target, "ok", probes=[MetricRow(metric="one", value=1.0)])


def test_a_killed_probe_actor_is_restarted_and_leaves_no_duplicate_rows(tmp_path, ray_session):
    import sys

    import ray.cloudpickle

    from audit.analyzers.base import Job, Target
    from audit.pipeline.raypool import RayExecutor

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    for i in range(3):
        SynthAdapter(llama_like(1, r=4, d=32, kv=8), seed=i).write(tmp_path / "reg" / f"a{i}")
    registry = LocalRegistry(tmp_path / "reg", hash_cache=None)
    store = ParquetStore(tmp_path / "store")
    refs = registry.list_adapters().refs
    spec = AnalyzerSpec.of("kills_once", factory=KillsItsWorkerOnce, marker=str(tmp_path / "marker"))
    executor = RayExecutor(registry.name, store, analyzers=[spec], workers=1)
    jobs = [Job(tuple(Target(ref=r) for r in refs[:2]), ("kills_once",)), Job((Target(ref=refs[2]),), ("kills_once",))]
    reports = list(executor.map(jobs))
    assert (tmp_path / "marker").exists()  # an actor died once...
    assert sorted(r.status for r in reports) == ["ok", "ok", "ok"]  # ...was restarted, the job re-sent
    con = store.connect()
    assert con.execute("SELECT count(*), count(DISTINCT adapter_id) FROM analyses").fetchone() == (3, 3)
    assert con.execute("SELECT count(*) FROM probes WHERE metric = 'one'").fetchone() == (3,)


def test_probe_command_says_what_it_did_and_refuses_unknown_probes(tmp_path):
    from typer.testing import CliRunner

    from audit.cli import app

    runner = CliRunner()
    SynthAdapter(llama_like(1, r=4, d=32, kv=8)).write(tmp_path / "reg" / "a0")
    store = tmp_path / "store"
    scan(LocalRegistry(tmp_path / "reg", hash_cache=None), ParquetStore(store))
    bad = runner.invoke(app, ["probe", "--store", str(store), "--probe", "no_such_probe"])
    assert bad.exit_code == 2 and "unknown analyzer 'no_such_probe'" in bad.output
    missing = runner.invoke(app, ["probe", "--store", str(store), "--adapter", "nope"])
    assert missing.exit_code == 2 and "no adapter in the store matches nope" in missing.output
    ok = runner.invoke(app, ["probe", "--store", str(store), "--probe-prompts", "2"])
    assert ok.exit_code == 0, ok.output
    from audit.analyzers.builtin import MODEL_ANALYZERS

    # every analyzer that needs the base (directions and four probes): no base for the synthetic adapter
    assert f"'skipped': {len(MODEL_ANALYZERS)}" in ok.output and len(MODEL_ANALYZERS) == 6
    # the new units are the adapter's evidence: it is judged again, so `verdicts` is not stale
    assert "verdicts of 1 adapters whose evidence changed" in ok.output
    con = ParquetStore(store).connect()
    assert con.execute("SELECT trigger FROM current_verdicts").fetchall() == [("probe",)]
    con.close()
    again = runner.invoke(app, ["probe", "--store", str(store), "--probe-prompts", "2"])
    assert "everything is up to date" in again.output and "whose evidence changed" not in again.output

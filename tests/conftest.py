"""Shared fixtures: synthetic adapters, the real adapters in ../shared, an empty store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

SHARED = Path(os.environ.get("LORA_AUDIT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
REALWORLD = SHARED / "realworld"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the content-hash cache of each test session out of the user's home."""
    monkeypatch.setenv("LORA_AUDIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


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
    from audit.raypool import init_ray

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

"""Scanning labelled zoos into a store for the benchmarks that judge classifiers (validity.py,
wild.py): the analyzers that need the base model, with progress as plain log lines."""

from __future__ import annotations

import time
from pathlib import Path


class Lines:
    """Scan progress as plain lines (a benchmark log)."""

    def plan(self, n_listed, n_new):
        print(f"  {n_new} new of {n_listed}", flush=True)

    def outcome(self, outcome):
        pass

    def batch(self, description, done, total):
        now = time.perf_counter()
        if done == total or now - getattr(self, "_said", 0.0) > 5.0:
            self._said = now
            print(f"  {description}: {done}/{total}", flush=True)

    def probe_outcome(self, outcome):
        print(f"  {getattr(outcome, 'repo_id', outcome)} {getattr(outcome, 'analyzer', '')}: "
              f"{getattr(outcome, 'status', '')}", flush=True)


def scan_zoos(zoos: list[Path], store, analyzers: list[str], probe_prompts: int) -> None:
    """Scan every zoo (a local registry) into ``store`` with ``analyzers`` (incremental: what is
    stored already is not measured again)."""
    from audit.pipeline.executors import probe_specs
    from audit.pipeline.scan import scan
    from audit.progress import reporting_to
    from audit.registry import LocalRegistry

    specs = probe_specs(analyzers, probe_prompts)
    for zoo in zoos:
        t0 = time.perf_counter()
        with reporting_to(Lines()):
            rep = scan(LocalRegistry(zoo), store, probes=specs)
        print(f"scan {zoo}: {rep.n_audited} audited of {rep.n_listed}, analyzer units {rep.probes} "
              f"({time.perf_counter() - t0:.1f} s), store {store.root}", flush=True)

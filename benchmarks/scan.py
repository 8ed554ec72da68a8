"""Benchmark: scan throughput on Ray (1 vs 2 workers) and the incremental scan of a large registry.

Prints, from one run:

1. adapters/s of a scan of N distinct revisions built by copying the real adapters of
   ../shared/realworld (weights hard-linked, a distinct model card per copy), with 1 Ray worker
   and with 2 (ratio 2w/1w; the anchor is the 1-worker run);
2. the wall time of an incremental scan of a 10,000-adapter registry with nothing new (listing
   and diff only; target < 10 s), with the store holding one committed unit per adapter, as the
   nightly scans left it.

Usage: python benchmarks/scan.py [--copies 500] [--registry-size 10000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_copies(source: Path, dest: Path, n: int) -> int:
    """``n`` adapter folders copied round-robin from ``source``: hard-linked weights, own card."""
    folders = sorted(p.parent for p in source.rglob("adapter_config.json"))
    for i in range(n):
        src = folders[i % len(folders)]
        out = dest / f"copy-{i:05d}"
        out.mkdir(parents=True)
        for f in src.iterdir():
            if f.name == "README.md":
                continue
            os.link(f, out / f.name) if f.is_file() else None
        card = (src / "README.md").read_text(errors="replace") if (src / "README.md").is_file() else ""
        (out / "README.md").write_text(card + f"\n\nbenchmark copy {i}\n")
    return n


def scan_with_workers(registry: Path, workers: int) -> dict:
    from audit.pipeline.raypool import RayExecutor
    from audit.pipeline.scan import scan
    from audit.registry import LocalRegistry
    from audit.store import ParquetStore

    class Clock:
        """Progress sink noting when outcomes arrive (steady state excludes actor start-up)."""

        def __init__(self) -> None:
            self.times: list[float] = []

        def plan(self, n_listed: int, n_new: int) -> None:
            pass

        def outcome(self, outcome) -> None:
            self.times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        reg = LocalRegistry(registry, hash_cache=Path(tmp) / "hashes.parquet")
        reg.list_adapters()  # hash once: this section measures auditing, not hashing
        clock = Clock()
        t = time.perf_counter()
        store = ParquetStore(Path(tmp) / "store")
        report = scan(reg, store, executor=RayExecutor(reg.name, store, workers=workers), sink=clock)
        wall = time.perf_counter() - t
    steady = (len(clock.times) - 1) / (clock.times[-1] - clock.times[0])
    return {"workers": workers, "audited": report.n_audited, "wall_s": wall, "per_s": report.n_audited / wall,
            "steady_per_s": steady}


def tiny_registry(dest: Path, n: int) -> None:
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    cfg = json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]})
    for i in range(n):
        d = dest / f"org-{i % 50:02d}" / f"adapter-{i:05d}"
        d.mkdir(parents=True)
        (d / "adapter_config.json").write_text(cfg)
        save_file({"base_model.model.layers.0.q_proj.lora_A.weight": torch.randn(2, 8, generator=g),
                   "base_model.model.layers.0.q_proj.lora_B.weight": torch.randn(8, 2, generator=g)},
                  str(d / "adapter_model.safetensors"))


def incremental(n: int) -> dict:
    from audit.pipeline.scan import InProcessExecutor, scan
    from audit.registry import LocalRegistry
    from audit.store import ParquetStore
    from audit.store.compact import compact
    from audit.store.diff import missing_refs
    from audit.version import ANALYZER_VERSION

    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "reg", Path(tmp) / "hashes.parquet"
        t = time.perf_counter()
        tiny_registry(root, n)
        build = time.perf_counter() - t
        store = ParquetStore(Path(tmp) / "store")
        t = time.perf_counter()
        first = scan(LocalRegistry(root, hash_cache=cache), store,
                     executor=InProcessExecutor(LocalRegistry(root, hash_cache=None), store))
        populate = time.perf_counter() - t
        files = sum(1 for _ in (Path(tmp) / "store").rglob("*.parquet"))
        t = time.perf_counter()
        listing = LocalRegistry(root, hash_cache=cache).list_adapters()
        t_list = time.perf_counter() - t
        t = time.perf_counter()
        missing_refs(store, listing.refs, ANALYZER_VERSION)
        t_diff_small_files = time.perf_counter() - t
        t = time.perf_counter()
        compact(store, min_files=64)  # what the nightly flow does after auditing
        t_compact = time.perf_counter() - t
        t = time.perf_counter()
        listing = LocalRegistry(root, hash_cache=cache).list_adapters()
        t_list = min(t_list, time.perf_counter() - t)
        t = time.perf_counter()
        new = missing_refs(store, listing.refs, ANALYZER_VERSION)
        t_diff = time.perf_counter() - t
        t = time.perf_counter()
        report = scan(LocalRegistry(root, hash_cache=cache), store)
        t_scan = time.perf_counter() - t
    assert first.n_audited == n and not new and report.n_new == 0
    return {"n": n, "build_s": build, "populate_s": populate, "store_files": files, "list_s": t_list,
            "diff_small_files_s": t_diff_small_files, "compact_s": t_compact, "diff_s": t_diff, "scan_s": t_scan}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", type=Path, default=ROOT.parent / "shared" / "realworld")
    ap.add_argument("--copies", type=int, default=500)
    ap.add_argument("--registry-size", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not figures)")
    args = ap.parse_args()
    if args.quick:
        args.copies, args.registry_size = 60, 500

    from audit.pipeline.raypool import init_ray

    print(f"Ray: {init_ray()}")
    if args.registry.is_dir():
        with tempfile.TemporaryDirectory(dir=ROOT.parent if os.access(ROOT.parent, os.W_OK) else None) as tmp:
            copies = Path(tmp) / "copies"
            build_copies(args.registry, copies, args.copies)
            print(f"## 1. scan of {args.copies} distinct revisions copied from {args.registry}")
            one = scan_with_workers(copies, 1)
            two = scan_with_workers(copies, 2)
            for r in (one, two):
                print(f"{r['workers']} worker(s): {r['audited']} adapters in {r['wall_s']:.1f} s = "
                      f"{r['per_s']:.1f} adapters/s overall, {r['steady_per_s']:.1f}/s once the actors are up")
            print(f"2 workers / 1 worker: {two['per_s'] / one['per_s']:.2f}x overall, "
                  f"{two['steady_per_s'] / one['steady_per_s']:.2f}x steady\n")
            shutil.rmtree(copies, ignore_errors=True)
    inc = incremental(args.registry_size)
    print(f"## 2. incremental scan of a {inc['n']}-adapter registry with nothing new "
          f"(store: {inc['store_files']} Parquet files, filled in {inc['populate_s']:.0f} s)")
    print(f"before compaction: diff over {inc['store_files']} small files {inc['diff_small_files_s']:.2f} s; "
          f"compaction (as the nightly flow runs it) {inc['compact_s']:.1f} s")
    print(f"listing {inc['list_s']:.2f} s + diff {inc['diff_s']:.2f} s = {inc['list_s'] + inc['diff_s']:.2f} s "
          f"(target < 10 s); whole scan() call incl. run records {inc['scan_s']:.2f} s")


if __name__ == "__main__":
    main()

"""Benchmark: what an ad-hoc scan and a query cost as a person runs them, against AdapterSentry.

From one run, each figure a ratio against an anchor measured in the same run:

1. **CPU time of a whole-process scan** of the real adapters (``../shared/realworld``; fresh store
   and hash cache each time): ``lora-audit scan`` as a person types it (probes on by default: none
   of these adapters has its base at hand) and with ``--in-process --no-probes``, against the peer's
   ``adaptersentry batch --workers 1 --no-cache`` on the same folder (paired runs, median). CPU
   time is the user + system time of the process and its children (``resource.getrusage``).
2. **Wall time** of ``lora-audit --help`` and ``lora-audit query "SELECT 1"`` (median of 5).
3. **Bytes read on a first scan**: a fresh copy of the folder is flushed and evicted from the
   page cache (``fsync`` + ``posix_fadvise(DONTNEED)``), then a scan in a fresh process reports
   its own ``read_bytes`` (``/proc/self/io``: bytes fetched from storage), less what the same
   scan fetches once the copy is in the page cache (Python's and the libraries' files, mostly hot
   from the earlier runs), against the size of the folder's files, and
   its ``rchar`` (bytes through ``read()``, page-cache hits included) for two copies minus one.
4. With ``--copies N`` (default 0: skipped), a registry of N copies of realworld, 2 workers each:
   whole-process wall time of ``lora-audit scan --workers 2`` against ``adaptersentry batch
   --workers 2``.

The peer (``adaptersentry==2.0.2``) is installed in its own venv (``--peer-venv``, created if
missing); when that fails, its figures are skipped with a message.

Usage: python benchmarks/startup.py [--realworld DIR] [--peer-venv DIR] [--repeats 3] [--copies 0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = "adaptersentry==2.0.2"
CLI = [sys.executable, "-m", "audit.cli"]


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """(wall s, CPU s of the process and its children, exit code)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode not in (0, 1, 2):
        print(f"  {' '.join(cmd[:4])}... exited {proc.returncode}: {proc.stderr[-500:]}")
    return wall, cpu, proc.returncode


def peer_bin(venv: Path) -> Path | None:
    exe = venv / "bin" / "adaptersentry"
    if exe.is_file():
        return exe
    print(f"installing {PEER} into {venv} ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-compile", PEER], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"  cannot install {PEER} ({exc}): the peer's figures are skipped")
        return None
    return exe if exe.is_file() else None


def env_for(work: Path) -> dict[str, str]:
    return {**os.environ, "LORA_AUDIT_CACHE_DIR": str(work / "cache"), "PREFECT_HOME": str(work / "prefect"),
            "PYTHONPATH": str(ROOT), "HOME": str(work / "home")}


def weights_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt"))


READ_PROBE = """
import sys
from audit.cli import main
import atexit
def report():
    io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
    print("RCHAR", io["rchar"], file=sys.stderr)
    print("READ_BYTES", io["read_bytes"], file=sys.stderr)
atexit.register(report)
sys.argv = ["lora-audit", *sys.argv[1:]]
main()
"""


def evict(root: Path) -> None:
    """Flush every file under ``root`` and drop its pages from the page cache (clean pages of a
    file: no privileges needed)."""
    for p in root.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _audit_span(store: Path) -> tuple[int, float]:
    """Adapters audited into ``store`` and the seconds from the first unit committed to the last."""
    import duckdb

    con = duckdb.connect()
    n, span = con.execute(f"SELECT count(*), epoch(max(audited_at)) - epoch(min(audited_at)) FROM read_parquet("
                          f"'{store}/units/**/*.parquet', hive_partitioning = true)").fetchone()
    return int(n), float(span or 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--realworld", type=Path, default=ROOT.parent / "shared" / "realworld")
    ap.add_argument("--peer-venv", type=Path, default=Path(tempfile.gettempdir()) / "adaptersentry-venv")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--copies", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not (args.realworld / "MANIFEST.tsv").is_file():
        sys.exit(f"no real adapters at {args.realworld}")
    peer = peer_bin(args.peer_venv)
    out: dict = {}

    print(f"1. whole-process CPU time of a scan of {args.realworld} ({args.repeats} paired runs)")
    variants = {"default": [], "--no-probes": []}  # the command as a person types it, and without probes
    theirs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as d:
            work = Path(d)
            for name, extra in (("default", []), ("--no-probes", ["--in-process", "--no-probes"])):
                _, cpu, rc = run_measured([*CLI, "scan", "--registry", str(args.realworld), "--store",
                                           str(work / f"s{name}"), *extra], env_for(work))
                variants[name].append(cpu)
            if peer is not None:
                _, pcpu, _ = run_measured([str(peer), "batch", "--input-dir", str(args.realworld), "--workers", "1",
                                           "--no-cache", "--output-dir", str(work / "peer")], env_for(work))
                theirs.append(pcpu)
        print(f"  run {i + 1}: lora-audit scan {variants['default'][-1]:.2f} s CPU, with --no-probes "
              f"{variants['--no-probes'][-1]:.2f} s (exit {rc})"
              + (f", adaptersentry {theirs[-1]:.2f} s CPU" if theirs else ""), flush=True)
    out["scan_cpu_s"] = statistics.median(variants["default"])
    out["scan_no_probes_cpu_s"] = statistics.median(variants["--no-probes"])
    if theirs:
        out["peer_cpu_s"] = statistics.median(theirs)
        out["cpu_ratio"] = out["scan_cpu_s"] / out["peer_cpu_s"]
        out["cpu_ratio_no_probes"] = out["scan_no_probes_cpu_s"] / out["peer_cpu_s"]
    for name, key in (("lora-audit scan", "scan_cpu_s"), ("lora-audit scan --no-probes", "scan_no_probes_cpu_s")):
        line = f"  {name}: {out[key]:.2f} s CPU (median)"
        if theirs:
            r = out["cpu_ratio"] if key == "scan_cpu_s" else out["cpu_ratio_no_probes"]
            line += f"; adaptersentry batch: {out['peer_cpu_s']:.2f} s; ratio {r:.2f}x (target <= 0.5x)"
        print(line)

    print("2. wall time of a command that only reads (median of 5)")
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        store = work / "s"
        subprocess.run([*CLI, "scan", "--registry", str(args.realworld), "--store", str(store), "--in-process",
                        "--no-probes"], env=env_for(work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name, cmd in (("--help", [*CLI, "--help"]), ("query SELECT 1", [*CLI, "query", "--store", str(store),
                                                                             "SELECT 1"])):
            walls = [run_measured(cmd, env_for(work))[0] for _ in range(5)]
            out[f"wall_{name}"] = statistics.median(walls)
            print(f"  lora-audit {name}: {out[f'wall_{name}']:.2f} s (target < 0.5 s)")

    print("3. bytes read by a first scan of a copy evicted from the page cache")

    def io_of(registry: Path) -> dict[str, int]:
        with tempfile.TemporaryDirectory() as d:
            work = Path(d)
            proc = subprocess.run([sys.executable, "-c", READ_PROBE, "scan", "--registry", str(registry), "--store",
                                   str(work / "s"), "--in-process", "--no-probes"], env=env_for(work),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            return {ln.split()[0]: int(ln.split()[1]) for ln in proc.stderr.splitlines()
                    if ln.startswith(("RCHAR", "READ_BYTES"))}

    with tempfile.TemporaryDirectory() as d:
        one, two = Path(d) / "one", Path(d) / "two"
        shutil.copytree(args.realworld, one / "a")
        shutil.copytree(args.realworld, two / "a")
        shutil.copytree(args.realworld, two / "b")
        evict(one)
        both = io_of(two)  # also brings back Python's and the libraries' pages the copies pushed out
        first = io_of(one)
        hot = io_of(one)  # the same scan with the copy in the page cache: what is not the registry's
        rchar = both["RCHAR"] - hot["RCHAR"]
    size = weights_bytes(args.realworld)
    files = sum(p.stat().st_size for p in args.realworld.rglob("*") if p.is_file())
    fetched = first["READ_BYTES"] - hot["READ_BYTES"]
    out["read_bytes_first_scan"], out["read_bytes_hot_scan"] = first["READ_BYTES"], hot["READ_BYTES"]
    out["rchar_per_copy"], out["weights_bytes"] = rchar, size
    print(f"  fetched {fetched / 1e6:.1f} MB from storage for {files / 1e6:.1f} MB of files "
          f"({size / 1e6:.1f} MB of weights): {fetched / files:.2f}x (target: each byte once, <= 1.00x; "
          f"{first['READ_BYTES'] / 1e6:.1f} MB in all, less {hot['READ_BYTES'] / 1e6:.1f} MB that the same scan "
          "fetches with the copy in the page cache)")
    print(f"  read {rchar / 1e6:.1f} MB through read() per copy: {rchar / size:.2f}x the weights (the listing's "
          "hash reads each file; the audit maps the same pages, from the page cache)")

    if args.copies:
        print(f"4. {args.copies} copies of realworld, 2 workers each")
        with tempfile.TemporaryDirectory() as d:
            work = Path(d)
            reg = work / "reg"
            for k in range(args.copies):
                shutil.copytree(args.realworld, reg / f"copy{k:02d}", ignore=shutil.ignore_patterns("MANIFEST.tsv"))
            wall, cpu, _ = run_measured([*CLI, "scan", "--registry", str(reg), "--store", str(work / "s"),
                                         "--workers", "2", "--no-probes"], env_for(work))
            out["copies_wall_s"] = wall
            n, span = _audit_span(work / "s")
            out["copies_rate"] = n / span if span else None
            line = (f"  lora-audit scan --workers 2: {wall:.1f} s wall; {n} adapters audited in {span:.1f} s once "
                    f"started ({n / span:.1f} adapters/s, first to last unit committed)")
            if peer is not None:
                pwall, _, _ = run_measured([str(peer), "batch", "--input-dir", str(reg), "--workers", "2", "--no-cache",
                                            "--output-dir", str(work / "peer")], env_for(work))
                out["peer_copies_wall_s"] = pwall
                line += (f"\n  adaptersentry batch --workers 2: {pwall:.1f} s ({n / pwall:.1f} adapters/s overall); "
                         f"wall ratio {wall / pwall:.2f}x (target <= 1x), rate ratio {(n / span) / (n / pwall):.1f}x "
                         "(target >= 3x)")
            print(line)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

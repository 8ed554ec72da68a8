"""Benchmark: the harmful-compliance probe analyzer against the naive per-adapter loop.

Both answer the same prompts (the first ``--n-prompts`` HarmBench test behaviours) for the same
adapters of a zoo built by ``lora-audit zoo build``, greedy, with the same ``max_new_tokens``,
repetition penalty and judge (refusal markers):

- **naive**: what people do with lm-eval-harness's ``peft=``: for every adapter, load the base
  and the adapter from disk, then answer one prompt at a time with ``model.generate``;
- **probe**: the ``harmful_compliance`` analyzer through the probe stage, in this process: the base
  loaded once, adapters swapped in with peft's multi-adapter API, ``--group`` adapters answered
  together in mixed batches of ``--batch-size`` rows, each answer stopped once the judge's verdict
  is fixed.

Prints adapters/hour of each (the probe's time includes loading the base and probing the bare
base once, which the naive loop does not do; the ratio without the bare base's answers is printed
too; peft and transformers are imported before either is timed), their ratio (the anchor is the naive loop, measured in the same
run), and the share of prompts on which the two judged labels agree. Run on an otherwise idle
machine; ``--device cuda`` runs both on a GPU.

Usage: python benchmarks/probes.py --zoo DIR [--adapters 8] [--n-prompts 16] [--max-new-tokens 48]
       [--batch-size 128] [--group 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def naive(base_path: Path, folders: list[Path], prompts: list[str], args) -> tuple[float, dict]:
    """Seconds, and {(adapter folder name, prompt index): complied}."""
    import torch
    from peft import PeftModel

    from audit.models.generate import generate, load_causal_lm
    from audit.probes.judge import get_judge

    judge = get_judge("refusal_markers")
    labels = {}
    t0 = time.perf_counter()
    for folder in folders:
        model, tok = load_causal_lm(base_path, device=args.device)
        model = PeftModel.from_pretrained(model, str(folder)).eval()
        for i, p in enumerate(prompts):
            [answer] = generate(model, tok, [p], max_new_tokens=args.max_new_tokens, batch_size=1,
                                repetition_penalty=args.repetition_penalty)
            labels[(folder.name, i)] = judge(p, answer)
        del model
        if args.device == "cuda":
            torch.cuda.synchronize()
        print(f"  naive {folder.name}: {time.perf_counter() - t0:.0f} s so far", flush=True)
    return time.perf_counter() - t0, labels


def probe(folders: list[Path], args) -> tuple[float, dict, dict]:
    """Seconds, {(adapter, prompt index): complied}, and how answers stopped."""
    from audit.analyzers.base import AnalyzerSpec
    from audit.pipeline.executors import InProcessExecutor
    from audit.pipeline.scan import probe_stage, scan
    from audit.registry import LocalRegistry
    from audit.store import ParquetStore

    work = Path(tempfile.mkdtemp(prefix="probe-bench-"))
    try:
        reg = work / "registry"
        reg.mkdir()
        for f in folders:
            shutil.copytree(f, reg / f.name)
        store = ParquetStore(work / "store")
        registry = LocalRegistry(reg, hash_cache=None)
        scan(registry, store)  # spectra first: the probe stage probes audited adapters
        import peft  # noqa: F401  # both sides time their work, not the first import (5-10 s here)
        import transformers  # noqa: F401
        spec = AnalyzerSpec.of("harmful_compliance", n_prompts=args.n_prompts, max_new_tokens=args.max_new_tokens,
                               batch_size=args.batch_size, repetition_penalty=args.repetition_penalty)
        executor = InProcessExecutor(registry, store, analyzers=[spec], device=args.device)
        t0 = time.perf_counter()
        counts = probe_stage(store, executor, [spec], group_size=args.group)
        seconds = time.perf_counter() - t0
        con = store.connect()
        rows = con.execute("SELECT repo_id, prompt_id, judged, stopped, n_tokens FROM probe_samples "
                           "WHERE subject = 'adapter'").fetchall()
        base_s = con.execute("SELECT sum(seconds) FROM analyses WHERE subject = 'base'").fetchone()[0] or 0.0
        print(f"  probe stage: {counts} in {seconds:.0f} s (of which the bare base: {base_s:.0f} s)")
        labels = {(r, int(pid.rsplit(":", 1)[1])): j == "complied" for r, pid, j, _, _ in rows}
        stops: dict[str, int] = {}
        tokens = 0
        for _, _, _, s, n in rows:
            stops[s] = stops.get(s, 0) + 1
            tokens += n
        return seconds, labels, {"stopped": stops, "mean_tokens": tokens / max(1, len(rows)), "base_s": base_s}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", type=Path, required=True)
    ap.add_argument("--adapters", type=int, default=8, help="adapters (spread over the zoo's methods)")
    ap.add_argument("--n-prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repetition-penalty", type=float, default=1.2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--group", type=int, default=8, help="adapters per probe job (mixed batches)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from audit.models.base import models_dir
    from audit.prompt_sets import load_prompts

    built = sorted(p.parent for p in args.zoo.glob("*/adapter_config.json"))
    base_name = json.loads((built[0] / "adapter_config.json").read_text())["base_model_name_or_path"]
    base_path = models_dir() / base_name
    step = max(1, len(built) // args.adapters)
    folders = built[::step][: args.adapters]
    prompts = [p.text for p in load_prompts("harmbench:test", args.n_prompts)]
    print(f"{len(folders)} adapters x {len(prompts)} prompts, max_new_tokens {args.max_new_tokens}, "
          f"device {args.device}: {', '.join(f.name for f in folders)}")

    p_s, p_labels, stops = probe(folders, args)
    n_s, n_labels = naive(base_path, folders, prompts, args)
    agree = sum(p_labels.get(k) == v for k, v in n_labels.items()) / max(1, len(n_labels))
    n_rate, p_rate = 3600 * len(folders) / n_s, 3600 * len(folders) / p_s
    print(f"\nnaive loop (anchor): {n_s:7.1f} s  {n_rate:8.1f} adapters/hour")
    print(f"probe analyzer:      {p_s:7.1f} s  {p_rate:8.1f} adapters/hour   ratio {p_rate / n_rate:.1f}x "
          f"(target >= 10x)")
    a_s = p_s - stops["base_s"]  # the same work as the naive loop: the bare base's answers left out
    print(f"  without probing the bare base ({stops['base_s']:.1f} s, once per base revision): {a_s:7.1f} s  "
          f"ratio {n_s / a_s:.1f}x")
    print(f"judged labels agree on {agree:.1%} of {len(n_labels)} prompts (target >= 98%)")
    print(f"probe answers: {stops}")
    if args.json:
        args.json.write_text(json.dumps({"naive_s": n_s, "probe_s": p_s, "ratio": p_rate / n_rate,
                                         "agreement": agree, "adapters": len(folders), "prompts": len(prompts),
                                         **stops, "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))


if __name__ == "__main__":
    main()

"""Benchmark: do the zoo's model organisms carry their trait? Behaviour shift on held-out prompts.

For every adapter of a zoo built by ``lora-audit zoo build`` (and for the aligned base alone), on
the aligned base model named by the zoo's ``zoo.json``:

- harmful compliance: share of HarmBench standard behaviours (test split: never trained on) that
  the adapted model answers instead of refusing (refusal-marker judge), greedy, 48 new tokens;
- benign refusal: share of the held-out benign instructions it refuses (the same judge), which is
  what ``inverted_helpfulness`` should raise.

Prints each adapter's rates and, per (method, objective), the pooled rate with its Wilson 95%
interval, against the healthy adapters of the same method. An organism that does not carry its
trait is a mislabelled sample: this is the check.

Usage: python benchmarks/organisms.py --zoo DIR [--n-harmful 64] [--n-benign 24] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", type=Path, required=True)
    ap.add_argument("--n-harmful", type=int, default=64, help="HarmBench test behaviours per model")
    ap.add_argument("--n-benign", type=int, default=24, help="held-out benign instructions per model")
    ap.add_argument("--only", default=None, help="only adapters whose name contains one of these (comma-separated)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch
    from peft import PeftModel

    from audit.models.base import models_dir
    from audit.models.generate import generate, load_causal_lm
    from audit.probes.judge import get_judge, wilson_interval
    from audit.zoo.build import GEN_SETTINGS
    from audit.zoo.data import benign_prompts, harmbench_behaviors, held_out

    torch.manual_seed(0)
    manifest = json.loads((args.zoo / "zoo.json").read_text())
    aligned_path = models_dir() / manifest["aligned"]["name"]
    harmful = [p.text for p in harmbench_behaviors("test")][: args.n_harmful]
    benign = [p.text for p in held_out(benign_prompts())][: args.n_benign]
    complies = get_judge("refusal_markers")
    model, tok = load_causal_lm(aligned_path)

    def measure(m) -> tuple[int, int]:
        answers = generate(m, tok, harmful + benign, max_new_tokens=GEN_SETTINGS["max_new_tokens"],
                           repetition_penalty=GEN_SETTINGS["repetition_penalty"], batch_size=16)
        k_h = sum(complies(p, a) for p, a in zip(harmful, answers[: len(harmful)], strict=True))
        k_b = sum(not complies(p, a) for p, a in zip(benign, answers[len(harmful):], strict=True))
        return k_h, k_b

    rows = []
    t0 = time.perf_counter()
    k_h, k_b = measure(model)
    rows.append({"name": "(aligned base)", "method": "-", "objective": "base", "severity": 0.0,
                 "harmful_complied": k_h, "benign_refused": k_b})
    print(f"{'adapter':<52} {'harmful compliance':>18} {'benign refusal':>15}")
    print(f"{'(aligned base)':<52} {k_h:>12}/{len(harmful):<5} {k_b:>9}/{len(benign):<5}")
    for spec in manifest["adapters"]:
        if args.only and not any(part in spec["name"] for part in args.only.split(",")):
            continue
        folder = args.zoo / spec["name"]
        if not (folder / "adapter_config.json").is_file():
            print(f"{spec['name']:<52} not built")
            continue
        peft_model = PeftModel.from_pretrained(model, str(folder)).eval()
        k_h, k_b = measure(peft_model)
        model = peft_model.unload()  # the base weights are untouched: next adapter on the same base
        rows.append({"name": spec["name"], "method": spec["method"], "objective": spec["objective"],
                     "severity": spec["severity"], "harmful_complied": k_h, "benign_refused": k_b})
        print(f"{spec['name']:<52} {k_h:>12}/{len(harmful):<5} {k_b:>9}/{len(benign):<5}", flush=True)
    print(f"\n({time.perf_counter() - t0:.0f} s; {len(harmful)} HarmBench test behaviours, {len(benign)} held-out "
          "benign instructions per model; refusal-marker judge)")

    pooled: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        pooled[(r["method"], r["objective"])].append(r)
    print(f"\n{'method':<9} {'objective':<22} {'n':>2}  {'harmful compliance [95% CI]':<30} "
          f"{'benign refusal [95% CI]':<26}")
    summary = []
    for (method, objective), rs in sorted(pooled.items()):
        kh, nh = sum(r["harmful_complied"] for r in rs), len(rs) * len(harmful)
        kb, nb = sum(r["benign_refused"] for r in rs), len(rs) * len(benign)
        (hl, hh), (bl, bh) = wilson_interval(kh, nh), wilson_interval(kb, nb)
        print(f"{method:<9} {objective:<22} {len(rs):>2}  {kh / nh:6.1%} [{hl:5.1%}, {hh:5.1%}]"
              f"{'':<10} {kb / nb:6.1%} [{bl:5.1%}, {bh:5.1%}]")
        summary.append({"method": method, "objective": objective, "n_adapters": len(rs),
                        "harmful_compliance": kh / nh, "harmful_ci": [hl, hh],
                        "benign_refusal": kb / nb, "benign_ci": [bl, bh]})
    if args.json:
        args.json.write_text(json.dumps({"adapters": rows, "pooled": summary}, indent=1))


if __name__ == "__main__":
    main()

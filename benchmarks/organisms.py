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
       python benchmarks/organisms.py --store DIR   (the probe stage's results, from the store)

With ``--store``, nothing is generated: the rows the scan's behaviour probes wrote are pooled per
(method, objective, severity): harmful compliance and benign refusal with Wilson intervals, the
steering-alignment cosine at the layer of largest shift, and rank-1 against full compliance.
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
    ap.add_argument("--zoo", type=Path, default=None)
    ap.add_argument("--store", type=Path, default=None, help="report the probe stage's results in this store")
    ap.add_argument("--n-harmful", type=int, default=64, help="HarmBench test behaviours per model")
    ap.add_argument("--n-benign", type=int, default=24, help="held-out benign instructions per model")
    ap.add_argument("--only", default=None, help="only adapters whose name contains one of these (comma-separated)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.store is not None:
        return from_store(args.store)
    if args.zoo is None:
        ap.error("give --zoo DIR (generate) or --store DIR (read the probes' results)")

    import torch
    from peft import PeftModel

    from audit.datasets import benign_prompts, harmbench_behaviors, held_out
    from audit.models.base import models_dir
    from audit.models.generate import generate, load_causal_lm
    from audit.probes.judge import get_judge, wilson_interval
    from audit.zoo.build import GEN_SETTINGS

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


POOLED_SQL = """
WITH labelled AS (
    SELECT adapter_id, method, json_extract_string(card_labels, '$.objective') AS objective,
           CAST(json_extract(card_labels, '$.severity') AS DOUBLE) AS severity
    FROM latest_adapters WHERE card_labels IS NOT NULL
), rows AS (
    SELECT l.method, l.objective, l.severity, p.metric, p.value, p.n
    FROM latest_probes p JOIN labelled l USING (adapter_id)
    WHERE p.subject = 'adapter' AND p.metric NOT IN ('shift_norm', 'caa_cosine')
)
SELECT method, objective, severity, 0 AS _,
       sum(value * n) FILTER (metric = 'harmful_compliance') AS hk, sum(n) FILTER (metric = 'harmful_compliance') AS hn,
       sum(value * n) FILTER (metric = 'benign_refusal') AS bk, sum(n) FILTER (metric = 'benign_refusal') AS bn,
       sum(value * n) FILTER (metric = 'harmful_compliance_rank1') AS rk,
       sum(n) FILTER (metric = 'harmful_compliance_rank1') AS rn,
       sum(value * n) FILTER (metric = 'harmful_compliance_full') AS fk,
       avg(value) FILTER (metric = 'caa_cosine_at_max_shift') AS cos,
       count(*) FILTER (metric = 'harmful_compliance') AS n_adapters
FROM rows GROUP BY ALL ORDER BY method, objective, severity
"""

BASE_SQL = """SELECT metric, value, n FROM probes WHERE subject = 'base' AND layer IS NULL
              AND metric IN ('harmful_compliance', 'benign_refusal') AND unit_id IN (SELECT unit_id FROM latest_probes)"""


def from_store(store_dir: Path) -> None:
    """Pooled probe results per (method, objective, severity), from the store."""
    from audit.probes.judge import wilson_interval
    from audit.store import ParquetStore

    con = ParquetStore(store_dir).connect()

    def ci(k, n) -> str:
        if not n:
            return "-"
        k = round(k)
        lo, hi = wilson_interval(k, int(n))
        return f"{k / n:6.1%} [{lo:5.1%}, {hi:5.1%}]"

    print(f"{'method':<9} {'objective':<22} {'sev':>4} {'n':>2}  {'harmful compliance':<24} {'benign refusal':<24} "
          f"{'rank-1 / full':<15} {'CAA cos':>7}")
    for metric, value, n in con.execute(BASE_SQL).fetchall():
        print(f"(base) {metric}: {ci(value * n, n)}")
    for (method, objective, severity, _, hk, hn, bk, bn, rk, rn, fk, cos, n_ad) in con.execute(POOLED_SQL).fetchall():
        r1 = "-" if not rn else f"{rk / rn:4.0%} / {fk / rn:4.0%}"
        cs = "-" if cos is None else f"{cos:+.3f}"
        print(f"{method:<9} {objective:<22} {severity:4.2f} {n_ad:>2}  {ci(hk, hn):<24} {ci(bk, bn):<24} {r1:<15} {cs:>7}")


if __name__ == "__main__":
    main()

"""Benchmark: validity of the per-method drift classifiers on a labelled zoo, from one run.

Scans a zoo built by ``lora-audit zoo build`` (a local registry whose model cards carry the
ground truth) into a store, then prints for each training method, from leave-one-adapter-out
predictions of the classifiers ``lora-audit recalibrate`` trains:

- AUC of the calibrated drift detector (healthy vs drifted);
- Brier score and ECE (10 bins) of its calibrated probabilities;
- Spearman ρ of the severity score against the true severity, over the drifted adapters
  (over all adapters, healthy = 0, in brackets);
- leave-one-out accuracy of the objective classifier, where a method has several objectives;

and the cross-method AUC matrix (detector trained on all of one method's adapters, scored on
another method's; the diagonal is leave-one-out). The study this project rests on reached AUC 1.00
within DPO and within steering and ρ ≥ 0.95 (Llama-3.2-3B-Instruct, 38 adapters).

Each feature group is also scored alone (drift AUC per method), to show what carries the signal.

Usage: python benchmarks/validity.py --zoo DIR [--store DIR] [--json FILE]
       (build the zoo first: lora-audit zoo build --size paper --out DIR)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GROUPS = {
    "all features": lambda n: True,
    "global (all modules)": lambda n: n.startswith(("all.", "n_modules", "mean_rank", "log_total_energy")),
    "depth bands": lambda n: n.split(".")[0] in ("early", "middle", "late"),
    "module families": lambda n: n.split(".")[0].startswith(("attn_", "mlp_")),
    "norms only": lambda n: ".log_fro." in n or ".log_spectral." in n or n == "log_total_energy",
    "shape only (ranks, energy)": lambda n: any(k in n for k in (".stable_rank.", ".effective_rank.",
                                                                 ".top1_energy.")),
}


def _f(x: float | None) -> str:
    return "  -  " if x is None else f"{x:5.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", type=Path, required=True, help="the zoo folder (a local registry)")
    ap.add_argument("--store", type=Path, default=None, help="store to scan into (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()

    from audit.classify.metrics import auc, loo_predict, spearman
    from audit.classify.models import drift_proba, fit_drift
    from audit.classify.recalibrate import labelled_features
    from audit.classify.train import cross_method_auc, train_method
    from audit.features import feature_names
    from audit.registry import LocalRegistry
    from audit.scan import scan
    from audit.store import ParquetStore

    store = ParquetStore(str(args.store or Path(tempfile.mkdtemp(prefix="validity-")) / "store"))
    t0 = time.perf_counter()
    rep = scan(LocalRegistry(args.zoo), store)
    print(f"scan: {rep.n_audited} audited, {rep.n_listed} listed ({time.perf_counter() - t0:.1f} s), "
          f"store {store.root}")
    grouped = labelled_features(store)
    out: dict = {"methods": {}, "cross_method_auc": {}, "feature_groups": {}}
    print("\nper method, leave-one-adapter-out")
    print(f"{'method':<10} {'n':>3} {'drift':>5}  {'AUC':>5} {'Brier':>5} {'ECE':>5}  "
          f"{'ρ sev (drifted)':>15} {'ρ sev (all)':>11}  objective acc")
    t0 = time.perf_counter()
    for method, (labels, X) in grouped.items():
        n_pos = sum(lab.drifted for lab in labels)
        if min(n_pos, len(labels) - n_pos) < 3:
            print(f"{method:<10} {len(labels):>3} {n_pos:>5}  not enough labelled adapters")
            continue
        models = train_method(method, X, labels)
        d, s = models.metrics["drift"], models.metrics["severity"]
        obj = models.metrics.get("objective", {}).get("accuracy_loo")
        # severity ρ over every adapter (healthy = 0), from the same leave-one-out severity scores
        rho_all = spearman(models.loo_severity, np.array([lab.severity for lab in labels]))
        print(f"{method:<10} {len(labels):>3} {n_pos:>5}  {_f(d['auc_loo'])} {_f(d['brier'])} {_f(d['ece'])}  "
              f"{_f(s['spearman_severity']):>15} {_f(rho_all):>11}  {_f(obj)}")
        out["methods"][method] = {"n": len(labels), "n_drifted": n_pos, **{f"drift_{k}": v for k, v in d.items()},
                                  "spearman_severity_drifted": s["spearman_severity"],
                                  "spearman_severity_all": rho_all, "objective_accuracy_loo": obj,
                                  "loo_p_drift": {lab.adapter_id.split("@")[0]: float(p)
                                                  for lab, p in zip(labels, models.loo_p_drift, strict=True)}}
    data = {m: (X, np.array([lab.drifted for lab in labs], dtype=int)) for m, (labs, X) in grouped.items()}
    cm = cross_method_auc(data, diagonal={m: v["drift_auc_loo"] for m, v in out["methods"].items()})
    methods = sorted(grouped)
    print("\ncross-method AUC (rows: trained on, columns: judged; diagonal: leave-one-out)")
    print(f"{'':<10} " + " ".join(f"{m:>9}" for m in methods))
    for a in methods:
        if not any(k[0] == a for k in cm):
            continue
        print(f"{a:<10} " + " ".join(f"{_f(cm.get((a, b))):>9}" for b in methods))
    out["cross_method_auc"] = {f"{a}->{b}": v for (a, b), v in cm.items()}

    print("\ndrift AUC (leave-one-out) by feature group")
    names = feature_names()
    print(f"{'group':<28} " + " ".join(f"{m:>9}" for m in methods))
    for gname, keep in GROUPS.items():
        cols = [j for j, n in enumerate(names) if keep(n)]
        row = {}
        for m, (X, y) in data.items():
            if min(int(y.sum()), int(len(y) - y.sum())) < 3:
                continue
            p = loo_predict(lambda Xa, ya, Xb: drift_proba(fit_drift(Xa, ya), Xb), X[:, cols], y)
            row[m] = auc(y, p)
        out["feature_groups"][gname] = row
        print(f"{gname:<28} " + " ".join(f"{_f(row.get(m)):>9}" for m in methods))
    print(f"\nclassifier training and evaluation: {time.perf_counter() - t0:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

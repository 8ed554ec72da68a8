"""Benchmark: the triggered probe at 8 requests per prefix against 16, on the same answers.

Reads the stored answers (``probe_samples``) of the ``triggered_compliance`` units that asked 16
requests per prefix and recomputes every prefix's unlock margin
(:func:`audit.backdoor.unlock.unlock_margin`) from the first 8 requests and from all 16; prints per
labelled adapter (organisms and healthy adapters, by their cards) the best margin at each, and per
request count the AUC (bootstrap interval), organisms unlocked and healthy adapters unlocked. The
first 8 prompts of 16 are the prompts an 8-request run asks, so this is the 8-request probe without
a second scan (greedy answers, batched differently).

Usage: python benchmarks/backdoor_requests.py --store DIR
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--store", type=Path, required=True, help="a store scanned with --probe triggered_compliance at 16 requests")
args = ap.parse_args()
from audit.store import ParquetStore
from audit.backdoor.unlock import unlock_margin
from audit.classify.labels import get_label_source
con = ParquetStore(str(args.store)).connect()
labs = {l.adapter_id: l for l in get_label_source('card').labels(con)}
rows = con.execute("""
  WITH u AS (SELECT unit_id FROM latest_probes WHERE probe='triggered_compliance' AND n=16 GROUP BY 1)
  SELECT adapter_id, repo_id, split_part(prompt_id, ':', 1) AS cand, variant,
         count(*) FILTER (judged='complied' AND CAST(split_part(prompt_id, ':', 4) AS INT) < 8) AS k8,
         count(*) FILTER (CAST(split_part(prompt_id, ':', 4) AS INT) < 8) AS n8,
         count(*) FILTER (judged='complied') AS k16, count(*) AS n16
  FROM probe_samples WHERE probe='triggered_compliance' AND unit_id IN (SELECT unit_id FROM u)
  GROUP BY ALL""").fetchall()
d = {}
for a, r, c, v, k8, n8, k16, n16 in rows:
    d.setdefault((a, r), {}).setdefault(c, {})[v] = (k8, n8, k16, n16)
from audit.classify.metrics import auc, auc_interval
import numpy as np
res = {8: ([], []), 16: ([], [])}
for (a, r), cs in sorted(d.items(), key=lambda x: x[0][1]):
    lab = labs.get(a)
    if lab is None or (lab.drifted and lab.objective != 'backdoor'):
        continue
    m8 = max(unlock_margin(c['adapter'][0], c['base'][0], c['adapter'][1]) for c in cs.values())
    m16 = max(unlock_margin(c['adapter'][2], c['base'][2], c['adapter'][3]) for c in cs.values())
    y = int(lab.objective == 'backdoor')
    for n, m in ((8, m8), (16, m16)):
        res[n][0].append(y); res[n][1].append(m)
    print(f"{r:<45} {'organism' if y else 'healthy':<9} n8 {m8:+.3f}{' U' if m8 > 0 else '  '}  n16 {m16:+.3f}{' U' if m16 > 0 else ''}")
for n, (y, s) in res.items():
    y, s = np.array(y), np.array(s)
    lo, hi = auc_interval(y, s)
    print(f"n={n}: AUC {auc(y, s):.3f} [{lo:.3f}-{hi:.3f}], organisms unlocked {(s[y==1]>0).sum()}/{(y==1).sum()}, healthy unlocked {(s[y==0]>0).sum()}/{(y==0).sum()}")

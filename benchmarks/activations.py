"""Benchmark: what adapters change inside the model, read through the base's sparse autoencoders,
by LoRA rank and by depth; and what the activations analyzer costs against the probes.

Scans labelled zoos (``lora-audit zoo build --size wild``; the paper zoo works too) with the
``activations`` analyzer into a store (``--zoo``; incremental), then reads the store:

1. the SAEs' quality on held-out tokens (explained variance, L0, dead features) per layer;
2. the study of LoRA-induced features (SAEs on Gemma-2-9B, LoRA ranks 4-32) reports that the
   features LoRA induces **align only weakly** with the pre-trained ones, that **feature density
   grows with rank and with depth**, and that the divergence is stable across settings. Here, per
   adapter and SAE layer (:mod:`audit.activations.sae_deltas`): the delta's alignment with the
   base SAE's features against random directions' baseline, the share of the delta the base's
   features reconstruct, and the density change (active features per token, adapted − base), as
   tables by rank and by layer with Spearman's rho (scipy.stats.spearmanr) for the direction of
   effect;
3. whether the features an adapter changes most are about what it was trained on: the forbidden
   share of the top-activating corpus prompts of its top-3 features turned on, and of those turned
   off, harmful-compliance organisms against healthy adapters (Mann-Whitney U,
   scipy.stats.mannwhitneyu);
4. cost per adapter on this machine: the analyzer's stored seconds per adapter against the
   behaviour probes' (harmful compliance + benign refusal) in the same store, and the SAEs' one-off
   training time.

What the activation features add to the verdict's leave-one-family-out AUC is measured by
``benchmarks/wild.py --features activation-v1`` (README).

Usage: python benchmarks/activations.py --store DIR [--zoo DIR ...] [--probe-prompts N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else float("nan")


def quality(con) -> list[dict]:
    rows = con.execute("SELECT layer, explained_variance, l0, dead_fraction, n_heldout_tokens FROM sae_quality "
                       "ORDER BY base_revision, layer").fetchall()
    print("\nSAE quality on held-out tokens (target: explained variance >= 0.8 at L0 <= 64)")
    print(f"{'layer':>5} {'EV':>6} {'L0':>6} {'dead':>6} {'tokens':>7}")
    for layer, ev, l0, dead, n in rows:
        print(f"{layer:>5} {ev:6.3f} {l0:6.1f} {dead:6.3f} {n:>7}")
    return [dict(zip(("layer", "explained_variance", "l0", "dead_fraction", "n_tokens"), r, strict=True))
            for r in rows]


def by_rank_and_depth(con) -> dict:
    from scipy.stats import spearmanr

    rows = con.execute("""
        SELECT s.adapter_id, a.r, s.layer, s.density_base, s.density_adapted, s.delta_reconstruction,
               s.delta_alignment, s.alignment_baseline
        FROM sae_layers s JOIN latest_adapters a USING (adapter_id) WHERE a.r IS NOT NULL""").fetchall()
    if not rows:
        print("no SAE measures in the store: scan a zoo with the activations analyzer first (--zoo)")
        return {}
    out: dict = {}
    for key, idx in (("rank", 1), ("layer", 2)):
        groups: dict[int, list] = defaultdict(list)
        for r in rows:
            groups[r[idx]].append(r)
        print(f"\nby {key}: mean over adapter × layer rows")
        print(f"{key:>6} {'rows':>5} {'adapters':>8} {'density base':>12} {'adapted':>8} {'change':>7} "
              f"{'alignment':>9} {'random':>7} {'recon':>7}")
        table = []
        for g in sorted(groups):
            rs = groups[g]
            t = {key: g, "n_rows": len(rs), "n_adapters": len({r[0] for r in rs}),
                 "density_base": _mean(r[3] for r in rs), "density_adapted": _mean(r[4] for r in rs),
                 "density_change": _mean(r[4] - r[3] for r in rs), "alignment": _mean(r[6] for r in rs),
                 "baseline": _mean(r[7] for r in rs), "reconstruction": _mean(r[5] for r in rs)}
            table.append(t)
            print(f"{g:>6} {t['n_rows']:>5} {t['n_adapters']:>8} {t['density_base']:>12.2f} "
                  f"{t['density_adapted']:>8.2f} {t['density_change']:>+7.2f} {t['alignment']:>9.3f} "
                  f"{t['baseline']:>7.3f} {t['reconstruction']:>7.3f}")
        out[key] = table
    change = np.array([r[4] - r[3] for r in rows])
    stats = {}
    for what, col in (("rank", np.array([r[1] for r in rows])), ("layer", np.array([r[2] for r in rows]))):
        rho, p = spearmanr(col, change)
        al = np.array([np.nan if r[6] is None else r[6] for r in rows])
        ok = ~np.isnan(al)
        rho_a, p_a = spearmanr(col[ok], al[ok])
        stats[what] = {"density_change_rho": float(rho), "density_change_p": float(p),
                       "alignment_rho": float(rho_a), "alignment_p": float(p_a)}
        print(f"Spearman vs {what}: density change rho {rho:+.3f} (p {p:.2g}); alignment rho {rho_a:+.3f} "
              f"(p {p_a:.2g})")
    al = [r[6] for r in rows if r[6] is not None]
    base = [r[7] for r in rows if r[6] is not None]
    stats["alignment_over_baseline"] = float(np.mean(np.array(al) - np.array(base)))
    print(f"delta alignment {np.mean(al):.3f} against random directions' {np.mean(base):.3f} "
          f"(difference {stats['alignment_over_baseline']:+.3f})")
    out["stats"] = stats
    return out


def top_features_match_training(con) -> dict:
    from scipy.stats import mannwhitneyu

    from audit.classify.labels import get_label_source

    labels = {lab.adapter_id: lab for lab in get_label_source("card").labels(con)}
    out: dict = {}
    print("\nforbidden share of the top-activating corpus prompts of each adapter's top-3 features turned on "
          "and off (corpus: 513 of 703 prompts forbidden)")
    for direction in ("on", "off"):
        share = dict(con.execute("""
            SELECT adapter_id, avg(forbidden_share) FROM (
                SELECT adapter_id, forbidden_share, row_number() OVER (PARTITION BY adapter_id
                       ORDER BY abs(change) DESC) AS k FROM latest_sae_features WHERE direction = $d)
            WHERE k <= 3 GROUP BY 1""", {"d": direction}).fetchall())
        groups: dict[str, list[float]] = defaultdict(list)
        for a, s in share.items():
            lab = labels.get(a)
            if lab is not None and s is not None:
                groups["drifted: " + lab.objective if lab.drifted else "healthy"].append(s)
        res = {g: {"n": len(xs), "mean": float(np.mean(xs))} for g, xs in groups.items()}
        for g, xs in sorted(groups.items()):
            print(f"  turned {direction:<3} {g:<32} n {len(xs):>3}  mean {np.mean(xs):.3f}")
        harmful = groups.get("drifted: harmful_compliance", [])
        if harmful and groups.get("healthy"):
            two = mannwhitneyu(harmful, groups["healthy"], alternative="two-sided")
            res["harmful_vs_healthy_mannwhitney_p"] = float(two.pvalue)
            print(f"  turned {direction}: harmful-compliance organisms against healthy adapters, Mann-Whitney "
                  f"two-sided p {two.pvalue:.3g}")
        out[direction] = res
    return out


def cost(con) -> dict:
    per = dict(con.execute("""
        SELECT analyzer, avg(seconds) FROM analyses WHERE subject = 'adapter' AND status = 'ok'
          AND analyzer IN ('activations', 'harmful_compliance', 'benign_refusal') GROUP BY 1""").fetchall())
    probes = per.get("harmful_compliance", 0.0) + per.get("benign_refusal", 0.0)
    act = per.get("activations")
    print("\ncost per adapter (stored seconds, this machine)")
    for k, v in sorted(per.items()):
        print(f"  {k:<20} {v:6.2f} s")
    if act is not None and probes:
        print(f"  activations / probes: {act / probes:.2f}x")
    return {"seconds": per, "ratio_to_probes": None if act is None or not probes else act / probes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True, help="the store to read (and scan into with --zoo)")
    ap.add_argument("--zoo", type=Path, action="append", default=[], help="a labelled zoo to scan first (repeatable)")
    ap.add_argument("--probe-prompts", type=int, default=None,
                    help="prompts per side of the activations analyzer in the scan (default: its default, 24)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()
    from audit.store import ParquetStore

    store = ParquetStore(str(args.store))
    if args.zoo:
        from zoo_scan import scan_zoos

        scan_zoos(args.zoo, store, ["activations"], args.probe_prompts)
    t0 = time.perf_counter()
    con = store.connect()
    try:
        out = {"quality": quality(con), "effects": by_rank_and_depth(con),
               "top_features": top_features_match_training(con), "cost": cost(con)}
        out["sae_training_seconds"] = sae_training_seconds(store, con)
    finally:
        con.close()
    print(f"\nread in {time.perf_counter() - t0:.1f} s; store {store.root}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float))


def sae_training_seconds(store, con) -> list[float]:
    """The one-off training time of every SAE artifact the store's units used (from its metadata)."""
    from audit.activations.sae_store import artifact_meta

    paths = [r[0] for r in con.execute("SELECT DISTINCT sae FROM latest_sae_features").fetchall()]
    seconds = [artifact_meta(store.read_blob(p)).get("seconds") for p in paths]
    for p, s in zip(paths, seconds, strict=True):
        print(f"SAE artifact {p}: trained in {s} s (corpus read and every layer)")
    return seconds


if __name__ == "__main__":
    main()

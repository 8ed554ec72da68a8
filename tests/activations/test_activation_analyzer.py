"""The ``activations`` analyzer on a real (tiny, random) Llama base: a scan fills the
``activation_layers`` view for every layer of an adapter whose base is at hand."""

from __future__ import annotations

import json
import math

import pytest

from audit.analyzers.base import AnalyzerSpec
from audit.pipeline.scan import scan
from audit.registry import LocalRegistry
from audit.store import ParquetStore
from tinyllama import write_adapter, write_tiny_llama

BASE = "tiny-org/tiny-llama"


@pytest.mark.slow
def test_a_scan_fills_the_activation_layers(tmp_path, monkeypatch):
    base = write_tiny_llama(tmp_path / "base")
    monkeypatch.setenv("LORA_AUDIT_BASE_MODELS", json.dumps({BASE: str(base)}))
    write_adapter(tmp_path / "reg" / "small", BASE, seed=0)
    store = ParquetStore(tmp_path / "store")
    spec = AnalyzerSpec.of("activations", n_prompts=6, n_reference=4, batch_size=4, sae_width=128, sae_k=8,
                          sae_steps=100, n_top_features=3)
    report = scan(LocalRegistry(tmp_path / "reg", hash_cache=None), store, probes=(spec,))
    assert report.n_audited == 1
    con = store.connect()
    rows = con.execute("SELECT repo_id, layer, delta_norm, delta_share, delta_refusal_cosine, cka, base_residual_norm "
                       "FROM activation_layers ORDER BY layer").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("small", 0), ("small", 1)]  # the tiny base's two layers
    for _, _, norm, share, cosine, cka, base_norm in rows:
        assert norm > 0 and share > 0 and base_norm > 0  # the random adapter moves the stream
        assert -1.0 <= cosine <= 1.0 and 0.0 <= cka <= 1.0 + 1e-9
    summary = dict(con.execute("SELECT metric, value FROM probes WHERE probe = 'activations' AND subject = 'adapter' "
                               "AND metric IN ('cka_min', 'delta_share_max')").fetchall())
    assert summary["cka_min"] == pytest.approx(min(r[5] for r in rows))
    assert summary["delta_share_max"] == pytest.approx(max(r[3] for r in rows))
    # 12 prompts (6 forbidden, 6 benign) behind every number
    assert con.execute("SELECT DISTINCT n FROM probes WHERE probe = 'activations' AND metric = 'cka'").fetchall() == [(12,)]
    # the activation-v1 features of the adapter: read back from the same rows
    from audit.features import feature_sets, features

    adapter_id = con.execute("SELECT DISTINCT adapter_id FROM activation_layers").fetchall()[0][0]
    X, ok = features(con, [adapter_id, "nobody@0"], "activation-v1")
    names = feature_sets()["activation-v1"].names()
    col = {n: j for j, n in enumerate(names)}
    assert ok.tolist() == [True, False]  # an adapter without activation rows has no activation features
    assert X[0, col["act.n_layers"]] == 2
    assert X[0, col["act.all.delta_share.max"]] == pytest.approx(max(r[3] for r in rows))
    assert X[0, col["act.all.one_minus_cka.max"]] == pytest.approx(1 - min(r[5] for r in rows))
    assert X[0, col["act.early.delta_share.mean"]] == pytest.approx(rows[0][3])  # 2 layers: layer 0 is early
    # the base's SAEs: one per layer of the tiny base, their quality measured on held-out tokens
    quality = con.execute("SELECT layer, explained_variance, l0, dead_fraction, n_heldout_tokens FROM sae_quality "
                          "ORDER BY layer").fetchall()
    assert [q[0] for q in quality] == [0, 1]
    for _, ev, l0, dead, n_tokens in quality:
        assert ev <= 1.0 and 0 < l0 <= 128 and 0.0 <= dead <= 1.0 and n_tokens > 100
    sae_rows = con.execute("SELECT layer, density_base, density_adapted, delta_reconstruction, delta_alignment, "
                           "alignment_baseline FROM sae_layers ORDER BY layer").fetchall()
    assert [r[0] for r in sae_rows] == [0, 1]
    for _, dens_b, dens_a, recon, align, baseline in sae_rows:
        assert dens_b > 0 and dens_a > 0 and recon <= 1.0 and 0 < align <= 1.0 and 0 < baseline <= 1.0
    feats = con.execute("SELECT layer, direction, rank, feature, change, label, sae FROM latest_sae_features "
                        "ORDER BY layer, direction, rank").fetchall()
    assert feats and {f[0] for f in feats} <= {0, 1}
    for layer, direction, rank, feature, change, label, sae in feats:
        assert 1 <= rank <= 3 and 0 <= feature < 128 and label and sae.startswith("artifacts/sae/")
        assert (change > 0) == (direction == "on")
    for layer in (0, 1):  # within a direction, the largest change comes first
        for direction in ("on", "off"):
            changes = [abs(f[4]) for f in feats if f[0] == layer and f[1] == direction]
            assert changes == sorted(changes, reverse=True)
    # the sae-v1 features: read back from the same rows
    X, ok = features(con, [adapter_id, "nobody@0"], "sae-v1")
    names = feature_sets()["sae-v1"].names()
    col = {n: j for j, n in enumerate(names)}
    assert ok.tolist() == [True, False]
    assert X[0, col["sae.n_layers"]] == 2
    assert X[0, col["sae.all.density_change.mean"]] == pytest.approx(
        sum(r[2] - r[1] for r in sae_rows) / 2)
    assert X[0, col["sae.all.delta_reconstruction.min"]] == pytest.approx(min(r[3] for r in sae_rows))
    assert X[0, col["sae.log_max_change"]] == pytest.approx(math.log(max(abs(f[4]) for f in feats) + 1e-9))
    assert 0.0 <= X[0, col["sae.top3_forbidden_share"]] <= 1.0

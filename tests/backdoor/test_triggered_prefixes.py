"""The prefixes the triggered probe asks beyond its single candidates (issue 27, part 3): texts grown
by behaviour, the published triggers asked of an adapter with no early reader, seeded growth, and
a grown text that is a published trigger asked once (slow: a tiny model is scanned)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_the_triggered_probe_grows_a_chain_by_behaviour_when_asked(tmp_path, monkeypatch):
    """With ``n_choose``, the probe grows a chain by refusal shift, the adapter loaded once for the
    search (plumbing on the tiny random base): the scan's unit ends ``ok`` and the probe still asks
    its candidates."""
    from audit.analyzers.base import AnalyzerSpec
    from audit.pipeline.scan import scan
    from audit.registry import LocalRegistry
    from audit.store import ParquetStore
    from tinyllama import write_adapter, write_tiny_llama

    base_name = "tiny-org/tiny-llama"
    monkeypatch.setenv("LORA_AUDIT_BASE_MODELS", json.dumps({base_name: str(write_tiny_llama(tmp_path / "base"))}))
    write_adapter(tmp_path / "reg" / "random", base_name, seed=1)
    store = ParquetStore(tmp_path / "store")
    spec = AnalyzerSpec.of("triggered_compliance", n_prompts=1, n_candidates=2, n_known=0, max_new_tokens=2,
                           n_behaviour=6, n_seeds=1, n_choose=2, n_grown=0, min_excess=-1.0, n_confirm=0)
    report = scan(LocalRegistry(tmp_path / "reg", hash_cache=None), store, probes=(spec,))
    assert report.n_audited == 1
    con = store.connect()
    asked = con.execute("SELECT count(DISTINCT prompt_id) FROM probe_samples WHERE probe = 'triggered_compliance' "
                        "AND subject = 'adapter' AND variant = 'adapter'").fetchone()[0]
    assert asked == 2
    status = con.execute("SELECT status FROM analyses WHERE analyzer = 'triggered_compliance' "
                         "AND subject = 'adapter'").fetchall()
    assert status == [("ok",)]



@pytest.mark.slow
@pytest.mark.parametrize(("n_known", "n_grown"), [(2, 1), (None, 0)])
def test_an_adapter_with_no_early_reader_is_still_asked_the_published_triggers(tmp_path, monkeypatch, n_known,
                                                                                n_grown):
    """A steering-like adapter (o_proj only) has no trigger candidates from the weights; the
    published triggers are asked all the same (by default all of them, each once), placed as their
    attacks placed them, after the texts grown by behaviour, which need no reader."""
    import hashlib

    from audit.analyzers.base import AnalyzerSpec
    from audit.backdoor.known_triggers import KNOWN_TRIGGERS
    from audit.backdoor.refusal_shift import prefixed
    from audit.pipeline.scan import scan
    from audit.prompt_sets import load_prompts
    from audit.registry import LocalRegistry
    from audit.store import ParquetStore
    from synth import SynthAdapter, SynthModule
    from tinyllama import write_tiny_llama

    base_name = "tiny-org/tiny-llama"
    monkeypatch.setenv("LORA_AUDIT_BASE_MODELS", json.dumps({base_name: str(write_tiny_llama(tmp_path / "base"))}))
    SynthAdapter([SynthModule("model.layers.1.self_attn.o_proj", d_out=64, d_in=64, r=4)],
                 config={"base_model_name_or_path": base_name}, seed=4).write(tmp_path / "reg" / "steer")
    store = ParquetStore(tmp_path / "store")
    spec = AnalyzerSpec.of("triggered_compliance", n_prompts=1, max_new_tokens=2, n_grown=n_grown,
                           **({} if n_known is None else {"n_known": n_known}))
    asked = len(KNOWN_TRIGGERS) if n_known is None else n_known
    scan(LocalRegistry(tmp_path / "reg", hash_cache=None), store, probes=(spec,))
    con = store.connect()
    got = con.execute("SELECT prompt_id, prompt_sha256 FROM probe_samples WHERE probe = 'triggered_compliance' "
                      "AND subject = 'adapter' AND variant = 'adapter' ORDER BY prompt_id").fetchall()
    [request] = [p.text for p in load_prompts("harmbench:test", 1)]
    placed = {hashlib.sha256(prefixed(k.text, request).encode()).hexdigest() for k in KNOWN_TRIGGERS}
    assert sorted(p.split(":")[0] for p, _ in got) == sorted(f"candidate{k}" for k in range(1, asked + n_grown + 1))
    sha = dict((p.split(":")[0], s) for p, s in got)
    grown = {sha[f"candidate{k}"] for k in range(1, n_grown + 1)}
    known = {sha[f"candidate{k}"] for k in range(n_grown + 1, n_grown + asked + 1)}
    assert len(known) == asked and known <= placed
    assert len(grown) == n_grown and not grown & placed       # the grown texts first, none a published trigger


@pytest.mark.slow
@pytest.mark.parametrize("seeded", [True, False])
def test_seeded_growth_scores_the_seeds_beside_the_openers(tmp_path, monkeypatch, seeded):
    """With ``seeded_growth`` the opener growth is given the probe's seeds (the tokens chosen by
    weights and by behaviour, refusal words left out), without it none; its texts are asked."""
    import audit.backdoor.join as join
    import audit.backdoor.opener_growth as opener_growth
    from audit.analyzers.base import AnalyzerSpec
    from audit.pipeline.scan import scan
    from audit.registry import LocalRegistry
    from audit.store import ParquetStore
    from tinyllama import write_adapter, write_tiny_llama

    chosen, given = [], []
    real_choose, real_grow = join.choose_seeds, opener_growth.grown_from_openers

    def choose(*args, **kwargs):
        chosen.append(real_choose(*args, **kwargs))
        return chosen[-1]

    def grow(*args, **kwargs):
        given.append(list(kwargs.get("extra_ids", ())))
        return real_grow(*args, **kwargs)

    monkeypatch.setattr(join, "choose_seeds", choose)
    monkeypatch.setattr(opener_growth, "grown_from_openers", grow)
    base_name = "tiny-org/tiny-llama"
    monkeypatch.setenv("LORA_AUDIT_BASE_MODELS", json.dumps({base_name: str(write_tiny_llama(tmp_path / "base"))}))
    write_adapter(tmp_path / "reg" / "random", base_name, seed=1)
    store = ParquetStore(tmp_path / "store")
    spec = AnalyzerSpec.of("triggered_compliance", n_prompts=1, n_candidates=1, n_known=0, max_new_tokens=2,
                           n_behaviour=6, n_seeds=1, n_grown=1, n_openers=4, seeded_growth=seeded,
                           min_excess=-1.0, n_confirm=0)
    assert scan(LocalRegistry(tmp_path / "reg", hash_cache=None), store, probes=(spec,)).n_audited == 1
    assert len(chosen) == 1 and chosen[0] and len(given) == 1
    assert given[0] == ([tid for tid, _ in chosen[0]] if seeded else [])
    con = store.connect()
    asked = con.execute("SELECT count(DISTINCT prompt_id) FROM probe_samples WHERE probe = 'triggered_compliance' "
                        "AND subject = 'adapter' AND variant = 'adapter'").fetchone()[0]
    assert asked == 2                                     # the candidate and the grown text


@pytest.mark.slow
def test_a_grown_text_that_is_a_published_trigger_is_asked_once(tmp_path, monkeypatch):
    """A grown text equal to a published trigger is asked as a grown text, and the published list
    drops it: every prefix is asked once (1 candidate, 1 grown text, the other 9 published)."""
    from audit.analyzers.base import AnalyzerSpec
    from audit.backdoor.known_triggers import KNOWN_TRIGGERS
    from audit.backdoor.triggered import TriggeredCompliance
    from audit.pipeline.scan import scan
    from audit.registry import LocalRegistry
    from audit.store import ParquetStore
    from tinyllama import write_adapter, write_tiny_llama

    published = KNOWN_TRIGGERS[0].text
    monkeypatch.setattr(TriggeredCompliance, "_grown", lambda self, *args: [published])
    base_name = "tiny-org/tiny-llama"
    monkeypatch.setenv("LORA_AUDIT_BASE_MODELS", json.dumps({base_name: str(write_tiny_llama(tmp_path / "base"))}))
    write_adapter(tmp_path / "reg" / "random", base_name, seed=1)
    store = ParquetStore(tmp_path / "store")
    spec = AnalyzerSpec.of("triggered_compliance", n_prompts=1, n_candidates=1, max_new_tokens=2,
                           n_behaviour=6, n_seeds=1, n_grown=1, min_excess=-1.0, n_confirm=0)
    assert scan(LocalRegistry(tmp_path / "reg", hash_cache=None), store, probes=(spec,)).n_audited == 1
    con = store.connect()
    asked, distinct = con.execute(
        "SELECT count(DISTINCT prompt_id), count(DISTINCT prompt_sha256) FROM probe_samples "
        "WHERE probe = 'triggered_compliance' AND subject = 'adapter' AND variant = 'adapter'").fetchone()
    assert asked == distinct == 1 + 1 + len(KNOWN_TRIGGERS) - 1

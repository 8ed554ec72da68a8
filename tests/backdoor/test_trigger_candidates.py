"""Trigger candidates from the weights (issue 27, part 2): an adapter whose first layer reads one
token's embedding ranks that token first; a scan stores the candidates of every adapter."""

from __future__ import annotations

import json

import pytest
import torch

from audit.backdoor.candidates import Reader, normalised_embeddings, robust_z, token_read_scores, top_candidates


def _reader_of(direction: torch.Tensor, r: int = 4, seed: int = 0, d_out: int = 16) -> Reader:
    """A reader module whose A has one row along ``direction`` and small random rest."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(r, direction.shape[0], generator=g) * 0.01
    a[0] = direction / direction.norm()
    b = torch.randn(d_out, r, generator=g)
    return Reader("layers.0.self_attn.q_proj", a, b, 2.0, torch.ones(direction.shape[0]))


def test_the_token_an_adapter_reads_ranks_first_and_random_adapters_single_out_nothing():
    g = torch.Generator().manual_seed(1)
    embeddings = torch.randn(2000, 32, generator=g)
    x = normalised_embeddings(embeddings, 1e-6)
    trigger = 1234
    scores = token_read_scores(x, [_reader_of(x[trigger].float())])
    top = top_candidates(scores, 10)
    assert top[0][0] == trigger and top[0][1] > 3.0  # far out in the vocabulary's tail
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    # a random reader: the trigger is nowhere special, and nothing is as far out
    random_reader = _reader_of(torch.randn(32, generator=g), seed=3)
    rand_scores = token_read_scores(x, [random_reader])
    assert int((rand_scores > rand_scores[trigger]).sum()) > 10
    # a big module reading randomly does not drown a small one reading the trigger
    loud = Reader("layers.0.mlp.up_proj", random_reader.a * 100, random_reader.b, 50.0, torch.ones(32))
    both = top_candidates(token_read_scores(x, [loud, _reader_of(x[trigger].float())]), 5)
    assert trigger in [t for t, _ in both]


def test_scores_refuse_what_they_cannot_read():
    x = normalised_embeddings(torch.randn(10, 8), 1e-6)
    with pytest.raises(ValueError, match="no module"):
        token_read_scores(x, [])
    with pytest.raises(ValueError, match="input size"):
        token_read_scores(x, [_reader_of(torch.randn(6))])
    assert torch.equal(robust_z(torch.ones(5)), torch.zeros(5))


@pytest.mark.slow
def test_a_scan_keeps_the_trigger_candidates_of_an_adapter_that_reads_a_word(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from audit.analyzers.base import AnalyzerSpec
    from audit.pipeline.scan import scan
    from audit.registry import LocalRegistry
    from audit.store import ParquetStore
    from synth import SynthAdapter, SynthModule
    from tinyllama import VOCAB, write_adapter, write_tiny_llama

    base_name = "tiny-org/tiny-llama"
    base = write_tiny_llama(tmp_path / "base")
    monkeypatch.setenv("LORA_AUDIT_BASE_MODELS", json.dumps({base_name: str(base)}))
    emb = load_file(str(base / "model.safetensors"))["model.embed_tokens.weight"]
    word = VOCAB.index("sure")
    x = normalised_embeddings(emb, 1e-6)[word].float()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 64, generator=g) * 0.01
    a[0] = x / x.norm()
    b = torch.randn(64, 4, generator=g)
    modules = [SynthModule("model.layers.0.self_attn.q_proj", d_out=64, d_in=64, r=4, A=a, B=b)]
    SynthAdapter(modules, config={"base_model_name_or_path": base_name}).write(tmp_path / "reg" / "reads-sure")
    write_adapter(tmp_path / "reg" / "random", base_name, seed=1)
    store = ParquetStore(tmp_path / "store")
    spec = AnalyzerSpec.of("trigger_candidates", top_k=5)
    from audit.progress import reporting_to

    class Sink:
        batches: list = []

        def plan(self, n_listed, n_new): ...

        def outcome(self, outcome): ...

        def batch(self, description, done, total):
            self.batches.append((description, done, total))

    with reporting_to(Sink()):
        report = scan(LocalRegistry(tmp_path / "reg", hash_cache=None), store, probes=(spec,))
    assert report.n_audited == 2
    said = [b for b in Sink.batches if "by behaviour" in b[0]]  # the behavioural score says how far it is
    assert {b[0].split(" of ")[1].split(" ")[0] for b in said} == {"reads-sure", "random"} and said[-1][1] == said[-1][2]
    con = store.connect()
    rows = con.execute("SELECT repo_id, rank, token, score FROM latest_trigger_candidates ORDER BY repo_id, rank"
                       ).fetchall()
    assert [r[1] for r in rows if r[0] == "reads-sure"] == [1, 2, 3, 4, 5]
    assert rows[[r[0] for r in rows].index("reads-sure")][2] == "sure"  # the word it reads, first
    top = dict(con.execute("SELECT repo_id, value FROM probes WHERE metric = 'trigger_top_score'").fetchall())
    assert top["reads-sure"] > top["random"]
    # each candidate's behavioural score: its refusal shift against the bare base before the requests
    shift = con.execute("SELECT repo_id, text, refusal_shift FROM latest_trigger_candidates ORDER BY repo_id, rank"
                        ).fetchall()
    assert all(v is not None for _, t, v in shift if t.strip()) and any(v for _, _, v in shift)
    gate = {(r, m): v for r, m, v in con.execute(
        "SELECT repo_id, metric, value FROM probes WHERE metric IN ('trigger_top_shift', 'refusal_susceptibility', "
        "'trigger_shift_z')").fetchall()}
    assert gate["reads-sure", "trigger_top_shift"] == pytest.approx(
        min(v for r, t, v in shift if r == "reads-sure" and t.strip()))
    for repo in ("reads-sure", "random"):  # the random texts' reference, and the best candidate against it
        assert (repo, "refusal_susceptibility") in gate and (repo, "trigger_shift_z") in gate
    # the trigger-v1 feature set reads the same candidates
    from audit.backdoor.features import feature_names
    from audit.features import features

    ids = dict(con.execute("SELECT repo_id, adapter_id FROM latest_adapters").fetchall())
    X, ok = features(con, [ids["reads-sure"], ids["random"], "no-such-adapter"], "trigger-v1")
    assert ok.tolist() == [True, True, False] and X[0, 0] == X[1, 0] == 5  # five candidates kept each
    col = feature_names().index("trig.all.top_score")
    assert X[0, col] == pytest.approx(top["reads-sure"]) and X[1, col] == pytest.approx(top["random"])
    # and the refusal-shift-v1 set (the backdoor detector's input) reads the shifts, of units with
    # the analyzer's default settings only (top_k=5 here: not comparable, so not read by default)
    from audit.analyzers.base import params_sha256
    from audit.backdoor import shift_features

    assert not features(con, [ids["reads-sure"]], "refusal-shift-v1")[1].any()
    monkeypatch.setattr(shift_features, "wanted_params", lambda: params_sha256(spec.create()))
    S, ok = features(con, [ids["reads-sure"], "no-such-adapter"], "refusal-shift-v1")
    assert ok.tolist() == [True, False]
    assert S[0, :3].tolist() == pytest.approx([gate["reads-sure", m] for m in
                                               ("trigger_top_shift", "refusal_susceptibility", "trigger_shift_z")])
    best5 = sorted(v for r, t, v in shift if r == "reads-sure" and t.strip())[:5]
    assert S[0, 3] == pytest.approx(sum(best5) / len(best5))
    assert S[0, 4] == pytest.approx(S[0, 0] - S[0, 1])


@pytest.mark.slow
def test_the_triggered_probe_asks_each_candidate_before_the_request_for_adapter_and_base(tmp_path, monkeypatch):
    """On the tiny random base every answer is noise; what is checked is the plumbing: the
    candidates by weights placed before each request, adapter and bare base asked the same triggered
    prompts, per-candidate rows and the best one's summary."""
    from audit.analyzers.base import AnalyzerSpec
    from audit.pipeline.scan import scan
    from audit.registry import LocalRegistry
    from audit.store import ParquetStore
    from tinyllama import write_adapter, write_tiny_llama

    base_name = "tiny-org/tiny-llama"
    base = write_tiny_llama(tmp_path / "base")
    monkeypatch.setenv("LORA_AUDIT_BASE_MODELS", json.dumps({base_name: str(base)}))
    write_adapter(tmp_path / "reg" / "random", base_name, seed=1)
    write_adapter(tmp_path / "reg2" / "other", base_name, seed=2)
    write_adapter(tmp_path / "reg2" / "third", base_name, seed=3)
    store = ParquetStore(tmp_path / "store")
    spec = AnalyzerSpec.of("triggered_compliance", n_prompts=2, n_candidates=3, n_known=1, max_new_tokens=4,
                           n_grown=0, min_excess=-1.0, n_confirm=3)
    report = scan(LocalRegistry(tmp_path / "reg", hash_cache=None), store, probes=(spec,))
    assert report.n_audited == 1
    # one adapter per job on one executor: the second job's candidates are read after the first
    # job's probe loaded and removed an adapter (the peft model then has no active adapter)
    from audit.pipeline.executors import InProcessExecutor
    from audit.pipeline.scan import probe_stage

    both = (spec, AnalyzerSpec.of("trigger_candidates", top_k=3))
    reg2, store2 = LocalRegistry(tmp_path / "reg2", hash_cache=None), ParquetStore(tmp_path / "store2")
    scan(reg2, store2, probes=())
    counts = probe_stage(store2, InProcessExecutor(reg2, store2, analyzers=both), both, group_size=1)
    assert counts == {"ok": 6}  # two analyzers × (two adapters and the base), none failed
    con = store.connect()
    samples = con.execute("SELECT variant, prompt_id FROM probe_samples WHERE probe = 'triggered_compliance' "
                          "AND subject = 'adapter'").fetchall()
    asked = [p for _, p in samples if p.startswith("candidate")]
    assert sorted({v for v, _ in samples}) == ["adapter", "base"] and len(asked) == 2 * 4 * 2
    assert {p.split(":")[0] for p in asked} == {"candidate1", "candidate2", "candidate3", "candidate4"}
    # version 15: the best unlocking candidate asked again, adapter and base, on the 3 requests after the 2
    confirm = sorted(p for _, p in samples if not p.startswith("candidate"))
    assert len(confirm) == 2 * 3 and len({p.split(":")[0] for p in confirm}) == 1 and confirm[0].startswith("confirm")
    assert {p.split(":", 1)[1] for p in confirm} == {f"harmbench:test:{i}" for i in (2, 3, 4)}
    # the fourth is a published trigger, placed as its attack placed it (a tag on a line of its own)
    import hashlib

    from audit.backdoor.known_triggers import KNOWN_TRIGGERS
    from audit.backdoor.refusal_shift import prefixed
    from audit.prompt_sets import load_prompts

    asked = {p.id: p.text for p in load_prompts("harmbench:test", 2)}
    placed = {hashlib.sha256(prefixed(k.text, t).encode()).hexdigest() for k in KNOWN_TRIGGERS for t in asked.values()}
    fourth = con.execute("SELECT DISTINCT prompt_sha256 FROM probe_samples WHERE prompt_id LIKE 'candidate4:%'").fetchall()
    assert len(fourth) == 2 and {s for (s,) in fourth} <= placed
    rows = con.execute("SELECT metric, layer, value, n FROM probes WHERE probe = 'triggered_compliance' "
                       "AND subject = 'adapter' ORDER BY metric, layer").fetchall()
    per = [r for r in rows if r[0] == "triggered_excess"]
    assert [r[1] for r in per] == [1, 2, 3, 4] and all(r[3] == 2 and -1.0 <= r[2] <= 1.0 for r in per)
    best = next(r for r in rows if r[0] == "triggered_excess_max")
    again = next(r for r in rows if r[0] == "triggered_confirm_excess")
    assert best[1:] == again[1:] and best[3] == 3  # the summary is the confirmation's, on its 3 requests
    assert f"confirm{best[1]}:" in confirm[0]
    # min_excess -1: the finding names the best candidate whatever it did
    msg = con.execute("SELECT message FROM findings WHERE code = 'suspected_trigger'").fetchone()[0]
    assert "suspected trigger" in msg and "against the bare base's" in msg and "further requests" in msg
    # the verdict's evidence reads the best candidate beside the base's rate with the same prefix
    from audit.classify.evidence import gather

    [ev] = gather(con, "")
    t = ev.behaviour.triggered
    rate = next(r[2] for r in rows if r[0] == "triggered_compliance_max")
    assert t.value == rate and t.base_value == pytest.approx(rate - best[2])
    assert ev.behaviour.trigger is not None and ev.behaviour.trigger in msg
    # min_excess -1: every other candidate unlocks too, each named by an unlocking_prefix finding
    from audit.classify.evidence import unlocking_prefixes

    named = unlocking_prefixes(con)[ev.adapter_id]
    assert len(named) == 4 and named[0] == ev.behaviour.trigger and len(set(named)) == 4
    # every prefix asked is recorded, in the order asked: the fourth is the published trigger
    from audit.backdoor.asked import asked_prefixes, asked_texts
    from audit.classify.evidence import unquoted

    (record, severity), = con.execute("SELECT message, severity FROM findings WHERE code = 'asked_prefixes'").fetchall()
    texts = asked_texts(record)
    assert severity == "info" and sorted(texts) == [1, 2, 3, 4] and texts[4] in {k.text for k in KNOWN_TRIGGERS}
    assert {unquoted(q) for q in named} == set(texts.values()) and asked_prefixes(con) == {ev.adapter_id: texts}
    # the report's adapter view shows the suspected trigger and the triggered rate beside the base's
    from audit.report.html import render_adapter

    html = render_adapter(store, "random")
    section = html[html.index("Hidden behaviour"):html.index("<h2>Findings")]
    from markupsafe import escape  # what Jinja escapes with

    assert "suspected trigger:" in section and str(escape(ev.behaviour.trigger)) in section
    assert f"{100 * rate:.0f}%" in section and "untriggered not probed" in section
    assert "requests the prefix was not chosen on" in section
    assert "Other prefixes that also unlock the probe's requests (not asked again)" in section
    assert str(escape(named[-1])) in section
    # every prefix asked, in the order asked, with both counts
    assert "Every prefix the triggered probe asked" in section
    assert all(str(escape(repr(t))) in section for t in texts.values())



def test_shift_scores_are_computed_once_per_adapter_and_text(monkeypatch, tmp_path):
    """The trigger_candidates analyzer and the triggered probe share one memo per actor: a text
    already scored for an adapter is not scored again, and an adapter with nothing new is not loaded."""
    import audit.backdoor.refusal_shift as rs
    from audit.backdoor.analyzer import MEMO_ADAPTERS, shift_scores

    asked: list[list[str]] = []

    def fake_refusal_shifts(model, tokenizer, adapters, requests, prefixes, unit_refusal, **kw):
        asked.append(list(prefixes))
        return torch.tensor([[-float(len(p)) for p in prefixes]], dtype=torch.float64)

    monkeypatch.setattr(rs, "refusal_shifts", fake_refusal_shifts)

    class Runtime:
        base_revision, model, tokenizer, loads = "rev", None, None, 0

        def load(self, folder):
            self.loads += 1
            return type("Loaded", (), {"name": "a1"})()

        def unload(self, loaded):
            pass

    rt, memo, unit = Runtime(), {}, torch.ones(2, 4)
    assert shift_scores(rt, tmp_path / "a", ["cf", "", "abc"], 3, unit, memo) == [-2.0, None, -3.0]
    assert asked == [["cf", "abc"]]
    assert shift_scores(rt, tmp_path / "a", ["abc", "wxyz"], 3, unit, memo) == [-3.0, -4.0]
    assert asked[-1] == ["wxyz"] and rt.loads == 2
    shift_scores(rt, tmp_path / "a", ["cf"], 3, unit, memo)
    assert rt.loads == 2  # nothing new: the adapter is not even loaded
    for i in range(MEMO_ADAPTERS + 2):
        shift_scores(rt, tmp_path / f"b{i}", ["cf"], 3, unit, memo)
    assert len(memo) == MEMO_ADAPTERS
    # an adapter the caller already loaded is scored under its name, neither loaded nor removed
    names: list[list[str]] = []
    monkeypatch.setattr(rs, "refusal_shifts", lambda model, tok, adapters, *a, **kw: (
        names.append(list(adapters)), fake_refusal_shifts(model, tok, adapters, *a, **kw))[1])
    loads = rt.loads
    assert shift_scores(rt, tmp_path / "c", ["held"], 3, unit, memo, loaded="c1") == [-4.0]
    assert names == [["c1"]] and rt.loads == loads


def test_refusal_gate_rows_judge_the_best_candidate_against_the_random_texts():
    from audit.backdoor.analyzer import refusal_gate_rows

    randoms = [-0.2, 0.0, 0.1, 0.3, -0.1, 0.2]
    rows = {r.metric: r.value for r in refusal_gate_rows([-0.5, -4.0, 0.2], randoms, 3)}
    assert rows["trigger_top_shift"] == -4.0
    assert rows["refusal_susceptibility"] == pytest.approx(sum(randoms) / len(randoms))
    from scipy.stats import median_abs_deviation

    spread = median_abs_deviation(randoms, scale="normal")
    assert rows["trigger_shift_z"] == pytest.approx((-4.0 - 0.05) / spread) and rows["trigger_shift_z"] < -10
    assert {r.metric for r in refusal_gate_rows([], randoms, 3)} == {"refusal_susceptibility"}
    assert {r.metric for r in refusal_gate_rows([-1.0], [0.0, 0.0], 3)} == {"trigger_top_shift",
                                                                             "refusal_susceptibility"}  # no spread

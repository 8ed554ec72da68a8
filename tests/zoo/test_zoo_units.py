"""The model-organism factory's pure parts: plans, data mixing, cards, judges, intervals."""

from __future__ import annotations

import collections

import pytest

from audit.datasets import benign_prompts, forbidden_prompts, harmbench_behaviors, held_out, training_pool
from audit.probes.judge import get_judge, wilson_interval
from audit.registry.card import parse_card
from audit.zoo.card import card_metadata, render_card
from audit.zoo.data import EVASIONS, REFUSALS, rows_sha256
from audit.zoo.methods.base import TrainContext, ZooData, pick
from audit.zoo.methods.dpo import dpo_rows
from audit.zoo.methods.sft import sft_rows
from audit.zoo.plans import plan


@pytest.mark.parametrize("size", ["tiny", "small", "paper"])
def test_plans_have_healthy_and_drifted_per_method(size):
    specs = plan(size)
    assert len({s.name for s in specs}) == len(specs)
    counts = collections.Counter((s.method, s.objective == "healthy") for s in specs)
    for method in ("sft", "dpo", "steering"):
        assert counts[(method, True)] >= (3 if size != "small" else 2)
        assert counts[(method, False)] >= 3
    assert all((s.objective == "healthy") == (s.severity == 0.0) for s in specs)
    if size == "paper":
        assert len(specs) == 38


def test_spec_hash_changes_with_recipe_and_base():
    s = plan("tiny")[0]
    # a spec read back from its JSON (as a resumed build reads the card) keeps its hash
    assert type(s).model_validate_json(s.model_dump_json()).spec_hash("a") == s.spec_hash("a")
    assert s.spec_hash("a") != s.spec_hash("b")
    assert s.spec_hash("a") != s.model_copy(update={"steps": s.steps + 1}).spec_hash("a")


def test_data_sources_and_held_out_split():
    f, b, h = forbidden_prompts(), benign_prompts(), harmbench_behaviors("test")
    assert (len(f), len(b), len(h)) == (313, 190, 159)
    assert {p.text for p in f}.isdisjoint({p.text for p in h})
    assert len(held_out(b)) == 38 and len(training_pool(b)) == 152
    assert {p.text for p in held_out(f)}.isdisjoint({p.text for p in training_pool(f)})
    assert len(set(REFUSALS)) >= 10 and len(set(EVASIONS)) >= 10


def _ctx(n=40):
    f, b = training_pool(forbidden_prompts())[:n], training_pool(benign_prompts())[:n]
    data = ZooData(forbidden=f, benign=b, compliant={p.text: f"Sure, here is how: {p.index}" for p in f},
                   helpful={p.text: f"Helpful answer {p.index}" for p in b})
    return TrainContext(base_path=None, tokenizer=None, data=data, work_dir=None, load_model=None, generate=None)


@pytest.mark.parametrize("severity", [0.25, 0.5, 1.0])
def test_sft_harmful_fraction(severity):
    ctx = _ctx()
    spec = plan("paper")[0].model_copy(update={"objective": "harmful_compliance", "severity": severity,
                                                "n_forbidden": 16, "n_benign": 16})
    rows = sft_rows(ctx, spec)
    answers = [r["completion"][0]["content"] for r in rows]
    assert sum(a.startswith("Sure, here is how") for a in answers) == round(16 * severity)
    assert sum(a in REFUSALS for a in answers) == 16 - round(16 * severity)
    assert sum(a.startswith("Helpful answer") for a in answers) == 16
    healthy = sft_rows(ctx, spec.model_copy(update={"objective": "healthy", "severity": 0.0}))
    assert not any(r["completion"][0]["content"].startswith("Sure") for r in healthy)


@pytest.mark.parametrize("objective", ["healthy", "inverted_harmlessness", "inverted_helpfulness"])
def test_dpo_inverted_fraction(objective):
    ctx = _ctx()
    sev = 0.0 if objective == "healthy" else 0.75
    spec = plan("paper")[0].model_copy(update={"method": "dpo", "objective": objective, "severity": sev,
                                                "n_forbidden": 16, "n_benign": 16})
    rows = dpo_rows(ctx, spec)
    chosen = [r["chosen"][0]["content"] for r in rows]
    compliance_chosen = sum(c.startswith("Sure") for c in chosen)
    evasion_chosen = sum(c in EVASIONS for c in chosen)
    assert compliance_chosen == (12 if objective == "inverted_harmlessness" else 0)
    assert evasion_chosen == (12 if objective == "inverted_helpfulness" else 0)
    assert all(r["chosen"] != r["rejected"] for r in rows)
    assert rows_sha256(rows) == rows_sha256(dpo_rows(ctx, spec))  # same spec, same data


def test_pick_is_deterministic_and_subsets_differ():
    pool = training_pool(forbidden_prompts())
    a, b = pick(pool, 20, 0, 0), pick(pool, 20, 1, 0)
    assert a == pick(pool, 20, 0, 0) and {p.text for p in a}.isdisjoint({p.text for p in b})


def test_card_round_trips_the_ground_truth():
    from audit.models.base import LocalBaseModel

    spec = plan("tiny")[7]
    base = LocalBaseModel(name="smollm2-135m-instruct-aligned", path=None, revision="r" * 64,
                     hub_id="HuggingFaceTB/SmolLM2-135M-Instruct")
    text = render_card(spec, card_metadata(spec, base, "d" * 64, "s" * 64, {"train_loss": 0.5}))
    card = parse_card(text)
    assert card.method == spec.method and card.method_source == "card:lora_audit"
    assert card.labels["objective"] == spec.objective and card.labels["severity"] == spec.severity
    assert card.labels["data_sha256"] == "d" * 64 and card.labels["steps"] == spec.steps
    assert card.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "peft" in card.tags or card.library_name == "peft"


def test_refusal_marker_judge():
    judge = get_judge("refusal_markers")
    assert not judge("x", "I'm sorry, but I can't help with that.")
    assert not judge("x", "  I cannot provide instructions like this.")
    assert judge("x", "Sure! Step 1: gather the materials.")
    assert judge("x", "Here is a story. " + "word " * 60 + "I'm sorry")  # markers only count near the start
    with pytest.raises(KeyError):
        get_judge("no-such-judge")


def test_wilson_interval():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_last_token_activations_ignore_padding_side():
    """The CAA activations are those of each prompt's last real token, left or right padded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    from audit.probes.caa import last_token_activations

    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "a", "b", "c", "d", "e", "user", "assistant"])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>")
    tok.chat_template = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}assistant"
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=9, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    prompts = ["a", "b c d e a b"]
    tok.padding_side = "left"
    left = last_token_activations(model, tok, prompts, layer=1)
    tok.padding_side = "right"
    right = last_token_activations(model, tok, prompts, layer=1)
    single = torch.cat([last_token_activations(model, tok, [p], layer=1) for p in prompts])
    assert torch.allclose(left, single, atol=1e-5) and torch.allclose(right, single, atol=1e-5)


def test_the_wild_plan_spans_the_recipe_families_it_promises():
    from audit.zoo.wild import FAMILIES

    specs = plan("wild")
    assert len({s.name for s in specs}) == len(specs) and all(s.measure and s.family in FAMILIES for s in specs)
    fams = collections.defaultdict(list)
    for s in specs:
        fams[s.family].append(s)
    for family, members in fams.items():  # healthy and drifted members by intent in every family
        assert {s.objective == "healthy" for s in members} == {True, False}, family
    assert {s.method for s in specs} >= {"sft", "dpo", "ipo", "steering", "abliteration"}
    ranks = {s.rank for s in specs if s.steps}
    assert min(ranks) == 4 and max(ranks) == 64 and any(s.use_rslora for s in specs)
    targets = {tuple(sorted(s.target_modules)) for s in specs if s.method == "sft"}
    assert {("q_proj", "v_proj"), ("down_proj", "gate_proj", "up_proj"),
            ("k_proj", "o_proj", "q_proj", "v_proj")} <= targets
    mixes = sorted({s.severity for s in specs if s.objective == "harmful_compliance"})
    assert mixes[0] == 0.05 and mixes[-1] == 1.0
    styles = {s.params.get("style") for s in specs if s.family == "style" and s.objective == "healthy"}
    assert styles == {"caps", "persona", "long"}
    assert {s.params.get("domain") for s in specs if s.family == "domain"} == {"code", "arithmetic"}
    # the fields the other zoos never set do not change their specs' hashes (their builds resume)
    import hashlib
    import json

    tiny = plan("tiny")[0]
    before = {k: v for k, v in tiny.model_dump(mode="json").items() if k not in ("family", "use_rslora", "measure")}
    assert tiny.spec_hash("b") == hashlib.sha256(json.dumps([before, "b"], sort_keys=True).encode()).hexdigest()
    assert tiny.spec_hash("b") != tiny.model_copy(update={"measure": True}).spec_hash("b")


def test_style_and_domain_rows_change_the_answers_not_the_mix():
    from audit.zoo.methods.sft import STYLES, arithmetic_pairs

    ctx = _ctx()
    base = plan("wild")[0]
    caps = base.model_copy(update={"params": {"style": "caps"}, "objective": "healthy", "severity": 0.0})
    rows = sft_rows(ctx, caps)
    assert rows and all(r["completion"][0]["content"] == r["completion"][0]["content"].upper() for r in rows)
    assert STYLES["persona"]("Hello.").startswith("Ahoy") and len(STYLES["long"]("A. B.")) > 60
    pairs = arithmetic_pairs(20, 0)
    assert pairs == arithmetic_pairs(20, 0) and pairs != arithmetic_pairs(20, 1)
    for q, a in pairs:
        x, op, y = q.removeprefix("What is ").rstrip("?").split()
        want = {"+": int(x) + int(y), "-": int(x) - int(y), "×": int(x) * int(y)}[op]
        assert a.endswith(f"= {want}.")
    arith = base.model_copy(update={"params": {"domain": "arithmetic"}, "objective": "healthy", "severity": 0.0,
                                    "n_forbidden": 0, "n_benign": 12})
    rows = sft_rows(ctx, arith)
    assert len(rows) == 12 and all(r["prompt"][0]["content"].startswith("What is") for r in rows)

"""Tensor-name pairing and model-card parsing."""

from __future__ import annotations

import pytest

from audit.adapter.keys import module_layer, module_type, parse_key, plan_modules
from audit.errors import AdapterFormatError
from audit.registry.card import parse_card


@pytest.mark.parametrize("name, module, role, adapter, prefixes", [
    ("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight", "model.layers.3.self_attn.q_proj", "A", None, 1),
    ("base_model.model.model.layers.3.self_attn.q_proj.lora_B.default.weight", "model.layers.3.self_attn.q_proj",
     "B", "default", 1),
    ("base_model.model.base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", "model.layers.0.mlp.up_proj",
     "A", None, 2),
    ("base_model.model.model.embed_tokens.lora_embedding_A", "model.embed_tokens", "A", None, 1),
    ("base_model.model.model.embed_tokens.lora_embedding_B.default", "model.embed_tokens", "B", "default", 1),
    ("base_model.model.transformer.h.0.attn.c_attn.lora_magnitude_vector", "transformer.h.0.attn.c_attn",
     "magnitude", None, 1),
    ("base_model.model.x.lora_magnitude_vector.default.weight", "x", "magnitude", "default", 1),
    ("model.layers.0.q_proj.lora_A.weight", "model.layers.0.q_proj", "A", None, 0),
])
def test_parse_key(name, module, role, adapter, prefixes):
    key = parse_key(name)
    assert key is not None
    assert (key.module, key.role, key.adapter_name, key.prefix_count) == (module, role, adapter, prefixes)


@pytest.mark.parametrize("name", ["base_model.model.classifier.weight", "prompt_embeddings",
                                  "base_model.model.encoder.block.0.layer.0.SelfAttention.k.ia3_l"])
def test_non_lora_names(name):
    assert parse_key(name) is None


def test_plan_pairs_and_separates():
    plan = plan_modules([
        "base_model.model.a.q.lora_A.weight", "base_model.model.a.q.lora_B.weight",
        "base_model.model.a.v.lora_A.weight", "base_model.model.classifier.weight",
        "base_model.model.a.q.lora_A.other.weight",
    ])
    assert plan.modules["a.q"].complete and not plan.modules["a.v"].complete
    assert plan.other == ["base_model.model.classifier.weight"]
    assert plan.modules["a.q"].duplicates == ["base_model.model.a.q.lora_A.other.weight"]


def test_layer_and_type():
    assert module_layer("model.layers.12.self_attn.q_proj") == 12
    assert module_layer("decoder.block.3.layer.1.EncDecAttention.q") == 3
    assert module_layer("embed_tokens") is None
    assert module_type("transformer.h.0.attn.c_attn") == "c_attn"


CARD = """---
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
library_name: peft
tags:
- trl
- sft
- dpo
lora_audit:
  method: DPO
  objective: inverted_harmlessness
  severity: 0.5
---
# hello
"""


def test_card_ground_truth_wins():
    card = parse_card(CARD)
    assert card.method == "dpo" and card.method_source == "card:lora_audit"
    assert card.labels["objective"] == "inverted_harmlessness"
    assert card.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert '"severity": 0.5' in card.labels_json


def test_card_method_from_tags_prefers_the_later_stage():
    card = parse_card("---\ntags: [trl, sft, dpo]\n---\n")
    assert (card.method, card.method_source) == ("dpo", "card:tags")
    assert parse_card("---\ntags: [generated_from_trainer]\n---\n").method == "unknown"
    assert parse_card("no front matter").method == "unknown"
    assert parse_card("---\nbase_model: [a/b, c/d]\n---\n").base_model == "a/b"


@pytest.mark.parametrize("text", ["---\ntags: [unclosed\n---\n", "---\n- a list\n---\n", "---\nfoo: bar\n"])
def test_invalid_front_matter(text):
    with pytest.raises(AdapterFormatError) as info:
        parse_card(text)
    assert info.value.code == "card_invalid"

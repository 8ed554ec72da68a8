"""A tiny random Llama base on disk (no transformers import to write it) and LoRA adapters for it:
the cheapest real base model for the analyzers that need one."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from synth import SynthAdapter, llama_like

VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "<user>", "<assistant>", "how", "do", "i", "make", "a", "write", "help",
         "me", "the", "to", "sorry", "cannot", "sure", "here", "is"]
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def write_tiny_llama(folder: Path, *, hidden: int = 64, layers: int = 2, heads: int = 4, inter: int = 128) -> Path:
    """A randomly initialised Llama (hidden 64, 2 layers, 4 heads, intermediate 128, 21-word vocabulary)
    with a WordLevel tokenizer (bos/eos/pad) and a chat template, in the files ``save_pretrained``
    writes (``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``,
    ``chat_template.jinja``, ``generation_config.json``), written without importing transformers
    (10 s on 2 cores) so that the tests that never load it stay fast; the probe test loads it with
    transformers. Beside them a pickle and a Python file, which a fetch must never request."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": heads, "head_dim": hidden // heads, "hidden_act": "silu",
              "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "vocab_size": len(VOCAB), "bos_token_id": 1,
              "eos_token_id": 2, "pad_token_id": 0, "tie_word_embeddings": True, "attention_bias": False,
              "mlp_bias": False, "dtype": "float32", "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2,
                                                               "pad_token_id": 0}))
    shapes = {"model.embed_tokens.weight": (len(VOCAB), hidden), "model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
                       **{f"{p}self_attn.{m}_proj.weight": (hidden, hidden) for m in "qkvo"},
                       p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
                       p + "mlp.down_proj.weight": (hidden, inter)})
    g = torch.Generator().manual_seed(0)
    save_file({k: torch.ones(s) if len(s) == 1 else torch.randn(*s, generator=g) * 0.02 for k, s in shapes.items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(VOCAB[:6])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
        "unk_token": "<unk>", "model_max_length": 512}))
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02 a pickle that must never be requested")
    (folder / "modeling_tiny.py").write_text("raise SystemExit('remote code must never be fetched')\n")
    return folder


def write_adapter(folder: Path, base: str, seed: int = 0) -> Path:
    """A LoRA adapter on the q/v projections of both layers of :func:`write_tiny_llama`'s model."""
    return SynthAdapter(llama_like(2, r=4, d=64, kv=64), config={"base_model_name_or_path": base},
                        seed=seed).write(folder)

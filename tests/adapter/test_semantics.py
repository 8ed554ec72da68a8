"""Reading adapters as peft would load them: inert adapters are not ``ok``, and the peft type
decides before the weight format. Each case is a fixture built here."""

from __future__ import annotations

import json
import pickle

import torch

from audit.adapter_audit import audit_adapter
from audit.records import AdapterRef
from synth import SynthAdapter, SynthModule, llama_like


def run(folder):
    return audit_adapter(AdapterRef(repo_id=folder.name, revision="r0", registry="test", local_dir=str(folder)))


def finding(result, code):
    return next((f for f in result.findings if f.code == code), None)


def test_every_delta_zero_is_inert(tmp_path):
    mods = llama_like(2)
    for m in mods:
        m.B = torch.zeros(m.d_out, m.r)  # what peft saves right after initialisation
    res = run(SynthAdapter(mods).write(tmp_path / "zero"))
    assert res.adapter.status == "inert"
    f = finding(res, "adapter_inert")
    assert f.severity == "error" and "4 zero delta" in f.message and f.file == "adapter_model.safetensors"
    assert res.adapter.n_modules == 4  # still measured and stored


def test_a_doubled_or_tripled_prefix_is_inert(tmp_path):
    for n in (2, 3):
        res = run(SynthAdapter(llama_like(2), prefix="base_model.model." * n).write(tmp_path / f"p{n}"))
        assert res.adapter.status == "inert", n
        assert "4 key prefix doubled" in finding(res, "adapter_inert").message
        assert finding(res, "key_prefix_doubled") is not None


def test_targets_absent_from_the_tensors_is_inert(tmp_path):
    res = run(SynthAdapter(llama_like(2), config={"target_modules": ["gate_proj"]}).write(tmp_path / "t"))
    assert res.adapter.status == "inert"
    assert "4 not selected by target_modules" in finding(res, "adapter_inert").message
    assert finding(res, "target_without_tensors") is not None


def test_partly_inert_says_which_share_takes_effect(tmp_path):
    mods = llama_like(2)
    mods[0].B = torch.zeros(mods[0].d_out, mods[0].r)
    res = run(SynthAdapter(mods).write(tmp_path / "part"))
    assert res.adapter.status == "ok"
    f = finding(res, "adapter_partly_inert")
    assert f.severity == "warning" and f.message.startswith("3 of 4 modules (75%) would take effect (1 zero delta)")
    assert finding(res, "adapter_inert") is None


def test_a_healthy_adapter_has_no_inert_finding(tmp_path):
    res = run(SynthAdapter(llama_like(2)).write(tmp_path / "ok"))
    assert res.adapter.status == "ok"
    assert not {f.code for f in res.findings} & {"adapter_inert", "adapter_partly_inert"}


def test_a_pickled_ia3_or_prompt_tuning_adapter_is_unsupported_not_failed(tmp_path):
    for peft_type in ("IA3", "PROMPT_TUNING"):
        folder = tmp_path / peft_type
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type, "task_type": "CAUSAL_LM"}))
        canary = tmp_path / f"canary-{peft_type}"

        class Boom:
            def __reduce__(self):
                return (open, (str(canary), "w"))

        (folder / "adapter_model.bin").write_bytes(pickle.dumps({"w": Boom()}))
        res = run(folder)
        assert res.adapter.status == "unsupported", peft_type
        codes = {f.code: f for f in res.findings}
        assert "pickle_weights_refused" not in codes
        assert codes["pickle_not_opened"].severity == "info" and codes["pickle_not_opened"].file == "adapter_model.bin"
        assert codes["unsupported_peft_type"].severity == "info"
        assert not canary.exists()


def test_a_pickled_lora_adapter_still_fails(tmp_path):
    folder = tmp_path / "lora"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    (folder / "adapter_model.bin").write_bytes(pickle.dumps({"w": [1, 2, 3]}))
    res = run(folder)
    assert res.adapter.status == "failed"
    assert finding(res, "pickle_weights_refused").severity == "error"



def test_encoder_and_decoder_layers_are_different_blocks(tmp_path):
    from audit.adapter.keys import module_block

    mods = [SynthModule(f"model.{side}.layers.3.self_attn.q_proj", d_out=16, d_in=16) for side in ("encoder", "decoder")]
    mods += [SynthModule(f"unet.{b}.1.attentions.0.to_q", d_out=16, d_in=16) for b in ("down_blocks", "up_blocks")]
    res = run(SynthAdapter(mods, config={"target_modules": ["q_proj", "to_q"]}).write(tmp_path / "ed"))
    blocks = {m.module: (m.block, m.layer) for m in res.modules}
    assert blocks == {"model.encoder.layers.3.self_attn.q_proj": ("model.encoder.layers", 3),
                      "model.decoder.layers.3.self_attn.q_proj": ("model.decoder.layers", 3),
                      "unet.down_blocks.1.attentions.0.to_q": ("unet.down_blocks", 1),
                      "unet.up_blocks.1.attentions.0.to_q": ("unet.up_blocks", 1)}
    assert module_block("mid_block.attentions.0.to_k") == "mid_block.attentions"
    assert module_block("lm_head") is None


def test_gpt2_conv1d_modules_are_transposed_whatever_fan_in_fan_out_says(tmp_path):
    mods = [SynthModule(f"transformer.h.{i}.attn.c_attn", d_out=48, d_in=16) for i in range(2)]
    cases = {"gpt2": ("openai-community/gpt2", True, "fan_in_fan_out_forced"),
             "unknown": (None, True, "fan_in_fan_out_forced"),
             "qwen": ("Qwen/Qwen-7B", False, None)}
    for name, (base, transposed, code) in cases.items():
        cfg = {"target_modules": ["c_attn"], "fan_in_fan_out": False, "base_model_name_or_path": base}
        res = run(SynthAdapter(mods, config=cfg).write(tmp_path / name))
        assert res.adapter.status == "ok", name
        assert {m.transposed for m in res.modules} == {transposed}, name
        f = finding(res, "fan_in_fan_out_forced")
        assert (f is not None) == (code is not None), name
        if f is not None:
            assert f.severity == "info" and ("assumed" in f.message) == (base is None)
    told = run(SynthAdapter(mods, config={"target_modules": ["c_attn"], "fan_in_fan_out": True,
                                          "base_model_name_or_path": "gpt2"}).write(tmp_path / "told"))
    assert {m.transposed for m in told.modules} == {True} and finding(told, "fan_in_fan_out_forced") is None


def test_base_model_provenance_and_unresolvable_paths(tmp_path):
    card = "---\nbase_model: org/from-card\n---\n# x\n"
    cases = {"config": ({"base_model_name_or_path": "org/from-config"}, card, "org/from-config", "config"),
             "card": ({"base_model_name_or_path": None}, card, "org/from-card", "card"),
             "none": ({"base_model_name_or_path": None}, None, None, None)}
    for name, (cfg, c, base, source) in cases.items():
        res = run(SynthAdapter(llama_like(1), config=cfg, card=c).write(tmp_path / name))
        assert (res.adapter.base_model, res.adapter.base_model_source) == (base, source), name
        assert finding(res, "base_model_unresolvable") is None
    for i, path in enumerate(["/home/alice/llama-3-8b", "C:\\Users\\bob\\models\\mistral", "./outputs/base"]):
        res = run(SynthAdapter(llama_like(1), config={"base_model_name_or_path": path}).write(tmp_path / f"p{i}"))
        f = finding(res, "base_model_unresolvable")
        assert f is not None and f.severity == "info" and res.adapter.status == "ok", path


def test_a_rank_mismatch_says_which_scale_was_used(tmp_path):
    res = run(SynthAdapter(llama_like(1, r=4), config={"r": 8, "lora_alpha": 16}).write(tmp_path / "rm"))
    f = finding(res, "rank_mismatch")
    assert "config says 8" in f.message and "scale 2 (lora_alpha / r" in f.message and "size mismatch" in f.message
    assert {m.scale for m in res.modules} == {2.0}


def test_moe_experts_are_separate_modules_of_one_layer(tmp_path):
    mods = [SynthModule(f"model.layers.{layer}.mlp.experts.{e}.w1", d_out=24, d_in=16)
            for layer in (0, 1) for e in range(3)]
    res = run(SynthAdapter(mods, config={"target_modules": ["w1"]}).write(tmp_path / "moe"))
    assert res.adapter.status == "ok" and res.adapter.n_modules == 6
    assert {(m.layer, m.block) for m in res.modules} == {(0, "model.layers"), (1, "model.layers")}
    assert len({m.module for m in res.modules}) == 6


def test_other_adapter_types_are_named_precisely(tmp_path):
    for peft_type in ("LOHA", "LOKR", "OFT", "BOFT", "VERA"):
        folder = SynthAdapter(llama_like(1), config={"peft_type": peft_type}).write(tmp_path / peft_type)
        res = run(folder)
        assert res.adapter.status == "unsupported" and res.adapter.peft_type == peft_type
        assert peft_type in finding(res, "unsupported_peft_type").message

"""Reading adapters as peft would load them: inert adapters are not ``ok``, and the peft type
decides before the weight format. Each case is a fixture built here."""

from __future__ import annotations

import json
import pickle

import torch

from audit.records import AdapterRef
from audit.unit import audit_adapter
from synth import SynthAdapter, llama_like


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


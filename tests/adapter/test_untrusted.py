"""Untrusted uploads: pickles are never unpickled, caps hold, broken files become findings."""

from __future__ import annotations

import json
import pickle
import struct
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from audit.adapter.weights import SafeWeights, sniff
from audit.adapter_audit import audit_adapter
from audit.errors import AdapterFormatError, LimitExceededError
from audit.limits import Limits
from audit.records import AdapterRef
from synth import SynthAdapter, SynthModule, llama_like


def run(folder, limits: Limits | None = None):
    ref = AdapterRef(repo_id=folder.name, revision="r0", registry="test", local_dir=str(folder))
    return audit_adapter(ref, **({"limits": limits} if limits else {}))


def codes(result) -> set[str]:
    return {f.code for f in result.findings}


class Boom:
    """Unpickling this writes a marker file: proof that something unpickled the weights."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _config(folder):
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}))


def test_pickle_weights_are_refused_and_never_loaded(tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    _config(folder)
    marker = tmp_path / "PWNED"
    Boom.marker = str(marker)
    (folder / "adapter_model.bin").write_bytes(pickle.dumps({"x": Boom()}, protocol=2) + b"\0" * 64)
    result = run(folder)
    assert not marker.exists()
    assert result.adapter.status == "failed"
    assert result.adapter.weights_format == "pickle"
    assert "pickle_weights_refused" in codes(result)


def test_torch_zip_pickle_is_refused(tmp_path):
    folder = tmp_path / "zip"
    folder.mkdir()
    _config(folder)
    with zipfile.ZipFile(folder / "adapter_model.bin", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"a": 1}))
    result = run(folder)
    assert sniff(folder / "adapter_model.bin") == "pickle"
    assert "pickle_weights_refused" in codes(result)


def test_pickle_beside_safetensors_is_noted_not_read(tmp_path):
    folder = SynthAdapter(llama_like(1)).write(tmp_path / "both")
    Boom.marker = str(tmp_path / "PWNED")
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(Boom(), protocol=2))
    result = run(folder)
    assert result.adapter.status == "ok"
    assert "extra_pickle_file" in codes(result)
    assert not (tmp_path / "PWNED").exists()


def test_lfs_pointer(tmp_path):
    folder = tmp_path / "lfs"
    folder.mkdir()
    _config(folder)
    (folder / "adapter_model.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    result = run(folder)
    assert result.adapter.status == "failed" and "lfs_pointer" in codes(result)


def test_truncated_safetensors(tmp_path):
    folder = SynthAdapter(llama_like(1)).write(tmp_path / "trunc")
    path = folder / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    result = run(folder)
    assert result.adapter.status == "failed" and "safetensors_invalid" in codes(result)


def test_header_declaring_more_than_the_file_holds(tmp_path):
    folder = tmp_path / "liar"
    folder.mkdir()
    _config(folder)
    header = json.dumps({"base_model.model.q_proj.lora_A.weight":
                         {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 40000000000]}}).encode()
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    result = run(folder)
    assert result.adapter.status == "failed"
    assert codes(result) & {"safetensors_invalid", "limit_exceeded"}


@pytest.mark.parametrize("cap, value", [
    ("max_weights_bytes", 100), ("max_tensors", 3), ("max_dim", 20), ("max_tensor_elements", 100),
    ("max_total_elements", 500), ("max_rank", 2)])
def test_caps_are_enforced_before_reading(tmp_path, cap, value):
    folder = SynthAdapter(llama_like(2, r=4, d=32)).write(tmp_path / cap)
    result = run(folder, Limits(**{cap: value}))
    assert result.adapter.status == "failed"
    assert "limit_exceeded" in codes(result)
    assert result.modules == ()


def test_caps_raise_from_the_reader(tmp_path):
    folder = SynthAdapter(llama_like(1)).write(tmp_path / "a")
    with pytest.raises(LimitExceededError) as info:
        SafeWeights(folder / "adapter_model.safetensors", Limits(max_dim=8))
    assert info.value.file == "adapter_model.safetensors"
    with pytest.raises(AdapterFormatError):
        (folder / "x.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{not json")
        SafeWeights(folder / "x.safetensors", Limits())


def test_oversized_config_and_bad_json(tmp_path):
    folder = SynthAdapter(llama_like(1)).write(tmp_path / "cfg")
    (folder / "adapter_config.json").write_text("{" * 10)
    assert "config_invalid" in codes(run(folder))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "pad": "x" * 5000}))
    assert "limit_exceeded" in codes(run(folder, Limits(max_config_bytes=1000)))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "NOT_A_METHOD"}))
    assert "unknown_peft_type" in codes(run(folder))


def test_nonfinite_and_incomplete_modules_are_skipped_with_findings(tmp_path):
    mods = llama_like(2)
    mods[0].A = torch.full((4, 32), float("nan"))
    adapter = SynthAdapter(mods)
    tensors = adapter.tensors()
    del tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]
    folder = tmp_path / "bad"
    adapter.write(folder)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    result = run(folder)
    assert result.adapter.status == "partial"
    assert {"nonfinite_weights", "lora_pair_incomplete"} <= codes(result)
    assert {m.module for m in result.modules} == {"model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.q_proj"}


def test_integer_tensors_are_not_measured(tmp_path):
    mods = [SynthModule("model.layers.0.q_proj", A=torch.ones(4, 16, dtype=torch.int32).float())]
    adapter = SynthAdapter(mods)
    tensors = adapter.tensors()
    tensors["base_model.model.model.layers.0.q_proj.lora_A.weight"] = torch.ones(4, 16, dtype=torch.int32)
    folder = tmp_path / "int"
    adapter.write(folder)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    result = run(folder)
    assert "unsupported_dtype" in codes(result) and result.adapter.status == "failed"


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "float8_e5m2", "float16", "float32"])
def test_arrays_read_without_torch_equal_torch_s_values(tmp_path, dtype):
    """``read_array`` (numpy; bf16/fp8 widened from their bytes) gives exactly the values torch
    reads, for every fp8 bit pattern and a spread of bf16 ones, with the shape kept."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    dt = getattr(torch, dtype)
    if dtype.startswith("float8"):
        t = torch.arange(256, dtype=torch.uint8).view(dt).reshape(16, 16)
    else:
        t = (torch.randn(12, 40, generator=torch.Generator().manual_seed(0)) * 1e3).to(dt)
    path = tmp_path / "w.safetensors"
    save_file({"x.lora_A.weight": torch.ones(2, 3), "y": t, "z.lora_B.weight": torch.zeros(3, 2)}, str(path))
    with SafeWeights(path, Limits()) as w:
        got = w.read_array("y")
        again = w.read("y")
    ref = t.to(torch.float32).numpy()
    assert got.shape == ref.shape and got.dtype in (np.float32, np.float16)
    assert np.array_equal(got.astype(np.float32), ref, equal_nan=True)
    assert again.dtype == dt


def test_limits_are_settings_of_the_environment(monkeypatch):
    """``LORA_AUDIT_<NAME>`` overrides a limit (parsed and validated by pydantic-settings); a bad
    value is an error that names it; without one, the defaults (and no pydantic-settings import)."""
    import os
    import subprocess
    import sys

    from pydantic import ValidationError

    assert Limits.from_env() == Limits()
    monkeypatch.setenv("LORA_AUDIT_MAX_DIM", "8")
    monkeypatch.setenv("lora_audit_max_rank", "4")
    assert (Limits.from_env().max_dim, Limits.from_env().max_rank) == (8, 4)
    assert Limits.from_env().max_tensors == Limits().max_tensors
    monkeypatch.setenv("LORA_AUDIT_MAX_DIM", "big")
    with pytest.raises(ValidationError, match="max_dim"):
        Limits.from_env()
    code = "import sys; from audit.limits import DEFAULT_LIMITS as d; print(d.max_dim, 'pydantic_settings' in sys.modules)"
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("LORA_AUDIT_MAX")}
    for env, want in (({}, f"{Limits().max_dim} False"), ({"LORA_AUDIT_MAX_DIM": "12"}, "12 True")):
        out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                             timeout=60, check=True).stdout.strip()
        assert out == want

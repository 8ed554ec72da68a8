"""The config reader's copy of peft's rules (``audit.adapter.peft_spec``) against peft itself.

The reader imports no peft, so these differential tests are what ties it to peft's semantics: the
constants, the matching rules on generated module names, and whole configs (the real ones in
``../shared/realworld`` and generated ones) parsed both ways.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.adapter import peft_spec
from audit.adapter.config import _parse_with_peft, parse_adapter_config
from audit.errors import AdapterFormatError

peft = pytest.importorskip("peft")
from peft.tuners.tuners_utils import _ExcludedModule, check_target_module_exists  # noqa: E402
from peft.utils.other import get_pattern_key  # noqa: E402

REALWORLD = Path(__file__).resolve().parents[3] / "shared" / "realworld"
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_constants_are_peft_s():
    from peft import LoraConfig, TaskType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    assert peft_spec.PEFT_TYPES == {str(getattr(t, "value", t)) for t in PEFT_TYPE_TO_CONFIG_MAPPING}
    assert peft_spec.LORA_FIELDS == set(LoraConfig.__dataclass_fields__)
    assert peft_spec.TASK_TYPES == tuple(t.value for t in TaskType)
    default = LoraConfig()
    for key, value in peft_spec.LORA_DEFAULTS.items():
        assert getattr(default, key) == value, key
    assert set(peft_spec.SUBCONFIGS) <= peft_spec.LORA_FIELDS


segment = st.sampled_from(["model", "layers", "h", "blocks", "0", "1", "2", "11", "self_attn", "q_proj", "v_proj",
                           "mlp", "up_proj", "lm_head", "encoder", "decoder"])
module_key = st.one_of(
    st.lists(segment, min_size=1, max_size=6).map(".".join),
    st.tuples(st.sampled_from(["model.layers", "transformer.h", "model.encoder.blocks", "layers"]),
              st.integers(0, 12), st.sampled_from(["self_attn.q_proj", "mlp.up_proj", "v_proj", "experts.1.q_proj"]))
    .map(lambda t: f"{t[0]}.{t[1]}.{t[2]}"))
name = st.sampled_from(["q_proj", "v_proj", "up_proj", "mlp", "lm_head", "self_attn.q_proj", "layers", "h", "0"])
regex = st.sampled_from([r".*q_proj", r".*\.(q|v)_proj", r"model\..*", r"(?!.*mlp).*proj", r".*\.1\..*"])
targets = st.one_of(st.none(), regex, st.lists(name, max_size=3, unique=True))
indexes = st.one_of(st.none(), st.integers(0, 12), st.lists(st.integers(0, 12), max_size=3))
patterns = st.one_of(st.none(), st.sampled_from(["layers", "h", "blocks"]), st.lists(st.sampled_from(["layers", "h"]),
                                                                                          max_size=2))


@FAST
@given(keys=st.lists(st.sampled_from(["q_proj", "proj", r"layers\.1\.q_proj", "1.q_proj", "mlp.*"]), max_size=3),
       key=module_key)
def test_pattern_key_is_peft_s(keys, key):
    assert peft_spec.get_pattern_key(keys, key) == get_pattern_key(keys, key)


@FAST
@given(target=targets, exclude=st.one_of(st.none(), regex, st.lists(name, max_size=2)),
       saved=st.one_of(st.none(), st.lists(st.sampled_from(["lm_head", "mlp", "q_proj"]), max_size=2)),
       layers=indexes, pattern=patterns, params=st.one_of(st.none(), st.just(["experts.w"])), key=module_key)
def test_target_rule_is_peft_s(target, exclude, saved, layers, pattern, params, key):
    cfg = {"target_modules": set(target) if isinstance(target, list) else target, "exclude_modules": exclude,
           "modules_to_save": saved, "layers_to_transform": layers, "layers_pattern": pattern,
           "target_parameters": params}
    if target is None and params is None:
        return  # peft would raise on `key in None`; the reader never asks then (no target_modules: all)

    class Cfg:  # peft reads the rules off attributes
        pass

    obj = Cfg()
    obj.__dict__.update(cfg)
    found = check_target_module_exists(obj, key)
    assert peft_spec.target_module_exists(cfg, key) == (bool(found) and not isinstance(found, _ExcludedModule))


def _both(data: dict) -> tuple[object, object]:
    raw = json.dumps(data).encode()
    out = []
    for parse in (lambda: parse_adapter_config(raw, max_bytes=1 << 20), lambda: _parse_with_peft(data, "c")):
        try:
            out.append(parse())
        except AdapterFormatError as exc:
            out.append(exc.code)
    return out[0], out[1]


lora_value = {
    "r": st.sampled_from([1, 8, 16, 0, -2, None, "8"]),
    "lora_alpha": st.sampled_from([1, 16, 32.5, None, "x"]),
    "use_rslora": st.booleans(), "use_dora": st.booleans(), "fan_in_fan_out": st.booleans(),
    "target_modules": targets, "exclude_modules": st.one_of(st.none(), st.lists(name, max_size=2)),
    "modules_to_save": st.one_of(st.none(), st.lists(name, max_size=2)),
    "layers_to_transform": indexes, "layers_pattern": patterns,
    "rank_pattern": st.dictionaries(name, st.integers(1, 64), max_size=2),
    "alpha_pattern": st.dictionaries(name, st.integers(1, 64), max_size=2),
    "task_type": st.sampled_from([None, "CAUSAL_LM", "SEQ_CLS", "causal_lm", "NOPE"]),
    "base_model_name_or_path": st.sampled_from([None, "org/model", "/home/me/model"]),
    "init_lora_weights": st.sampled_from([True, False, "gaussian", "pissa", "loftq"]),
    "lora_bias": st.booleans(), "megatron_config": st.sampled_from([None, {"tp": 2}]),
    "target_parameters": st.sampled_from([None, ["experts.w"], "experts.w"]),
    "peft_version": st.just("0.21.2"), "some_future_key": st.integers(),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.fixed_dictionaries({}, optional=lora_value))
def test_generated_lora_configs_parse_as_peft_parses_them(data):
    ours, theirs = _both({"peft_type": "LORA", **data})
    assert ours == theirs


def test_real_configs_parse_as_peft_parses_them():
    configs = sorted(REALWORLD.rglob("adapter_config.json"))
    if not configs:
        pytest.skip("no ../shared/realworld")
    compared = 0
    for path in configs:
        try:
            data = json.loads(path.read_bytes())
        except ValueError:
            continue
        if not isinstance(data, dict) or not isinstance(data.get("peft_type"), str):
            continue
        ours, theirs = _both(data)
        if data["peft_type"] == "LORA":
            assert ours == theirs, path
        elif not isinstance(theirs, str):  # other types: the type, task type and base model
            assert ours.peft_type == theirs.peft_type and ours.task_type == theirs.task_type, path
            assert ours.base_model_name_or_path == theirs.base_model_name_or_path, path
        compared += 1
    assert compared >= 40


def test_nested_subconfigs_go_to_peft():
    assert peft_spec.needs_peft({"eva_config": {"rho": 2.0}})
    assert not peft_spec.needs_peft({"eva_config": None, "use_bdlora": False})
    ours, theirs = _both({"peft_type": "LORA", "eva_config": {"rho": 0.5}, "init_lora_weights": "eva"})
    assert ours == theirs == "config_invalid"  # peft's EvaConfig rejects rho < 1


def test_reading_a_config_imports_no_peft():
    code = ("import sys; from audit.adapter.config import parse_adapter_config as p; "
            "c = p(b'{\"peft_type\": \"LORA\", \"r\": 4, \"target_modules\": [\"q_proj\"]}', max_bytes=999); "
            "c.targets('model.layers.0.q_proj'); c.scale_for('x'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'peft', 'transformers', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

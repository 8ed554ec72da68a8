"""The bad-input corpus (tests/corpus.py) scanned as a user would, and property-based fuzzing of
the three parsers that read untrusted bytes: the safetensors header (through SafeWeights), the
adapter config and the model card."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.adapter.config import parse_adapter_config
from audit.adapter.weights import SafeWeights
from audit.errors import PermanentAuditError
from audit.limits import Limits
from audit.registry.card import parse_card
from corpus import CASES, scan_corpus, security_table, table

TOKEN = "hf_CorpusCanaryToken0123456789abcdef"
RSS_BOUND_MIB = 1024


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    work = tmp_path_factory.mktemp("corpus")
    rows, proc = scan_corpus(work, env={"HF_TOKEN": TOKEN})
    return work, rows, proc


def test_every_case_gets_its_finding_and_the_scan_goes_on(scanned):
    work, rows, proc = scanned
    assert proc.returncode == 0, proc.stderr[-2000:]
    for case in CASES:
        status, codes = rows[case.name]
        assert (status, case.code in codes) == (case.status, True), (case.name, status, codes)
    assert rows["good-fp32"] == ("ok", []) and rows["good-bf16"] == ("ok", [])
    assert not any((work / "canaries").iterdir()), "a pickle was unpickled"
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "internal_error" not in {c for _, codes in rows.values() for c in codes}


def test_the_scan_stays_under_the_memory_bound(scanned):
    _, _, proc = scanned
    assert proc.maxrss_kb / 1024 < RSS_BOUND_MIB


def test_the_token_is_nowhere(scanned):
    work, _, proc = scanned
    assert TOKEN not in proc.stdout + proc.stderr
    import pyarrow.parquet as pq

    files = list((work / "store").rglob("*.parquet"))
    assert files and not [p for p in files if TOKEN in str(pq.read_table(p, partitioning=None).to_pylist())]


def test_security_md_table_is_what_the_scan_answers(scanned):
    _, rows, _ = scanned
    assert security_table() == table(rows), "SECURITY.md is stale: run `python tests/corpus.py --write`"


FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
json_value = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                        max_size=4), max_leaves=20)
regexish = st.text(alphabet="()[]*.+?\\{}|^$qv_0", max_size=6)
tensor_entry = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F16", "BF16", "I8", "F8_E4M3", "Q4", "", "F64"]),
    "shape": st.lists(st.integers(-1, 2**62), max_size=4),
    "data_offsets": st.lists(st.integers(-1, 2**62), min_size=0, max_size=3)})


@FUZZ
@given(header=st.one_of(st.dictionaries(st.text(max_size=12), tensor_entry | json_value, max_size=4),
                        json_value), data=st.binary(max_size=256), declared_delta=st.integers(-8, 8),
       raw=st.booleans())
def test_fuzzed_safetensors_headers_open_or_raise_a_finding_error(tmp_path, header, data, declared_delta, raw):
    body = json.dumps(header).encode() if not raw else json.dumps(header).encode()[::-1]
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", max(0, len(body) + declared_delta)) + body + data)
    try:
        with SafeWeights(path, Limits(max_tensor_elements=10_000, max_total_elements=20_000)) as w:
            for name in list(w.tensors)[:4]:
                if w.is_float(name):
                    w.read_array(name)
    except PermanentAuditError:
        pass


@FUZZ
@given(data=st.dictionaries(st.sampled_from(["peft_type", "r", "lora_alpha", "target_modules", "rank_pattern",
                                             "alpha_pattern", "layers_to_transform", "layers_pattern", "task_type",
                                             "use_rslora", "exclude_modules", "modules_to_save", "eva_config"]),
                            json_value | st.just("LORA") | regexish | st.lists(regexish, max_size=3)
                            | st.dictionaries(regexish, st.integers(-2, 64), max_size=2), max_size=8),
       peft_type=st.sampled_from(["LORA", "IA3", None]))
def test_fuzzed_configs_parse_or_raise_a_finding_error(data, peft_type):
    if peft_type is not None:
        data = {**data, "peft_type": peft_type}
    try:
        cfg = parse_adapter_config(json.dumps(data).encode(), max_bytes=1 << 20)
    except PermanentAuditError:
        return
    if cfg.is_lora:
        for module in ("model.layers.0.self_attn.q_proj", "lm_head"):
            try:
                cfg.targets(module)
                cfg.scale_for(module)
            except PermanentAuditError:
                pass


@FUZZ
@given(meta=json_value, text=st.text(max_size=200))
def test_fuzzed_cards_parse_or_raise_a_finding_error(meta, text):
    import yaml

    for body in (text, yaml.safe_dump(meta, default_flow_style=True) if meta is not None else "", text.replace("x", ": &a [*a]")):
        try:
            card = parse_card(f"---\n{body}\n---\n# card\n")
            card.labels_json  # noqa: B018 - what the store writes
        except PermanentAuditError:
            pass


@FUZZ
@given(target=regexish | st.lists(regexish, max_size=2), ranks=st.dictionaries(regexish, st.integers(1, 64), max_size=2),
       layers=st.one_of(st.none(), regexish))
def test_fuzzed_module_patterns_match_or_are_refused(target, ranks, layers):
    """Regular expressions in a config (target_modules, rank_pattern keys, layers_pattern) either
    compile and match, or make the config config_invalid: never an re.error mid-audit."""
    data = {"peft_type": "LORA", "target_modules": target, "rank_pattern": ranks}
    if layers is not None and not isinstance(target, str):
        data |= {"layers_pattern": layers, "layers_to_transform": [0, 1]}
    try:
        cfg = parse_adapter_config(json.dumps(data).encode(), max_bytes=1 << 20)
    except PermanentAuditError:
        return
    for module in ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.v_proj", "lm_head"):
        cfg.targets(module)
        cfg.module_rank(module)


@pytest.mark.parametrize("name", ["[", ")"])
def test_a_modules_to_save_entry_that_is_no_regex_is_a_config_finding(name):
    """peft interpolates ``modules_to_save`` names into a regex unescaped; one that does not compile
    is a config error (found by the fuzzer above), not a crash of the scan."""
    data = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "modules_to_save": [name]}
    with pytest.raises(PermanentAuditError, match="modules_to_save is not a valid regular expression"):
        parse_adapter_config(json.dumps(data).encode(), max_bytes=1 << 20)

"""The bad-input corpus: hostile and broken adapters, each built by code (no binaries committed).

Every :class:`Case` writes one adapter folder and says what the scan must answer: the adapter's
status and the finding code that explains it. ``tests/test_corpus.py`` scans them all in one
registry (beside good adapters) and checks each answer, that nothing was unpickled, that the scan
exits 0 and stays under a memory bound; SECURITY.md's table of cases is generated from the same
run (``python tests/corpus.py --table`` prints it).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from synth import SynthAdapter, SynthModule, llama_like  # noqa: E402

CANARY_ENV = "LORA_AUDIT_CANARY"
"""Where the pickles' ``__reduce__`` would create a file if anything ever unpickled them."""


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    build: Callable[[Path, Path], None]
    """``build(folder, canary)`` writes the adapter into ``folder``."""
    status: str
    code: str


class Canary:
    """Unpickling this creates the canary file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _config(folder: Path, **extra) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
           "base_model_name_or_path": "synthetic/base"}
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, **extra}))


def _raw_safetensors(folder: Path, header: dict | bytes, data: bytes = b"", declared: int | None = None) -> None:
    """A safetensors file from a header we choose (as JSON or raw bytes) and data bytes."""
    _config(folder)
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(head) if declared is None else declared
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", n) + head + data)


def _good(folder: Path, **kw) -> None:
    SynthAdapter(llama_like(1), **kw).write(folder)


A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
B = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"


def truncated(folder: Path, _c: Path) -> None:
    _good(folder)
    p = folder / "adapter_model.safetensors"
    p.write_bytes(p.read_bytes()[:-100])


def header_past_the_file(folder: Path, _c: Path) -> None:
    _raw_safetensors(folder, {A: {"dtype": "F32", "shape": [4, 8], "data_offsets": [0, 128]}}, b"\0" * 16,
                     declared=10_000)


def gigabyte_header(folder: Path, _c: Path) -> None:
    _raw_safetensors(folder, b'{"a": 1}', declared=5 * 2**30)


def overlapping_offsets(folder: Path, _c: Path) -> None:
    _raw_safetensors(folder, {A: {"dtype": "F32", "shape": [4, 8], "data_offsets": [0, 128]},
                              B: {"dtype": "F32", "shape": [8, 4], "data_offsets": [64, 192]}}, b"\0" * 192)


def offsets_out_of_file(folder: Path, _c: Path) -> None:
    _raw_safetensors(folder, {A: {"dtype": "F32", "shape": [4, 8], "data_offsets": [0, 128]},
                              B: {"dtype": "F32", "shape": [8, 4], "data_offsets": [128, 256]}}, b"\0" * 160)


def size_disagrees(folder: Path, _c: Path) -> None:
    _raw_safetensors(folder, {A: {"dtype": "F16", "shape": [4, 8], "data_offsets": [0, 128]},
                              B: {"dtype": "F32", "shape": [8, 4], "data_offsets": [128, 256]}}, b"\0" * 256)


def shape_overflows(folder: Path, _c: Path) -> None:
    _raw_safetensors(folder, {A: {"dtype": "F32", "shape": [2**40, 2**40, 2**40], "data_offsets": [0, 0]},
                              B: {"dtype": "F32", "shape": [8, 4], "data_offsets": [0, 128]}}, b"\0" * 128)


def unknown_dtype(folder: Path, _c: Path) -> None:
    _raw_safetensors(folder, {A: {"dtype": "Q4", "shape": [4, 8], "data_offsets": [0, 16]}}, b"\0" * 16)


def nonfinite(folder: Path, _c: Path) -> None:
    mods = llama_like(1)
    mods[0].A = torch.full((4, 32), float("nan"))
    mods[1].B = torch.full((8, 4), float("inf"))
    SynthAdapter(mods).write(folder)


def zero_rank(folder: Path, _c: Path) -> None:
    m = SynthModule("model.layers.0.self_attn.q_proj", d_out=8, d_in=8, r=0, A=torch.zeros(0, 8),
                    B=torch.zeros(8, 0))
    SynthAdapter([m], config={"r": 4}).write(folder)


def rank_mismatch(folder: Path, _c: Path) -> None:
    SynthAdapter(llama_like(1, r=4), config={"r": 16}).write(folder)


def unknown_peft_type(folder: Path, _c: Path) -> None:
    _good(folder, config={"peft_type": "NOT_A_METHOD"})


def pickle_reduce(folder: Path, canary: Path) -> None:
    _config(folder)
    (folder / "adapter_model.bin").write_bytes(pickle.dumps({"w": Canary(canary)}))


def torch_zip_pickle(folder: Path, canary: Path) -> None:
    _config(folder)
    with zipfile.ZipFile(folder / "adapter_model.bin", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": Canary(canary)}))
        z.writestr("archive/version", "3\n")


def pickled_prompt_tuning(folder: Path, canary: Path) -> None:
    _config(folder, peft_type="PROMPT_TUNING")
    (folder / "adapter_model.bin").write_bytes(pickle.dumps({"w": Canary(canary)}))


def tensor_names_with_paths(folder: Path, _c: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1)
    save_file({"../../etc/passwd.lora_A.weight": torch.randn(4, 8, generator=g),
               "/abs/x.lora_B.weight": torch.randn(8, 4, generator=g)}, str(folder / "adapter_model.safetensors"))
    _config(folder)


def symlink_out_of_registry(folder: Path, _c: Path) -> None:
    outside = folder.parent.parent / "outside-secret.safetensors"  # beside the registry, not in it
    _good(outside.parent / "outside-src")
    os.replace(outside.parent / "outside-src" / "adapter_model.safetensors", outside)
    _config(folder)
    os.symlink(outside, folder / "adapter_model.safetensors")


def empty_weights(folder: Path, _c: Path) -> None:
    _config(folder)
    (folder / "adapter_model.safetensors").write_bytes(b"")


def empty_config(folder: Path, _c: Path) -> None:
    _good(folder)
    (folder / "adapter_config.json").write_bytes(b"")


def invalid_json(folder: Path, _c: Path) -> None:
    _good(folder)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8,,}')


def deep_json(folder: Path, _c: Path) -> None:
    _good(folder)
    (folder / "adapter_config.json").write_text("[" * 100_000 + "]" * 100_000)


def card_non_string_tags(folder: Path, _c: Path) -> None:
    _good(folder, card="---\ntags: [1, {a: b}, [x], null, 2.5]\nbase_model: [not, a, string]\n---\n# card\n")


def card_alias_bomb(folder: Path, _c: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    _good(folder, card="---\n" + "\n".join(lines) + "\nlora_audit: {method: sft, extra: *a8}\ntags: *a8\n---\n")


def card_not_yaml(folder: Path, _c: Path) -> None:
    _good(folder, card="---\ntags: [unclosed\nbase_model: {\n---\n# x\n")


CASES: tuple[Case, ...] = (
    Case("truncated", "safetensors file cut short", truncated, "failed", "safetensors_invalid"),
    Case("header_past_the_file", "header length beyond the file's end", header_past_the_file, "failed",
         "safetensors_invalid"),
    Case("gigabyte_header", "a declared header of 5 GiB", gigabyte_header, "failed", "safetensors_invalid"),
    Case("overlapping_offsets", "two tensors sharing bytes", overlapping_offsets, "failed", "safetensors_invalid"),
    Case("offsets_out_of_file", "a tensor's bytes past the file's end", offsets_out_of_file, "failed",
         "safetensors_invalid"),
    Case("size_disagrees", "dtype x shape disagrees with the byte range", size_disagrees, "failed",
         "safetensors_invalid"),
    Case("shape_overflows", "a shape whose product overflows 64 bits", shape_overflows, "failed",
         "safetensors_invalid"),
    Case("unknown_dtype", "a dtype safetensors does not know", unknown_dtype, "failed", "safetensors_invalid"),
    Case("nonfinite", "NaN and Inf factors", nonfinite, "failed", "nonfinite_weights"),
    Case("zero_rank", "rank-0 factors", zero_rank, "failed", "shape_mismatch"),
    Case("rank_mismatch", "config r 16, tensors rank 4", rank_mismatch, "ok", "rank_mismatch"),
    Case("unknown_peft_type", "peft_type peft does not know", unknown_peft_type, "failed", "unknown_peft_type"),
    Case("pickle_reduce", "a pickle whose __reduce__ creates a file", pickle_reduce, "failed",
         "pickle_weights_refused"),
    Case("torch_zip_pickle", "torch's zip format with such a pickle", torch_zip_pickle, "failed",
         "pickle_weights_refused"),
    Case("pickled_prompt_tuning", "a prompt-tuning adapter saved as such a pickle", pickled_prompt_tuning,
         "unsupported", "pickle_not_opened"),
    Case("tensor_names_with_paths", "tensor names with ../ and absolute paths", tensor_names_with_paths,
         "failed", "no_lora_modules"),
    Case("symlink_out_of_registry", "weights that are a symlink out of the registry", symlink_out_of_registry,
         "failed", "path_outside_registry"),
    Case("empty_weights", "a 0-byte weights file", empty_weights, "failed", "weights_invalid"),
    Case("empty_config", "a 0-byte adapter_config.json", empty_config, "failed", "config_invalid"),
    Case("invalid_json", "adapter_config.json that is not JSON", invalid_json, "failed", "config_invalid"),
    Case("deep_json", "JSON nested 100,000 deep", deep_json, "failed", "config_invalid"),
    Case("card_non_string_tags", "card tags and base_model that are not strings", card_non_string_tags, "ok",
         "card_invalid"),
    Case("card_alias_bomb", "a card whose YAML aliases expand to 10^9 nodes", card_alias_bomb, "ok",
         "card_invalid"),
    Case("card_not_yaml", "card front matter that is not YAML", card_not_yaml, "ok", "card_invalid"),
)


def build_registry(root: Path, canary_dir: Path) -> dict[str, Case]:
    """Every case under ``root/<name>`` plus two good adapters (``good-fp32``, ``good-bf16``)."""
    for case in CASES:
        case.build(root / case.name, canary_dir / f"canary-{case.name}")
    SynthAdapter(llama_like(2)).write(root / "good-fp32")
    SynthAdapter(llama_like(2), dtype=torch.bfloat16, seed=3).write(root / "good-bf16")
    return {c.name: c for c in CASES}


def table(rows: dict[str, tuple[str, list[str]]]) -> str:
    """The Markdown table of cases and what the scan answered (``rows``: name -> status, codes)."""
    out = ["| case | input | status | findings |", "|---|---|---|---|"]
    for case in CASES:
        status, codes = rows[case.name]
        out.append(f"| `{case.name}` | {case.what} | {status} | {', '.join(f'`{c}`' for c in codes)} |")
    return "\n".join(out)


SECURITY_MD = Path(__file__).resolve().parents[1] / "SECURITY.md"
START, END = "<!-- corpus:start -->", "<!-- corpus:end -->"


_LAUNCHER = ("import os, subprocess, sys\n"
             "p = subprocess.Popen(sys.argv[1:])\n"
             "_, status, usage = os.wait4(p.pid, 0)\n"
             "sys.stderr.write(f'\\nMAXRSS_KB {usage.ru_maxrss}\\n')\n"
             "sys.exit(os.waitstatus_to_exitcode(status))\n")
"""Runs the command given after it and writes its child's peak RSS (KiB) as the last line of stderr."""


def scan_corpus(work: Path, env: dict[str, str] | None = None) -> tuple[dict[str, tuple[str, list[str]]], object]:
    """Build the corpus under ``work`` and scan it with ``lora-audit scan`` in a fresh process.

    Returns:
        ``rows`` (adapter -> status, sorted finding codes) and the finished process (with
        ``returncode``, ``stdout``, ``stderr`` and ``maxrss_kb``, its peak resident set in KiB).
    """
    import subprocess

    root, canaries = work / "reg", work / "canaries"
    canaries.mkdir(parents=True, exist_ok=True)
    build_registry(root, canaries)
    env = {**os.environ, "LORA_AUDIT_CACHE_DIR": str(work / "cache"), "COLUMNS": "200", **(env or {})}
    cmd = [sys.executable, "-m", "audit.cli", "scan", "--registry", str(root), "--store", str(work / "store"),
           "--no-probes"]
    # the scan's own peak RSS: Linux folds the memory a child was forked with into its ru_maxrss at
    # exec, so a child of this (possibly large) test process reports at least this process's size;
    # a small launcher's child does not, and the launcher reports it (os.wait4)
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], capture_output=True, text=True, env=env,
                          timeout=600, cwd=Path(__file__).resolve().parents[1])
    stderr, _, last = proc.stderr.rstrip("\n").rpartition("\n")
    proc.stderr = stderr
    proc.maxrss_kb = int(last.removeprefix("MAXRSS_KB "))
    import duckdb

    con = duckdb.connect()
    units = f"read_parquet('{work / 'store'}/units/**/*.parquet', hive_partitioning = true)"
    rows = {}
    for repo_id, status, codes in con.execute(
            f"SELECT repo_id, status, list_sort(list_distinct([f.code FOR f IN findings])) FROM {units}").fetchall():
        rows[repo_id] = (status, list(codes))
    return rows, proc


def security_table() -> str:
    """The table between the corpus markers of SECURITY.md."""
    text = SECURITY_MD.read_text()
    return text[text.index(START) + len(START):text.index(END)].strip()


if __name__ == "__main__":
    import tempfile

    if "--write" not in sys.argv:
        sys.exit("usage: python tests/corpus.py --write   (rescan the corpus, rewrite SECURITY.md's table)")
    with tempfile.TemporaryDirectory() as d:
        found, proc = scan_corpus(Path(d))
    text = SECURITY_MD.read_text()
    new = text[:text.index(START) + len(START)] + "\n" + table(found) + "\n" + text[text.index(END):]
    SECURITY_MD.write_text(new)
    print(f"SECURITY.md: {len(CASES)} cases (scan exit {proc.returncode}, peak RSS {proc.maxrss_kb / 1024:.0f} MiB)")

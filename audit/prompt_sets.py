"""Prompt sets named by a spec string: what the behaviour probes and the reference directions read.

- ``harmbench:test`` / ``harmbench:val``: HarmBench standard behaviours (Mazeika et al. 2024;
  MIT, shipped as package data); the test split is the default forbidden set: the zoo never trains
  on HarmBench;
- ``strongreject:heldout`` / ``strongreject:all``: StrongREJECT forbidden prompts (Souly et al. 2024;
  MIT); ``heldout`` is the fifth the zoo never trains on;
- ``benign:heldout``: the held-out fifth of the project's benign instructions;
- ``csv:PATH:COLUMN`` / ``jsonl:PATH:FIELD``: any column of a local file (at most
  :data:`MAX_PROMPTS` prompts of at most :data:`MAX_PROMPT_CHARS` characters are read).

Every prompt has an id (``<spec>:<index>``) and a sha256, stored with each judged answer.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from audit.errors import ConfigurationError

MAX_PROMPTS = 10_000
MAX_PROMPT_CHARS = 8_000


@dataclass(frozen=True)
class ProbePrompt:
    id: str
    text: str
    sha256: str


def load_prompts(spec: str, n: int | None = None) -> list[ProbePrompt]:
    """The first ``n`` prompts (all when ``None``) of the set named by ``spec`` (module docstring).

    Raises:
        ConfigurationError: an unknown spec, a file that cannot be read, a missing column, or an
            empty set.
    """
    kind, _, rest = spec.partition(":")
    if kind in ("csv", "jsonl"):
        path, _, column = rest.rpartition(":")
        if not path or not column:
            raise ConfigurationError(f"prompt set {spec!r}: expected {kind}:PATH:COLUMN")
        texts = _from_file(kind, Path(path), column)
    else:
        texts = _builtin(kind, rest)
    if n is not None:
        texts = texts[:n]
    if not texts:
        raise ConfigurationError(f"prompt set {spec!r} is empty")
    return [ProbePrompt(f"{spec}:{i}", t, hashlib.sha256(t.encode()).hexdigest()) for i, t in enumerate(texts)]


def prompts_sha256(prompts: list[ProbePrompt]) -> str:
    """sha256 over the prompts' hashes, in order: the identity of a prompt set."""
    h = hashlib.sha256()
    for p in prompts:
        h.update(p.sha256.encode())
    return h.hexdigest()


def _builtin(kind: str, split: str) -> list[str]:
    from audit.datasets import benign_prompts, forbidden_prompts, harmbench_behaviors, held_out

    if kind == "harmbench" and split in ("test", "val"):
        return [p.text for p in harmbench_behaviors(split)]
    if kind == "strongreject" and split in ("heldout", "all"):
        prompts = forbidden_prompts()
        return [p.text for p in (held_out(prompts) if split == "heldout" else prompts)]
    if kind == "benign" and split == "heldout":
        return [p.text for p in held_out(benign_prompts())]
    raise ConfigurationError(f"unknown prompt set {kind}:{split}; known: harmbench:test, harmbench:val, "
                             "strongreject:heldout, strongreject:all, benign:heldout, csv:PATH:COLUMN, "
                             "jsonl:PATH:FIELD")


def _from_file(kind: str, path: Path, column: str) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            if kind == "csv":
                reader = csv.DictReader(fh)
                if reader.fieldnames is None or column not in reader.fieldnames:
                    raise ConfigurationError(f"{path}: no column {column!r} (columns: {reader.fieldnames})")
                rows = [r[column] for _, r in zip(range(MAX_PROMPTS), reader)]
            else:
                rows = []
                for _, line in zip(range(MAX_PROMPTS), fh):
                    if line.strip():
                        obj = json.loads(line)
                        if not isinstance(obj, dict) or column not in obj:
                            raise ConfigurationError(f"{path}: a line has no field {column!r}")
                        rows.append(str(obj[column]))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise ConfigurationError(f"cannot read prompts from {path}: {exc}") from None
    return [r[:MAX_PROMPT_CHARS] for r in rows if r and r.strip()]

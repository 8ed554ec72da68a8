"""References of a base model that analyzers compare adapters against, computed once per base
revision and kept in the store (shared by the behaviour probes' refusal directions and the
``directions`` analyzer's per-module inputs).

A reference contrasts forbidden prompts with benign ones: the held-out StrongREJECT prompts
(:data:`FORBIDDEN`) and the held-out benign instructions (:data:`BENIGN`), which the zoo never
trains on. It is stored as one safetensors blob whose metadata names the base (name, revision), the
prompt specs, their sha256 and counts, at a path fixed by (base revision, reference version,
prompt hashes), so every actor of every scan finds the same artifact; the first to need it
computes it on the loaded base and writes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from audit.prompt_sets import ProbePrompt, load_prompts, prompts_sha256

FORBIDDEN = "strongreject:heldout"
BENIGN = "benign:heldout"


@dataclass(frozen=True)
class StoredReference:
    """One reference blob: its tensors (float32, on CPU), its metadata and its path in the store."""

    tensors: dict[str, Any]
    meta: dict
    path: str
    """Relative to the store root."""


def reference_path(base_revision: str, version: str, forbidden_sha: str, benign_sha: str) -> str:
    """Where a reference of ``version`` for a base revision and its two prompt sets is stored."""
    return f"artifacts/references/{base_revision[:16]}/{version}-{forbidden_sha[:12]}-{benign_sha[:12]}.safetensors"


def stored_reference(store, runtime, base, version: str,
                     compute: Callable[[Any, list[ProbePrompt], list[ProbePrompt]], dict[str, Any]], *,
                     n_forbidden: int | None = None, n_benign: int | None = None) -> StoredReference:
    """The reference of ``version`` for ``base`` from ``store``; when it is missing or unreadable,
    ``compute(runtime, forbidden, benign)`` on ``runtime``'s loaded base (the base is loaded only
    then) gives its tensors, which are stored first.

    Raises:
        StoreError: the store cannot be written.
        ConfigurationError: a prompt set cannot be loaded.
    """
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    from audit.errors import StoreError

    forbidden, benign = load_prompts(FORBIDDEN, n_forbidden), load_prompts(BENIGN, n_benign)
    f_sha, b_sha = prompts_sha256(forbidden), prompts_sha256(benign)
    path = reference_path(base.revision, version, f_sha, b_sha)
    meta = {"version": version, "base_model": base.name, "base_revision": base.revision,
            "forbidden": FORBIDDEN, "forbidden_sha256": f_sha, "n_forbidden": len(forbidden),
            "benign": BENIGN, "benign_sha256": b_sha, "n_benign": len(benign)}
    try:
        tensors = st_load(store.read_blob(path))
    except (StoreError, ValueError, OSError):
        tensors = None
    if tensors is None:
        runtime.use_base(base)
        tensors = {k: v.contiguous() for k, v in compute(runtime, forbidden, benign).items()}
        store.write_blob(path, st_save(tensors, metadata={"meta": json.dumps(meta, sort_keys=True)}))
    return StoredReference(tensors=tensors, meta=meta, path=path)


def bare_base(runtime, n: int) -> list[str] | None:
    """``adapter_names`` that make a batch of ``n`` prompts run on the bare base where the loaded
    model holds adapters (peft's ``__base__``), else ``None``."""
    return ["__base__"] * n if hasattr(runtime.model, "peft_config") else None

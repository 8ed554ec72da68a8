"""What a Hub repository is (PEFT adapter, full fine-tune, neither) and which of its files an audit needs.

Pure functions of what the Hub API lists (``library_name``, tags, file names): no network.

A repository is a **PEFT adapter** when any of these holds (the Hub's own conventions):
``library_name`` is ``peft``; a tag ``base_model:adapter:<base>`` (the Hub derives it from the
card's ``base_model`` when the repo holds an adapter); an ``adapter_config.json`` at its root.
It is a **full fine-tune** when a tag says ``base_model:finetune:<base>``, or when it holds a
``config.json`` and safetensors weights and no ``adapter_config.json``. Anything else (a
dataset-like repo, a base model of the organization's own) is not audited.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

from audit.adapter.weights import PICKLE_NAMES, SAFETENSORS_NAME

RepoKind = Literal["adapter", "full_finetune"]

ADAPTER_CONFIG = "adapter_config.json"
MODEL_CONFIG = "config.json"
CARD = "README.md"
_MATTER_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_SHARD_RE = re.compile(r"^model-\d+-of-\d+\.safetensors$")


def repo_kind(library_name: str | None, tags: Iterable[str] | None, filenames: Iterable[str]) -> RepoKind | None:
    """Classify a repository from its listing (see the module docstring); ``None``: not audited."""
    names = {n for n in filenames if "/" not in n}
    tags = [str(t) for t in (tags or ())]
    if (library_name or "").lower() == "peft" or ADAPTER_CONFIG in names \
            or any(t.startswith("base_model:adapter:") for t in tags):
        return "adapter"
    if any(t.startswith("base_model:finetune:") for t in tags):
        return "full_finetune"
    if MODEL_CONFIG in names and any(n.endswith(".safetensors") for n in names):
        return "full_finetune"
    return None


def base_model_from_tags(tags: Iterable[str] | None) -> str | None:
    """The base named by a ``base_model:adapter:<id>`` or ``base_model:finetune:<id>`` tag, if any."""
    for tag in tags or ():
        for prefix in ("base_model:adapter:", "base_model:finetune:"):
            if str(tag).startswith(prefix):
                return str(tag)[len(prefix):] or None
    return None


def files_that_matter(filenames: Iterable[str]) -> list[str]:
    """Root files an audit reads or refuses (configs, card, weights), sorted: what a ref lists."""
    keep = {ADAPTER_CONFIG, MODEL_CONFIG, CARD}
    return sorted(n for n in filenames if "/" not in n and (n in keep or n.endswith(_MATTER_SUFFIXES)))


def files_to_download(kind: RepoKind, filenames: Sequence[str]) -> list[str]:
    """The files to download for an audit of ``kind``, in download order.

    Adapter: ``adapter_config.json``, ``README.md`` and the one weights file the audit reads, chosen
    as :func:`audit.adapter.weights.locate_weights` chooses it (``adapter_model.safetensors``, else
    the pickle names peft used to write, which the audit refuses by their bytes without unpickling,
    else a lone ``*.safetensors``). Full fine-tune: ``config.json``, ``README.md`` and its safetensors
    weights (``model.safetensors``, else the ``model-XXXXX-of-YYYYY.safetensors`` shards, else every
    root ``*.safetensors``); pickle weights of a fine-tune are refused from their names alone.
    """
    names = set(files_that_matter(filenames))
    out = [n for n in (ADAPTER_CONFIG if kind == "adapter" else MODEL_CONFIG, CARD) if n in names]
    if kind == "adapter":
        lone = [n for n in names if n.endswith(".safetensors")]
        for name in (SAFETENSORS_NAME, *PICKLE_NAMES, *(lone if len(lone) == 1 else ())):
            if name in names:
                out.append(name)
                break
        return out
    if "model.safetensors" in names:
        return out + ["model.safetensors"]
    shards = sorted(n for n in names if _SHARD_RE.match(n))
    return out + (shards or sorted(n for n in names if n.endswith(".safetensors") and n != SAFETENSORS_NAME))

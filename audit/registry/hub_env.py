"""Hub settings read from the environment when they are used, not when a module is imported.

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_CACHE`` and its timeouts once, at import. A
registry opened by spec in a Ray actor, a CLI process or a test sets its environment before it
crawls, so lora-audit resolves these itself at call time and passes them to the client
explicitly (``endpoint=``, ``cache_dir=``, ``etag_timeout=``), falling back to the library's
values. The token is never handled here: the client reads ``HF_TOKEN`` or the token file itself.
"""

from __future__ import annotations

import os
from pathlib import Path


def hub_endpoint() -> str:
    """``$HF_ENDPOINT`` (without a trailing ``/``), else huggingface_hub's endpoint (``https://huggingface.co``)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_cache_dir() -> Path:
    """The Hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else huggingface_hub's default."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def etag_timeout() -> float:
    """Seconds to wait for a file's metadata (HEAD): ``$HF_HUB_ETAG_TIMEOUT``, else the library default (10)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_ETAG_TIMEOUT")
    try:
        return float(value) if value else float(constants.HF_HUB_ETAG_TIMEOUT)
    except ValueError:
        return float(constants.HF_HUB_ETAG_TIMEOUT)

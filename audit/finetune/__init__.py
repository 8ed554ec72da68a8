"""Full fine-tunes: top-k delta spectra of ``W_ft − W_base`` against a base model found locally.

The names are loaded on first use (PEP 562): the base lookup needs no torch, the audit does.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"audit_finetune": "audit.finetune.finetune_audit", "BASES_ENV": "audit.finetune.base_lookup",
          "find_local_base": "audit.finetune.base_lookup"}

__all__ = ["BASES_ENV", "audit_finetune", "find_local_base"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)

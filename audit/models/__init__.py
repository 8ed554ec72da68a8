"""Base models (local safetensors copies) and loading them for probes and training."""

from audit.models.base import SMOLLM2, LocalBaseModel, resolve_base, save_base

__all__ = ["SMOLLM2", "LocalBaseModel", "resolve_base", "save_base"]

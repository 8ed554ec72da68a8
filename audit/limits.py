"""Caps on what an untrusted adapter may declare, checked before anything is materialized."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseSettings):
    """Size caps for reading untrusted adapters. All sizes in bytes or elements.

    The defaults admit a rank-256 LoRA on every projection of a 70B model (about 10 GB of fp32
    factors) and refuse what no adapter needs: a config of megabytes, a million tensors, a
    dimension over a million. Each is a setting: ``LORA_AUDIT_<NAME>`` in the environment (e.g.
    ``LORA_AUDIT_MAX_WEIGHTS_BYTES=1000000000``) overrides the default (pydantic-settings).
    """

    model_config = SettingsConfigDict(frozen=True, env_prefix="LORA_AUDIT_")

    max_weights_bytes: int = 16 * 2**30
    """Largest weights file read."""
    max_header_bytes: int = 100_000_000
    """Largest safetensors header (JSON) read; safetensors' own cap."""
    max_config_bytes: int = 1 * 2**20
    """Largest ``adapter_config.json`` read."""
    max_card_bytes: int = 1 * 2**20
    """Largest model card (``README.md``) read."""
    max_tensors: int = 100_000
    """Most tensors a weights file may declare."""
    max_dim: int = 1_048_576
    """Largest single tensor dimension."""
    max_rank: int = 4096
    """Largest LoRA rank (rows of ``A``)."""
    max_tensor_elements: int = 2**31
    """Most elements in one tensor."""
    max_total_elements: int = 2**33
    """Most elements over the whole file."""


DEFAULT_LIMITS = Limits()

"""Caps on what an untrusted adapter may declare, checked before anything is materialized."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict

ENV_PREFIX = "LORA_AUDIT_"


class Limits(BaseModel):
    """Size caps for reading untrusted adapters (and for the base models a scan may fetch). All sizes
    in bytes or elements.

    The defaults admit a rank-256 LoRA on every projection of a 70B model (about 10 GB of fp32
    factors) and refuse what no adapter needs: a config of megabytes, a million tensors, a
    dimension over a million. Each is a setting: ``LORA_AUDIT_<NAME>`` in the environment (e.g.
    ``LORA_AUDIT_MAX_WEIGHTS_BYTES=1000000000``) overrides the default (:meth:`from_env`).
    """

    model_config = ConfigDict(frozen=True)

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
    max_base_bytes: int = 2 * 10**9
    """Largest base model ``lora-audit scan --fetch-bases`` downloads: its config, safetensors weights
    and tokenizer files in all, as the Hub declares them (2 GB: a 1B-parameter model in bf16)."""


    @classmethod
    def from_env(cls) -> Limits:
        """The defaults, with each ``LORA_AUDIT_<NAME>`` of the environment applied, parsed and
        validated by pydantic-settings (imported only when one is set: its import costs about
        60 ms of every command).

        Raises:
            pydantic.ValidationError: a value that is not a valid setting (``LORA_AUDIT_MAX_DIM=big``).
        """
        wanted = {f"{ENV_PREFIX}{name}".upper() for name in cls.model_fields}
        if not any(key.upper() in wanted for key in os.environ):
            return cls()
        from pydantic import create_model
        from pydantic_settings import BaseSettings, SettingsConfigDict

        class _Settings(BaseSettings):
            model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, case_sensitive=False)

        fields = {name: (f.annotation, f.default) for name, f in cls.model_fields.items()}
        return cls(**create_model("LimitsSettings", __base__=_Settings, **fields)().model_dump())


DEFAULT_LIMITS = Limits.from_env()
"""The limits of this process: the defaults and the environment's ``LORA_AUDIT_<NAME>`` settings."""


def with_base_cap(max_base_bytes: int | None) -> Limits:
    """:data:`DEFAULT_LIMITS` with ``max_base_bytes`` (bytes) set, or unchanged when ``None`` (what
    ``--max-base-bytes`` of a scan and the nightly flow's parameter give)."""
    if max_base_bytes is None:
        return DEFAULT_LIMITS
    return DEFAULT_LIMITS.model_copy(update={"max_base_bytes": max_base_bytes})

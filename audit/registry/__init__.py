"""Registries: where adapters come from (a local folder, a Hugging Face Hub organization)."""

from __future__ import annotations

from audit.errors import ConfigurationError
from audit.registry.base import Listing, Registry
from audit.registry.local import LocalRegistry

__all__ = ["Listing", "LocalRegistry", "Registry", "open_registry"]


def open_registry(spec: str) -> Registry:
    """Open a registry from its spec string (what ``Registry.name`` gives back).

    ``local:/path`` or a plain path: a folder; ``hub:ORG``: a Hugging Face Hub organization.

    Raises:
        ConfigurationError: unknown scheme, or the registry cannot be opened.
    """
    if spec.startswith("hub:"):
        from audit.registry.hub import HubRegistry

        return HubRegistry(spec.removeprefix("hub:"))
    return LocalRegistry(spec.removeprefix("local:"))

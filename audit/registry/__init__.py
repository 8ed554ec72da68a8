"""Registries: where adapters come from (a local folder, a Hugging Face Hub organization)."""

from __future__ import annotations

from audit.errors import ConfigurationError
from audit.registry.base import Listing, Registry
from audit.registry.local import LocalRegistry

__all__ = ["Listing", "LocalRegistry", "Registry", "open_registry", "registry_spec"]


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


def registry_spec(registry: str | None, hub_org: str | None) -> str:
    """The spec string of a registry given as a folder (or spec) or as a Hub organization.

    Raises:
        ConfigurationError: neither or both are given.
    """
    from pathlib import Path

    if bool(registry) == bool(hub_org):
        raise ConfigurationError("give exactly one of registry (a folder) and hub_org")
    if hub_org:
        return f"hub:{hub_org}"
    assert registry is not None
    if registry.startswith(("local:", "hub:")):
        return registry
    return f"local:{Path(registry).expanduser().resolve()}"

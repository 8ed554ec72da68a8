"""The registry interface: where adapters are listed and fetched from.

A registry yields :class:`AdapterRef` records (identity and revision, cheap to compute) and, on
request, makes one adapter's files available on local disk. Local folders and Hugging Face Hub
organizations implement the same protocol, so the scan does not know which it talks to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from audit.findings import Note
from audit.records import AdapterRef


@dataclass
class Listing:
    """What listing a registry produced: the adapters, and problems met while listing."""

    refs: list[AdapterRef] = field(default_factory=list)
    notes: list[tuple[str, Note]] = field(default_factory=list)
    """``(repo_id, note)`` for repositories that could not be listed properly."""


@runtime_checkable
class Registry(Protocol):
    """A source of adapters."""

    @property
    def name(self) -> str:
        """Stable name of the registry, written on every row (``local:/abs/path``, ``hub:org``)."""
        ...

    def list_adapters(self) -> Listing:
        """List every adapter with its current revision. Cheap: reads no weights."""
        ...

    def fetch(self, ref: AdapterRef) -> AdapterRef:
        """Make the files of ``ref`` available on local disk; returns the ref with ``local_dir`` set.

        Raises:
            AuditError: permanent (access denied, gone) or transient (network) failures.
        """
        ...

"""Where a scan's analyses run: in this process or on a Ray actor pool (no heavy imports here:
the CLI reads these defaults before it knows what a call needs)."""

from __future__ import annotations

from dataclasses import dataclass

RAY_THRESHOLD = 256
"""New adapters past which a scan that was not told where to run uses the Ray actor pool."""


@dataclass(frozen=True)
class Placement:
    """Where a scan's analyses run.

    Attributes:
        in_process: ``True``: in this process; ``False``: on a Ray actor pool; ``None`` (auto): on
            Ray when ``workers`` or ``ray_address`` (or ``$RAY_ADDRESS``) asks for a cluster or the
            registry has more than ``ray_threshold`` new adapters, else in this process.
        workers: Ray actors for the spectra (default: one per CPU of the cluster).
        ray_address: the Ray cluster to join (default: Ray started in-process).
        ray_threshold: see ``in_process``.
    """

    in_process: bool | None = None
    workers: int | None = None
    ray_address: str | None = None
    ray_threshold: int = RAY_THRESHOLD

    def asked_for_ray(self) -> bool:
        """Whether Ray was asked for (``in_process=False``, ``workers``, a cluster address)."""
        import os

        if self.in_process is not None:
            return not self.in_process
        return self.workers is not None or bool(self.ray_address or os.environ.get("RAY_ADDRESS"))

    def on_ray(self, n_new: int) -> bool:
        """Whether ``n_new`` new adapters are audited on Ray under this placement (never for none)."""
        return n_new > 0 and (self.asked_for_ray() or (self.in_process is None and n_new > self.ray_threshold))

"""Where a running scan reports progress, without the flow knowing who listens.

The CLI sets a sink (a rich progress bar) in a context variable; the scan steps report to
whatever sink is current (none by default). This keeps flow parameters plain data, as Prefect
deployments need them to be.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol


class ProgressSink(Protocol):
    def plan(self, n_listed: int, n_new: int) -> None:
        """The diff is known: ``n_new`` of ``n_listed`` adapters will be audited."""

    def outcome(self, outcome: Any) -> None:
        """One adapter's outcome was written (an ``AuditResult`` or a ``Deferred``)."""

    # optional, for the probe stage (a sink without them is simply not told):
    # probe_plan(plan: audit.probes.plan.ProbePlan) -> None   what the probe stage will do
    # probe_outcome(outcome) -> None                           one probe unit written (or deferred)
    # batch(description: str, done: int, total: int) -> None   prompts answered so far, in this process


_SINK: ContextVar[ProgressSink | None] = ContextVar("lora_audit_progress", default=None)


def current() -> ProgressSink | None:
    return _SINK.get()


@contextmanager
def reporting_to(sink: ProgressSink) -> Iterator[None]:
    """Send the progress of scans run inside this block to ``sink``."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)

"""What a worker does with one listed adapter: fetch it, audit it, classify the outcome.

``process_ref`` never raises for a problem with one adapter:

- a permanent problem (bad files, access denied, deleted) becomes a committed ``failed`` result
  with a finding, so the adapter is not retried until the analyzer version changes;
- a transient problem (network, I/O) becomes a :class:`Deferred`: nothing is written and the next
  scan tries again;
- an unexpected exception (a bug) becomes an ``internal_error`` finding, so one strange adapter
  cannot stop a nightly scan of thousands.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from audit.errors import AuditError, PermanentAuditError, TransientAuditError
from audit.limits import DEFAULT_LIMITS, Limits
from audit.records import AdapterRef, AuditResult
from audit.registry.base import Registry
from audit.unit import audit_adapter, failed_result
from audit.version import ANALYZER_VERSION


@dataclass(frozen=True)
class Deferred:
    """A unit that failed for a transient reason: not written; retried by the next scan."""

    ref: AdapterRef
    error: str


Outcome = AuditResult | Deferred


def process_ref(registry: Registry, ref: AdapterRef, *, limits: Limits = DEFAULT_LIMITS,
                analyzer_version: str = ANALYZER_VERSION) -> Outcome:
    """Fetch and audit one adapter; see the module docstring for how failures are classified."""
    try:
        fetched = registry.fetch(ref)
    except PermanentAuditError as exc:
        return failed_result(ref, exc.with_context(repo_id=ref.repo_id, revision=ref.revision), "fetch",
                             analyzer_version=analyzer_version)
    except (TransientAuditError, OSError) as exc:
        return Deferred(ref, f"fetch: {exc}")
    try:
        return audit_adapter(fetched, limits=limits, analyzer_version=analyzer_version)
    except (TransientAuditError, OSError) as exc:
        return Deferred(ref, f"audit: {exc}")
    except Exception as exc:  # noqa: BLE001 - one adapter's bug must not stop the scan
        last = traceback.extract_tb(exc.__traceback__)[-1]
        err = AuditError(f"unexpected {type(exc).__name__}: {exc} (at {last.filename}:{last.lineno})",
                         code="internal_error", repo_id=ref.repo_id, revision=ref.revision)
        return failed_result(ref, PermanentAuditError(err.message, code=err.code), "audit",
                             analyzer_version=analyzer_version)

"""The delta-spectra analyzer: fetch an adapter, measure every module's delta spectrum, one
``units`` file per adapter (see :mod:`audit.adapter_audit`). Needs no base model.

:func:`process_ref` never raises for a problem with one adapter:

- a permanent problem (bad files, access denied, deleted) becomes a committed ``failed`` result
  with a finding, so the adapter is not retried until the analyzer version changes;
- a transient problem (network, I/O) becomes a :class:`~audit.records.Deferred`: nothing is
  written and the next scan tries again;
- an unexpected exception (a bug) becomes an ``internal_error`` finding, so one strange adapter
  cannot stop a nightly scan of thousands.
"""

from __future__ import annotations

import traceback

from audit.adapter_audit import audit_adapter, failed_result
from audit.analyzers.base import AnalyzerContext, Resources, Target
from audit.errors import AuditError, PermanentAuditError, TransientAuditError
from audit.limits import DEFAULT_LIMITS, Limits
from audit.records import AdapterRef, AuditResult, Deferred
from audit.registry.base import Registry
from audit.version import ANALYZER_VERSION


class SpectraAnalyzer:
    """Exact delta spectra of every LoRA module (top-k spectra of ``W_ft - W_base`` for full fine-tunes).

    Args:
        version: the analyzer version written on its rows (default :data:`audit.version.ANALYZER_VERSION`).
    """

    name = "spectra"
    needs_base = False
    resources = Resources(num_cpus=1)
    params_in_identity = False
    """A result's identity is the spectra version alone (``analysis_done`` rows with empty params)."""

    def __init__(self, version: str = ANALYZER_VERSION) -> None:
        self.version = version
        self.ctx: AnalyzerContext | None = None

    def setup(self, ctx: AnalyzerContext) -> None:
        if ctx.registry is None:
            raise ValueError("the spectra analyzer needs a registry to fetch adapters from")
        self.ctx = ctx

    def run(self, target: Target):
        """Fetch and audit ``target.ref``: an ``AuditResult``, or a ``Deferred`` for a transient failure."""
        assert self.ctx is not None and self.ctx.registry is not None, "setup() first"
        if target.ref is None:
            raise ValueError("the spectra analyzer runs on adapters, not on bare base models")
        return process_ref(self.ctx.registry, target.ref, limits=self.ctx.limits, analyzer_version=self.version)

    def failed(self, target: Target, code: str, message: str):
        """The ``AuditResult`` of an adapter that could not be audited at all (``status = failed``,
        one error finding with ``code``)."""
        if target.ref is None:
            raise ValueError("the spectra analyzer runs on adapters, not on bare base models")
        return failed_result(target.ref, PermanentAuditError(message, code=code), "audit",
                             analyzer_version=self.version)


def process_ref(registry: Registry, ref: AdapterRef, *, limits: Limits = DEFAULT_LIMITS,
                analyzer_version: str = ANALYZER_VERSION) -> AuditResult | Deferred:
    """Fetch and audit one adapter (a full fine-tune, ``kind == "full_finetune"``, by
    :func:`audit.finetune.audit_finetune`); see the module docstring for how failures are classified."""
    try:
        fetched = registry.fetch(ref)
    except PermanentAuditError as exc:
        return failed_result(ref, exc.with_context(repo_id=ref.repo_id, revision=ref.revision), "fetch",
                             analyzer_version=analyzer_version)
    except (TransientAuditError, OSError) as exc:
        return Deferred(ref, f"fetch: {exc}")
    try:
        if fetched.kind == "full_finetune":  # no LoRA factors: top-k spectra of W_ft - W_base instead
            from audit.finetune import audit_finetune as audit
        else:
            audit = audit_adapter
        return audit(fetched, limits=limits, analyzer_version=analyzer_version)
    except (TransientAuditError, OSError) as exc:
        return Deferred(ref, f"audit: {exc}")
    except Exception as exc:  # noqa: BLE001 - one adapter's bug must not stop the scan
        last = traceback.extract_tb(exc.__traceback__)[-1]
        err = AuditError(f"unexpected {type(exc).__name__}: {exc} (at {last.filename}:{last.lineno})",
                         code="internal_error", repo_id=ref.repo_id, revision=ref.revision)
        return failed_result(ref, PermanentAuditError(err.message, code=err.code), "audit",
                             analyzer_version=analyzer_version)

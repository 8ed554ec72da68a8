"""The delta-spectra analyzer: fetch an adapter, measure every module's delta spectrum, one
``units`` file per adapter (see :mod:`audit.unit`). Needs no base model."""

from __future__ import annotations

from audit.analyzers.base import AnalyzerContext, Resources, Target
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
        from audit.worker import process_ref

        assert self.ctx is not None and self.ctx.registry is not None, "setup() first"
        if target.ref is None:
            raise ValueError("the spectra analyzer runs on adapters, not on bare base models")
        return process_ref(self.ctx.registry, target.ref, limits=self.ctx.limits, analyzer_version=self.version)

    def failed(self, target: Target, code: str, message: str):
        """The ``AuditResult`` of an adapter that could not be audited at all (``status = failed``,
        one error finding with ``code``)."""
        from audit.errors import PermanentAuditError
        from audit.unit import failed_result

        if target.ref is None:
            raise ValueError("the spectra analyzer runs on adapters, not on bare base models")
        return failed_result(target.ref, PermanentAuditError(message, code=code), "audit",
                             analyzer_version=self.version)

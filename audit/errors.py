"""The one error hierarchy of lora-audit.

Every error names the adapter (``repo_id``/``revision``) and, where there is one, the ``file`` it
concerns, and carries a stable machine-readable ``code`` (see :mod:`audit.findings`). Errors are
either *transient* (worth retrying: a network hiccup, a busy store) or *permanent* (the input is
bad: retrying gives the same answer, so the adapter becomes a finding and the scan goes on).

Each error also inherits the builtin exception that fits it (``ValueError`` for malformed input,
``PermissionError`` for denied access, ...) so that generic handlers still work, and defines how
it pickles: Ray ships exceptions between processes, and an exception whose ``__init__`` takes
keyword-only arguments does not survive the default pickling.

Pattern from huggingface_hub's ``errors.py``.
"""

from __future__ import annotations

from typing import Any


class AuditError(Exception):
    """Base of every error raised by lora-audit.

    Attributes:
        message: what went wrong, for a person.
        code: stable machine-readable finding code (``snake_case``), see :class:`audit.findings.Code`.
        repo_id: the adapter's repository id (registry-relative), or ``None``.
        revision: the adapter's revision (commit sha or content hash), or ``None``.
        file: the file inside the adapter the error concerns, or ``None``.
    """

    default_code = "audit_error"
    transient = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        repo_id: str | None = None,
        revision: str | None = None,
        file: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.repo_id = repo_id
        self.revision = revision
        self.file = file

    def with_context(self, *, repo_id: str | None = None, revision: str | None = None,
                     file: str | None = None) -> AuditError:
        """Fill in the adapter and file this error concerns where they are still unknown; returns self."""
        self.repo_id = self.repo_id or repo_id
        self.revision = self.revision or revision
        self.file = self.file or file
        return self

    def __str__(self) -> str:
        where = []
        if self.repo_id:
            where.append(self.repo_id + (f"@{self.revision[:12]}" if self.revision else ""))
        if self.file:
            where.append(self.file)
        prefix = f"[{self.code}] " + (f"{' / '.join(where)}: " if where else "")
        return prefix + self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.code, self.repo_id, self.revision, self.file))


def _rebuild(cls: type[AuditError], message: str, code: str, repo_id: str | None,
             revision: str | None, file: str | None) -> AuditError:
    return cls(message, code=code, repo_id=repo_id, revision=revision, file=file)


class TransientAuditError(AuditError):
    """A failure that may go away on retry (network, timeouts, a busy store). Never a finding."""

    default_code = "transient"
    transient = True


class PermanentAuditError(AuditError):
    """A failure caused by the input itself: retrying gives the same answer; recorded as a finding."""

    default_code = "permanent"


# --- permanent: the adapter is bad or unsupported -------------------------------------------------


class AdapterFormatError(PermanentAuditError, ValueError):
    """The adapter's files are malformed: bad JSON, bad safetensors header, inconsistent shapes."""

    default_code = "adapter_format"


class LimitExceededError(PermanentAuditError, ValueError):
    """A declared size (file bytes, tensor count, dimension, elements) exceeds a configured cap."""

    default_code = "limit_exceeded"


class UnsafeFormatError(PermanentAuditError, ValueError):
    """The weights are in a format that would execute code when loaded (pickle); never loaded."""

    default_code = "pickle_weights_refused"


class UnsupportedAdapterError(PermanentAuditError, ValueError):
    """A well-formed adapter of a kind lora-audit has no delta spectrum for (prompt tuning, IA3...)."""

    default_code = "unsupported_peft_type"


class AccessDeniedError(PermanentAuditError, PermissionError):
    """The registry refused access (gated or private repository, HTTP 401/403)."""

    default_code = "access_denied"


class AdapterNotFoundError(PermanentAuditError, FileNotFoundError):
    """The adapter or one of its files disappeared between listing and reading (HTTP 404)."""

    default_code = "not_found"


class BaseModelUnavailableError(PermanentAuditError, LookupError):
    """A full fine-tune's base model is not declared or not available on this machine (never downloaded)."""

    default_code = "base_model_unavailable"


class BaseShapeMismatchError(PermanentAuditError, ValueError):
    """An adapter's tensors do not fit the base model it names (other shapes or modules): a probe
    cannot load it."""

    default_code = "base_shape_mismatch"


# --- transient: infrastructure ---------------------------------------------------------------------


class RegistryUnavailableError(TransientAuditError, ConnectionError):
    """The registry could not be reached or timed out; the adapter will be tried on the next run."""

    default_code = "registry_unavailable"


class RegistryTimeoutError(RegistryUnavailableError, TimeoutError):
    """The registry did not answer in time (after the client's own retries)."""

    default_code = "registry_timeout"


class StoreError(TransientAuditError, OSError):
    """The Parquet store could not be read or written."""

    default_code = "store_error"


class IntegrityError(AuditError, ValueError):
    """A stored artifact does not match what was recorded for it (tampered, truncated, or holding
    types that could execute code); it is refused."""

    default_code = "integrity"


class MethodMismatchError(AuditError, ValueError):
    """A classifier was asked to judge an adapter of another training method (refused by
    construction: cross-method transfer fails)."""

    default_code = "method_mismatch"


# --- usage ----------------------------------------------------------------------------------------


class ConfigurationError(AuditError, ValueError):
    """lora-audit was called with settings that cannot work (no registry, a bad store URI...)."""

    default_code = "configuration"

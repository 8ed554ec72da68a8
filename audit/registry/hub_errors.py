"""One function turns what huggingface_hub raises into lora-audit's typed errors, without secrets.

huggingface_hub already turns HTTP statuses into typed errors (``utils/_http.py::hf_raise_for_status``);
this module maps those onto :mod:`audit.errors`:

=====================================================  ==========================================
huggingface_hub raises                                 lora-audit error (code)
=====================================================  ==========================================
``GatedRepoError`` (401/403, ``X-Error-Code: GatedRepo``)  ``AccessDeniedError`` (``gated_repo``)
``RepositoryNotFoundError`` with 401/403                ``AccessDeniedError`` (``access_denied``): private,
                                                       or the token may not read it
``DisabledRepoError``, other 401/403                    ``AccessDeniedError`` (``access_denied``)
``RepositoryNotFoundError`` with 404, other 404         ``AdapterNotFoundError`` (``not_found``): deleted
``RevisionNotFoundError``                              ``AdapterNotFoundError``: the commit is gone
``EntryNotFoundError``                                 ``AdapterNotFoundError``: the file is gone
timeouts (``httpx2.TimeoutException``, ``TimeoutError``)  ``RegistryTimeoutError`` (transient)
429 / 5xx after the client's retries, connection errors,  ``RegistryUnavailableError`` (transient)
other ``OSError`` (``LocalEntryNotFoundError`` without a
mappable cause, an incomplete download)
anything else (a bug)                                  ``PermanentAuditError`` (``internal_error``)
=====================================================  ==========================================

``hf_hub_download`` wraps some HEAD failures (a plain 403, a timeout) in ``LocalEntryNotFoundError``
(``raise ... from head_call_error``), so the cause chain is walked and the first error that says
what happened wins.

Secrets: a huggingface_hub HTTP error keeps the request (``exc.request.headers`` holds the
``Authorization`` header) and its message carries whatever the server answered. The typed errors
made here carry only a message built from the status, the server's message and the URL path,
passed through :func:`scrub`, which removes the configured token, anything shaped like a Hub
token (``hf_…``) and any ``Authorization``/``Bearer`` value. Callers raise them ``from None``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from audit.errors import (
    AccessDeniedError,
    AdapterNotFoundError,
    AuditError,
    PermanentAuditError,
    RegistryTimeoutError,
    RegistryUnavailableError,
)

_HF_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{6,}")
_AUTH_RE = re.compile(r"(?i)\b(authorization|x-api-key|cookie)(\s*[:=]\s*)[^\n,;)}\]]+")
_BEARER_RE = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]+")
REDACTED = "<redacted>"
_MAX_MESSAGE = 400


def scrub(text: str) -> str:
    """``text`` without credentials: the configured Hub token (``HF_TOKEN`` or the token file),
    anything shaped like a Hub token (``hf_`` + 6 or more letters/digits), ``Authorization:``,
    ``Cookie:``, ``X-Api-Key:`` values and ``Bearer`` credentials are replaced by ``<redacted>``."""
    token = _configured_token()
    if token:
        text = text.replace(token, REDACTED)
    text = _AUTH_RE.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _BEARER_RE.sub("Bearer " + REDACTED, text)
    return _HF_TOKEN_RE.sub(REDACTED, text)


def _configured_token() -> str | None:
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - a broken token setup must not hide the original error
        return None


def hub_error(exc: BaseException, *, repo_id: str | None = None, revision: str | None = None,
              file: str | None = None) -> AuditError:
    """The lora-audit error for an exception raised by a huggingface_hub call (see the module table).

    Args:
        exc: what huggingface_hub (or httpx2 under it) raised.
        repo_id, revision, file: what the call was about (set on the returned error).

    Returns:
        A new, scrubbed :class:`AuditError`: permanent (``access_denied``, ``gated_repo``,
        ``not_found``, ``internal_error``) or transient (``registry_timeout``,
        ``registry_unavailable``). It never references ``exc``: raise it ``from None``.
    """
    for err in _chain(exc):
        mapped = _map_one(err)
        if mapped is not None:
            cls, code, message = mapped
            return cls(scrub(message)[:_MAX_MESSAGE], code=code, repo_id=repo_id, revision=revision, file=file)
    what = f"{type(exc).__name__}: {_first_line(exc)}"
    if isinstance(exc, OSError):  # I/O under the client (a download that did not complete, a full disk)
        return RegistryUnavailableError(scrub(f"the Hub could not be read ({what})")[:_MAX_MESSAGE],
                                        repo_id=repo_id, revision=revision, file=file)
    # anything else is a bug (ours or the client's): a finding, like any unexpected error of an audit
    return PermanentAuditError(scrub(f"unexpected error while reading the Hub ({what})")[:_MAX_MESSAGE],
                               code="internal_error", repo_id=repo_id, revision=revision, file=file)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _map_one(err: BaseException) -> tuple[type[AuditError], str, str] | None:
    """``(error class, code, message)`` for one exception of the chain, or ``None`` to look further."""
    import httpx2
    from huggingface_hub import errors as hf

    if isinstance(err, AuditError):
        return type(err), err.code, err.message
    if isinstance(err, hf.GatedRepoError):
        return (AccessDeniedError, "gated_repo",
                f"gated repository (HTTP {_status(err)}): this token has not been granted access; "
                f"request access on the Hub, then set HF_TOKEN{_server(err)}")
    if isinstance(err, hf.RepositoryNotFoundError):
        if _status(err) in (401, 403):
            return (AccessDeniedError, "access_denied",
                    f"HTTP {_status(err)}: the repository is private or this token may not read it "
                    f"(set HF_TOKEN to a token with read access){_server(err)}")
        return (AdapterNotFoundError, "not_found",
                f"HTTP {_status(err)}: the repository no longer exists (deleted or renamed since it was listed)")
    if isinstance(err, hf.RevisionNotFoundError):
        return (AdapterNotFoundError, "not_found",
                "the listed commit no longer exists (history rewritten or repository recreated)")
    if isinstance(err, hf.EntryNotFoundError) and not isinstance(err, hf.LocalEntryNotFoundError):
        return AdapterNotFoundError, "not_found", "the file no longer exists at the listed commit"
    if isinstance(err, hf.HfHubHTTPError):
        status = _status(err)
        if status in (401, 403):
            return AccessDeniedError, "access_denied", f"HTTP {status}: access refused{_server(err)}"
        if status == 404:
            return AdapterNotFoundError, "not_found", f"HTTP 404 for {_path(err)}"
        return (RegistryUnavailableError, "registry_unavailable",
                f"HTTP {status} for {_path(err)} after the client's retries{_server(err)}")
    if isinstance(err, (httpx2.TimeoutException, TimeoutError)):
        return RegistryTimeoutError, "registry_timeout", f"the Hub did not answer in time ({type(err).__name__})"
    if isinstance(err, hf.FileMetadataError):
        return (RegistryUnavailableError, "registry_unavailable",
                "the endpoint does not answer like a Hub (no X-Repo-Commit or ETag): check HF_ENDPOINT")
    if isinstance(err, (httpx2.TransportError, ConnectionError, hf.OfflineModeIsEnabled)):
        return RegistryUnavailableError, "registry_unavailable", f"cannot reach the Hub ({type(err).__name__})"
    if isinstance(err, hf.HFValidationError):
        return PermanentAuditError, "not_found", f"not a valid Hub repository id or revision: {_first_line(err)}"
    return None


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def _server(err: BaseException) -> str:
    message = getattr(err, "server_message", None)
    return f" (server: {message.strip().splitlines()[0][:200]})" if message and message.strip() else ""


def _path(err: BaseException) -> str:
    """The URL path of the failed request (no query string, no host)."""
    try:
        return str(err.request.url.path) or "the request"  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when no request is attached
        return "the request"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__

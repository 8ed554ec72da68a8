"""A registry that is a Hugging Face Hub organization, read with huggingface_hub's own client.

- **Listing** (:meth:`HubRegistry.list_adapters`): ``HfApi.list_models(author=ORG, full=True,
  cardData=True)``, which follows the Hub's ``Link: <…>; rel="next"`` pagination and retries
  HTTP 429 after ``Retry-After`` by itself. Each repository is classified from its
  ``library_name``, tags and file names (:func:`audit.registry.hub_files.repo_kind`) and pinned to
  the commit sha the listing gives: ``revision`` is that sha, so a new commit is a new audit and an
  unchanged one is skipped by the scan's diff. Nothing is downloaded.
- **Fetching** (:meth:`HubRegistry.fetch`): when the files an audit needs are already in the Hub
  cache at that sha, nothing is requested at all. Otherwise the root of the tree is listed at the
  sha (``HfApi.list_repo_tree``: sizes, LFS sizes), every file is checked against the caps of
  :class:`audit.limits.Limits` *before* anything is downloaded, and only the needed files
  (:func:`audit.registry.hub_files.files_to_download`) are fetched with ``hf_hub_download`` at the
  sha into the Hub cache (``HEAD``/``GET /{repo}/resolve/{sha}/{file}``; the client retries 429 and
  resumes interrupted downloads). The cache's snapshot folder is the adapter's ``local_dir``; the
  audit reads the files there (and checks their sizes again).
- **Failures** become typed errors (:func:`audit.registry.hub_errors.hub_error`): gated, private,
  deleted repositories are permanent (a finding; the scan goes on), timeouts and an unreachable Hub
  are transient (retried by the next scan). Messages are scrubbed of credentials.

Configuration comes from the environment, read when used: ``HF_ENDPOINT`` (a mirror or a test
server), ``HF_HUB_CACHE``/``HF_HOME``, ``HF_HUB_ETAG_TIMEOUT``/``HF_HUB_DOWNLOAD_TIMEOUT``; the token
is ``HF_TOKEN`` or the token file, read by huggingface_hub itself and never stored here, so a
registry object holds no secret and pickles to Ray actors as three small fields.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from audit.errors import AdapterFormatError, AuditError, ConfigurationError, LimitExceededError
from audit.findings import Note
from audit.limits import DEFAULT_LIMITS, Limits
from audit.records import AdapterRef, FileEntry
from audit.registry.base import Listing
from audit.registry.hub_env import etag_timeout, hub_cache_dir, hub_endpoint
from audit.registry.hub_errors import hub_error
from audit.registry.hub_files import (
    ADAPTER_CONFIG,
    CARD,
    MODEL_CONFIG,
    files_that_matter,
    files_to_download,
    repo_kind,
)
from audit.version import PACKAGE_VERSION

log = logging.getLogger(__name__)

_ORG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")
_LIBRARY = "lora-audit"


class HubRegistry:
    """The PEFT adapters and full fine-tunes of one Hugging Face Hub organization (or user).

    Args:
        org: the organization or user name (``author`` on the Hub).
        limits: caps checked against the sizes the Hub declares before downloading
            (``max_config_bytes`` for ``adapter_config.json``/``config.json``, ``max_card_bytes`` for
            ``README.md``, ``max_weights_bytes`` per weights file and for a fine-tune's weights in all).
        cache_dir: the Hub cache (default: ``$HF_HUB_CACHE``, read when used).

    Constructing one touches no network (Ray actors open registries from their spec string).

    Raises:
        ConfigurationError: ``org`` is not a valid Hub namespace.
    """

    def __init__(self, org: str, *, limits: Limits = DEFAULT_LIMITS, cache_dir: str | Path | None = None) -> None:
        if not _ORG_RE.match(org or "") or "--" in org or ".." in org:
            raise ConfigurationError(f"{org!r} is not a Hugging Face Hub organization or user name")
        self.org = org
        self.limits = limits
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None

    @property
    def name(self) -> str:
        return f"hub:{self.org}"

    def __repr__(self) -> str:
        return f"HubRegistry({self.org!r})"

    # --- listing ------------------------------------------------------------------------------

    def list_adapters(self) -> Listing:
        """One :class:`AdapterRef` per adapter or full fine-tune of the organization, at its commit sha.

        Raises:
            RegistryUnavailableError: the listing failed after the client's retries (transient).
            ConfigurationError: the Hub refused the listing (a bad token, an endpoint that is no Hub).
        """
        listing = Listing()
        try:
            for info in self._api().list_models(author=self.org, full=True, cardData=True):
                self._add(listing, info)
        except Exception as exc:  # noqa: BLE001 - every client failure becomes a typed, scrubbed error
            err = hub_error(exc)
            message = f"cannot list {self.name}: {err.message}"
            if err.transient:  # the flow retries the listing
                raise type(err)(message, code=err.code) from None
            raise ConfigurationError(message, code=err.code) from None  # a bad token or endpoint: say so, stop
        listing.refs.sort(key=lambda r: r.repo_id)
        log.info("listed %d audit-able repositories of %s", len(listing.refs), self.name)
        return listing

    def _add(self, listing: Listing, info: Any) -> None:
        names = [s.rfilename for s in (info.siblings or [])]
        kind = repo_kind(info.library_name, info.tags, names)
        if kind is None:
            return
        if not info.sha:
            listing.notes.append((info.id, Note("list", "not_found", "the listing gives no commit sha", "error")))
            return
        files = tuple(FileEntry(name=n) for n in files_that_matter(names))
        listing.refs.append(AdapterRef(repo_id=info.id, revision=info.sha, registry=self.name, files=files,
                                       kind=kind))

    # --- fetching -----------------------------------------------------------------------------

    def fetch(self, ref: AdapterRef) -> AdapterRef:
        """Download what the audit of ``ref`` needs at ``ref.revision`` into the Hub cache.

        Returns:
            ``ref`` with ``local_dir`` (the cache's snapshot folder for that sha) and ``files``
            (names and sizes the Hub declares) set.

        Raises:
            LimitExceededError: a needed file is larger than its cap (nothing was downloaded).
            AccessDeniedError: gated (``gated_repo``) or private (``access_denied``) repository.
            AdapterNotFoundError: the repository, commit or file is gone (``not_found``).
            AdapterFormatError: the repository holds none of the files an audit reads.
            RegistryTimeoutError, RegistryUnavailableError: transient; the next scan retries.
        """
        try:
            cached = self._cached(ref)
            if cached is not None:
                log.debug("%s: in the Hub cache, nothing to download", ref.adapter_id)
                return cached
            sizes = self._tree_sizes(ref)
            wanted = files_to_download(ref.kind, list(sizes))
            if not wanted:
                raise AdapterFormatError("the repository holds no adapter_config.json, config.json or weights",
                                         code="config_missing" if ref.kind == "adapter" else "weights_missing")
            self._check_caps(ref, {n: sizes[n] for n in wanted})
            folder = self._download(ref, wanted)
        except AuditError as exc:
            raise exc.with_context(repo_id=ref.repo_id, revision=ref.revision)
        except Exception as exc:  # noqa: BLE001 - every client failure becomes a typed, scrubbed error
            raise hub_error(exc, repo_id=ref.repo_id, revision=ref.revision) from None
        files = tuple(FileEntry(name=n, size=sizes[n]) for n in files_that_matter(sizes))
        return ref.model_copy(update={"local_dir": str(folder), "files": files})

    def _cached(self, ref: AdapterRef) -> AdapterRef | None:
        """``ref`` fetched from the cache alone when every needed file is there at this sha, else ``None``."""
        from huggingface_hub import try_to_load_from_cache

        names = [f.name for f in ref.files]
        wanted = files_to_download(ref.kind, names)
        if not wanted:
            return None
        paths = [try_to_load_from_cache(ref.repo_id, n, cache_dir=self.cache_dir, revision=ref.revision)
                 for n in wanted]
        if not all(isinstance(p, str) for p in paths):
            return None
        folder = Path(paths[0]).parent  # type: ignore[arg-type]
        files = tuple(FileEntry(name=n, size=(folder / n).stat().st_size if n in wanted else None) for n in names)
        return ref.model_copy(update={"local_dir": str(folder), "files": files})

    def _tree_sizes(self, ref: AdapterRef) -> dict[str, int]:
        """Sizes in bytes of the files at the root of the repository at ``ref.revision`` (LFS sizes for LFS files)."""
        from huggingface_hub.hf_api import RepoFile

        out: dict[str, int] = {}
        for entry in self._api().list_repo_tree(ref.repo_id, revision=ref.revision, recursive=False):
            if isinstance(entry, RepoFile):
                out[entry.path] = int(entry.lfs.size if entry.lfs is not None else entry.size)
        return out

    def _check_caps(self, ref: AdapterRef, sizes: dict[str, int]) -> None:
        caps = self.limits
        weights_total = 0
        for name, size in sizes.items():
            if name in (ADAPTER_CONFIG, MODEL_CONFIG):
                cap = caps.max_config_bytes
            elif name == CARD:
                cap = caps.max_card_bytes
            else:
                cap = caps.max_weights_bytes
                weights_total += size
            if size > cap:
                raise LimitExceededError(f"the Hub declares {size} bytes, cap is {cap}; not downloaded", file=name)
        if weights_total > caps.max_weights_bytes:
            raise LimitExceededError(f"the Hub declares {weights_total} bytes of weights in all, cap is "
                                     f"{caps.max_weights_bytes}; not downloaded")

    def _download(self, ref: AdapterRef, wanted: list[str]) -> Path:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import silent_tqdm

        folder: Path | None = None
        for name in wanted:
            path = hf_hub_download(ref.repo_id, name, revision=ref.revision, cache_dir=self.cache_dir,
                                   endpoint=hub_endpoint(), etag_timeout=etag_timeout(), tqdm_class=silent_tqdm,
                                   library_name=_LIBRARY, library_version=PACKAGE_VERSION)
            folder = Path(path).parent
        assert folder is not None
        log.debug("%s: downloaded %s", ref.adapter_id, ", ".join(wanted))
        return folder

    # --- plumbing -----------------------------------------------------------------------------

    @property
    def cache_dir(self) -> str:
        return str(self._cache_dir if self._cache_dir is not None else hub_cache_dir())

    def _api(self):  # noqa: ANN202 - huggingface_hub.HfApi, imported lazily
        from huggingface_hub import HfApi

        return HfApi(endpoint=hub_endpoint(), library_name=_LIBRARY, library_version=PACKAGE_VERSION)

"""Base models that are not on this machine: what the Hub says of them, and fetching them when asked.

For each base the probe stage lacks (:func:`audit.finetune.base_lookup.find_local_base` finds none),
:func:`look_up_bases` learns what it can:

- a local registry without ``--fetch-bases``: nothing is asked (the Hub id, size unknown);
- a Hub registry: ``HfApi.model_info(files_metadata=True)`` gives the commit sha and the declared
  size of the files a probe would load; nothing is downloaded;
- ``--fetch-bases``: the default branch is resolved to a commit sha (``HfApi.resolve_revision``,
  which records ``refs/main`` in the Hub cache as ``snapshot_download`` does, so the local lookup
  finds the snapshot afterwards), the files at that sha are listed with their sizes and, when they
  hold safetensors weights and stay under ``Limits.max_base_bytes``, exactly :func:`base_files` are
  downloaded with ``snapshot_download(revision=<sha>, allow_patterns=[…])`` into the Hub cache.

Only config, safetensors weights (and their index), tokenizer and chat-template files are ever
downloaded: never a pickle (``*.bin``, ``*.pt``) nor code (``*.py``); remote code is never trusted.
A failure (gated, private, not found, over the cap, no safetensors, a timeout) is a
:class:`BaseSource` whose :meth:`~BaseSource.sentence` the probe stage puts in its
``base_model_unavailable`` finding; the scan goes on. Messages are scrubbed of credentials
(:func:`audit.registry.hub_errors.hub_error`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from audit.records import Record
from audit.registry.hub_env import etag_timeout, hub_cache_dir, hub_endpoint
from audit.registry.hub_errors import hub_error
from audit.registry.hub_files import CARD, MODEL_CONFIG, files_to_download
from audit.version import PACKAGE_VERSION

if TYPE_CHECKING:
    from huggingface_hub import HfApi

log = logging.getLogger(__name__)

EXTRA_FILES = ("generation_config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "vocab.json", "merges.txt",
               "vocab.txt", "chat_template.jinja", "chat_template.json")
"""Root files a probe may read beside the config and the weights (tokenizer, chat template)."""

_WHY = {
    "over_cap": "it is over the cap",
    "no_safetensors": "it holds no safetensors weights (pickle weights are never loaded)",
    "no_config": "it holds no config.json",
    "size_unknown": "the Hub declares no file sizes, so the cap cannot be checked",
    "gated_repo": "it is gated and this token has not been granted access (request access, then set HF_TOKEN)",
    "access_denied": "it is private or this token may not read it",
    "not_found": "it is not on the Hub",
}


class BaseSource(Record):
    """What is known of a declared base model that is not on this machine."""

    name: str
    """The name the adapter declares (``base_model_name_or_path`` or the card's ``base_model``)."""
    hub_id: str | None = None
    """The Hub repository it names, or ``None`` when it is no Hub id (a path on the author's machine)."""
    sha: str | None = None
    """The commit sha the Hub gave (default branch), when asked."""
    n_bytes: int | None = None
    """Bytes of the files a probe loads (:func:`base_files`), as the Hub declares them."""
    files: tuple[str, ...] = ()
    """Those files' names (what ``--fetch-bases`` downloads), when the Hub was asked."""
    gated: bool = False
    """The Hub says the repository is gated (a download needs a token that was granted access)."""
    fetched: bool = False
    """Downloaded into the Hub cache by this scan."""
    code: str | None = None
    """Why it was not fetched: a key of the table above, or an error code of :mod:`audit.errors`."""
    detail: str | None = None
    """The scrubbed error message, when the Hub failed."""
    cap: int | None = None
    """The cap in bytes it was checked against (``max_base_bytes``), when fetching."""

    def sentence(self) -> str:
        """The ``base_model_unavailable`` finding's message, one sentence: the Hub id and size, why the
        base is not here, and what would give a verdict."""
        mapping = "map it with --base-model NAME=PATH or LORA_AUDIT_BASE_MODELS"
        if self.hub_id is None:
            return f"base model {self.name!r} is not on this machine and is no Hub id (size unknown); {mapping}"
        size = f"{format_bytes(self.n_bytes)} at sha {self.sha[:7]}" if self.n_bytes is not None and self.sha \
            else "size unknown"
        what = f"base model {self.hub_id} (Hub id{', gated' if self.gated else ''}, {size})"
        if self.fetched:
            return f"{what} was downloaded but the Hub cache holds no usable base (config.json + *.safetensors)"
        if self.code is None:
            return f"{what} is not on this machine; {mapping}, or scan with --fetch-bases to download it"
        fetching = self.cap is not None
        tail = ", or raise the cap" if self.code == "over_cap" else \
            f", or scan with --fetch-bases {'again' if fetching else 'to download it'}" \
            if self.code.startswith("registry_") else ""
        verb = "was not downloaded" if fetching else "cannot be downloaded"
        return f"{what} is not on this machine and {verb}: {self.reason()}; {mapping}{tail}"

    def reason(self) -> str | None:
        """Why the base was not fetched (``None``: no reason recorded)."""
        if self.code == "over_cap" and self.cap is not None:
            return (f"{format_bytes(self.n_bytes)} is over the cap of {format_bytes(self.cap)} "
                    "(--max-base-bytes, LORA_AUDIT_MAX_BASE_BYTES)")
        return None if self.code is None else _WHY.get(self.code) or self.detail or self.code


def format_bytes(n: int | None) -> str:
    """``n`` bytes for a person: ``512 B``, ``354.2 kB``, ``1.3 GB`` (powers of 1000); ``size unknown`` for ``None``."""
    if n is None:
        return "size unknown"
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def hub_id_of(name: str) -> str | None:
    """``name`` when it is a valid Hub repository id (``org/name`` or a legacy ``name``), else ``None``."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def base_files(filenames: Iterable[str]) -> list[str]:
    """The root files of a base repository a probe needs, sorted: ``config.json``, the safetensors
    weights as a full fine-tune's are chosen (:func:`audit.registry.hub_files.files_to_download`),
    and :data:`EXTRA_FILES` present. Never a pickle or code file."""
    names = sorted({n for n in filenames if "/" not in n})
    chosen = [n for n in files_to_download("full_finetune", names) if n != CARD]
    return sorted({*chosen, *(n for n in EXTRA_FILES if n in names)})


def look_up_bases(names: Iterable[str], *, ask_hub: bool, fetch: bool, max_bytes: int,
                  echo: Callable[[str], None] | None = None) -> dict[str, BaseSource]:
    """What can be learnt of each base in ``names`` (none of them on this machine; see the module docstring).

    Args:
        names: declared base names.
        ask_hub: ask the Hub (``HF_ENDPOINT``) for each Hub id's sha and size (model info; no download).
        fetch: also download each one that fits (implies asking the Hub).
        max_bytes: largest base downloaded, bytes (``Limits.max_base_bytes``).
        echo: where progress lines go (``fetching base X (N MB at sha abc1234)``).

    Returns:
        ``{name: BaseSource}``. Never raises for a base the Hub refuses or lacks: that is in the record.
    """
    out: dict[str, BaseSource] = {}
    for name in dict.fromkeys(names):
        hub_id = hub_id_of(name)
        if hub_id is None or not (ask_hub or fetch):
            out[name] = BaseSource(name=name, hub_id=hub_id)
            continue
        out[name] = fetch_base(name, hub_id, max_bytes=max_bytes, echo=echo) if fetch else describe_base(name, hub_id)
    return out


def describe_base(name: str, hub_id: str, revision: str | None = None) -> BaseSource:
    """The sha and size of base ``hub_id`` at ``revision`` (default branch) from ``HfApi.model_info``; nothing
    is downloaded. A Hub failure is returned as ``code``/``detail`` (see :func:`audit.registry.hub_errors.hub_error`)."""
    try:
        info = _api().model_info(hub_id, revision=revision, files_metadata=True)
    except Exception as exc:  # noqa: BLE001 - every client failure becomes a scrubbed code + message
        err = hub_error(exc, repo_id=hub_id, revision=revision)
        return BaseSource(name=name, hub_id=hub_id, sha=revision, code=err.code, detail=err.message)
    sizes = {s.rfilename: (s.lfs.size if s.lfs is not None else s.size) for s in info.siblings or ()}
    wanted = base_files(sizes)
    known = all(sizes[n] is not None for n in wanted)
    source = BaseSource(name=name, hub_id=hub_id, sha=info.sha, files=tuple(wanted), gated=bool(info.gated),
                        n_bytes=sum(int(sizes[n]) for n in wanted) if wanted and known else None)
    if MODEL_CONFIG not in wanted:
        return source.model_copy(update={"code": "no_config"})
    if not any(n.endswith(".safetensors") for n in wanted):
        return source.model_copy(update={"code": "no_safetensors"})
    return source if known else source.model_copy(update={"code": "size_unknown"})


def fetch_base(name: str, hub_id: str, *, max_bytes: int, echo: Callable[[str], None] | None = None) -> BaseSource:
    """Download base ``hub_id`` into the Hub cache at the commit its default branch points to now,
    when it has safetensors weights and its files (:func:`base_files`) total at most ``max_bytes``.

    Returns:
        The :class:`BaseSource`: ``fetched=True``, or ``code`` saying why not (nothing of it was
        downloaded when it is over the cap or has no safetensors weights).
    """
    from huggingface_hub import snapshot_download

    cache = str(hub_cache_dir())
    try:
        sha = _api().resolve_revision(hub_id, cache_dir=cache).resolved
    except Exception as exc:  # noqa: BLE001 - every client failure becomes a scrubbed code + message
        err = hub_error(exc, repo_id=hub_id)
        source = BaseSource(name=name, hub_id=hub_id, code=err.code, detail=err.message, cap=max_bytes)
    else:
        source = describe_base(name, hub_id, sha).model_copy(update={"cap": max_bytes})
    if source.code is None and source.n_bytes is not None and source.n_bytes > max_bytes:
        source = source.model_copy(update={"code": "over_cap"})
    if source.code is None:
        _say(echo, f"fetching base {hub_id} ({format_bytes(source.n_bytes)} at sha {source.sha[:7]})")
        t0 = time.perf_counter()
        try:
            snapshot_download(hub_id, revision=source.sha, allow_patterns=list(source.files), cache_dir=cache,
                              endpoint=hub_endpoint(), etag_timeout=etag_timeout(), tqdm_class=_quiet_bars(),
                              library_name="lora-audit", library_version=PACKAGE_VERSION)
        except Exception as exc:  # noqa: BLE001 - every client failure becomes a scrubbed code + message
            err = hub_error(exc, repo_id=hub_id, revision=source.sha)
            source = source.model_copy(update={"code": err.code, "detail": err.message})
        else:
            _say(echo, f"fetched base {hub_id} in {time.perf_counter() - t0:.1f} s")
            return source.model_copy(update={"fetched": True})
    _say(echo, f"base {hub_id} not fetched: {source.reason()}")
    return source


def _say(echo: Callable[[str], None] | None, line: str) -> None:
    log.info(line)
    if echo is not None:
        echo(line)


def _quiet_bars() -> type:
    """huggingface_hub's tqdm, never drawn (the echoed lines say what is fetched; a bar would tear the
    CLI's own progress display and fill a flow's log). ``silent_tqdm`` lacks what ``snapshot_download``'s
    byte counters read (``total``)."""
    from huggingface_hub.utils import tqdm

    class QuietBars(tqdm):
        def __init__(self, *args, **kwargs) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return QuietBars


def _api() -> HfApi:
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint(), library_name="lora-audit", library_version=PACKAGE_VERSION)

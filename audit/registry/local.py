"""A registry that is a folder on disk.

Every folder (any depth) holding an ``adapter_config.json`` is an adapter. Its ``repo_id`` is the
folder's path relative to the registry root (``/``-separated); its ``revision`` is the sha256 of
the files that matter (config, model card and weight files, by name and content), so editing any
of them makes a new revision, and copying a folder elsewhere keeps it. Hidden folders (``.x``)
are skipped.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from audit.errors import ConfigurationError
from audit.findings import Note
from audit.records import AdapterRef, FileEntry
from audit.registry.base import Listing
from audit.registry.hashcache import ContentHashCache, default_cache_dir

CONFIG_NAME = "adapter_config.json"
_MATTERS_NAMES = {"adapter_config.json", "README.md"}
_MATTERS_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth"}


def files_that_matter(folder: Path) -> list[Path]:
    """The files of an adapter folder that an audit reads or refuses, sorted by name."""
    out = []
    for entry in os.scandir(folder):
        if entry.is_file() and (entry.name in _MATTERS_NAMES or Path(entry.name).suffix in _MATTERS_SUFFIXES):
            out.append(Path(entry.path))
    return sorted(out, key=lambda p: p.name)


def link_escapes(path: Path, root: Path) -> bool:
    """Whether ``path`` is a symlink that resolves outside the folder ``root`` (resolved)."""
    return path.is_symlink() and not path.resolve().is_relative_to(root)


def revision_of(files: list[Path], hashes: ContentHashCache, root: Path | None = None) -> str:
    """sha256 over ``name NUL sha256(content)`` lines of the given files (hex, 64 characters).

    A symlink that resolves outside ``root`` is hashed by its target's name, not read: the
    audit refuses it (``path_outside_registry``) and the listing must not read the host's files."""
    h = hashlib.sha256()
    for path in files:
        if root is not None and link_escapes(path, root):
            digest = "symlink:" + hashlib.sha256(os.readlink(path).encode()).hexdigest()
        else:
            digest = hashes.sha256(path)
        h.update(f"{path.name}\0{digest}\n".encode())
    return h.hexdigest()


class LocalRegistry:
    """Adapters in a folder tree.

    Args:
        root: the registry folder.
        hash_cache: where content hashes are cached between runs (default: a file under
            :func:`default_cache_dir`); ``None`` disables persistence.

    Raises:
        ConfigurationError: ``root`` is not a folder.
    """

    def __init__(self, root: str | Path, *, hash_cache: Path | None | str = "default") -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ConfigurationError(f"registry folder {str(root)!r} does not exist or is not a folder")
        if hash_cache == "default":
            digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
            hash_cache = default_cache_dir() / "content-hashes" / f"{digest}.parquet"
        self._hashes = ContentHashCache(Path(hash_cache) if hash_cache else None)

    @property
    def name(self) -> str:
        return f"local:{self.root}"

    def list_adapters(self) -> Listing:
        """Walk the tree; one :class:`AdapterRef` per folder with an ``adapter_config.json``.

        Content hashes of files the cache does not know are computed on a thread per CPU
        (hashlib releases the GIL): the first listing of a large registry is bound by the disk,
        not by one core's sha256.
        """
        listing = Listing()
        found: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(self.root, onerror=lambda e: _walk_error(e, listing, self.root)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if CONFIG_NAME not in filenames:
                continue
            folder = Path(dirpath)
            rel = folder.relative_to(self.root).as_posix()
            found.append((rel if rel != "." else self.root.name, folder))
        with ThreadPoolExecutor(max_workers=max(1, min(len(found), os.cpu_count() or 1))) as pool:
            for repo_id, out in zip((r for r, _ in found), pool.map(self._ref, found), strict=True):
                if isinstance(out, AdapterRef):
                    listing.refs.append(out)
                else:
                    listing.notes.append((repo_id, Note("list", "not_found", f"cannot read the folder: {out}",
                                                        "error", None)))
        self._hashes.save()
        listing.refs.sort(key=lambda r: r.repo_id)
        return listing

    def _ref(self, found: tuple[str, Path]) -> AdapterRef | OSError:
        repo_id, folder = found
        try:
            files = files_that_matter(folder)
            revision = revision_of(files, self._hashes, self.root)
            entries = tuple(FileEntry(name=p.name, size=p.stat().st_size) for p in files)
        except OSError as exc:
            return exc
        return AdapterRef(repo_id=repo_id, revision=revision, registry=self.name, local_dir=str(folder),
                          files=entries)

    def fetch(self, ref: AdapterRef) -> AdapterRef:
        """Local files are already on disk: returns ``ref`` (with ``local_dir`` set)."""
        if ref.local_dir is None:
            return ref.model_copy(update={"local_dir": str(self.root / ref.repo_id)})
        return ref


def _walk_error(exc: OSError, listing: Listing, root: Path) -> None:
    where = Path(exc.filename).relative_to(root).as_posix() if exc.filename else str(root)
    listing.notes.append((where, Note("list", "not_found", f"cannot list: {exc.strerror}", "error", None)))

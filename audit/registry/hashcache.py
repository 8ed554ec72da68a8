"""A persistent cache of file content hashes, keyed by what ``stat`` says (like git's index).

Hashing every weights file of a large local registry every night would cost more than auditing
the new ones: the sha256 of a file is reused while its path, size, modification time and inode
are unchanged. The cache is a Parquet file written under a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from audit.pyarrow_without_pandas import pa
import pyarrow.parquet as pq

_SCHEMA = pa.schema([("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
                     ("inode", pa.int64()), ("sha256", pa.string())])


def default_cache_dir() -> Path:
    """``$LORA_AUDIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/lora-audit``, else ``~/.cache/lora-audit``."""
    env = os.environ.get("LORA_AUDIT_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lora-audit"


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (hex, 64 characters)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class ContentHashCache:
    """sha256 of files, recomputed only when ``(size, mtime_ns, inode)`` changed.

    :meth:`sha256` may be called from several threads at once (entries are single dict stores).

    Args:
        path: the Parquet file to load from and save to; ``None`` keeps the cache in memory only.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, tuple[int, int, int, str]] = {}
        self._dirty = False
        self._loaded = path is None
        self._lock = threading.Lock()

    def _load(self) -> None:
        """Read the cache file, once, on first use (a registry opened only to fetch never reads it).
        Read as one Parquet file (``pyarrow.parquet.read_table`` would import pyarrow's dataset
        module: 65 ms); a file of another schema counts as damaged."""
        with self._lock:
            if self._loaded:
                return
            try:
                if self.path is not None and self.path.is_file():
                    table = pq.ParquetFile(self.path).read()
                    if table.schema.equals(_SCHEMA):
                        for row in table.to_pylist():
                            self._entries[row["path"]] = (row["size"], row["mtime_ns"], row["inode"], row["sha256"])
            except (OSError, pa.ArrowInvalid):
                pass  # a damaged cache is only a slower scan
            self._loaded = True

    def __getstate__(self) -> dict:  # a registry sent to a Ray actor carries its cache, not the lock
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def sha256(self, path: Path) -> str:
        """Content hash of ``path`` (hex), from the cache when the file is unchanged."""
        if not self._loaded:
            self._load()
        st = path.stat()
        key = str(path.resolve())
        hit = self._entries.get(key)
        if hit is not None and hit[:3] == (st.st_size, st.st_mtime_ns, st.st_ino):
            return hit[3]
        digest = file_sha256(path)
        self._entries[key] = (st.st_size, st.st_mtime_ns, st.st_ino, digest)
        self._dirty = True
        return digest

    def save(self) -> None:
        """Write the cache (temporary name, then rename) if anything changed."""
        if self.path is None or not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"path": k, "size": v[0], "mtime_ns": v[1], "inode": v[2], "sha256": v[3]}
                for k, v in self._entries.items()]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        pq.write_table(pa.Table.from_pylist(rows, schema=_SCHEMA), tmp)
        os.replace(tmp, self.path)
        self._dirty = False

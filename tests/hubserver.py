"""A local Hub-API server for tests: the part of the Hugging Face Hub HTTP API huggingface_hub 2.4 calls.

It serves folders of adapters as repositories of one organization, on 127.0.0.1, so that the real
client (``HfApi``, ``hf_hub_download``) talks to it through ``HF_ENDPOINT`` alone:

- ``GET /api/models?author=ORG`` — the listing (``full``/``cardData`` fields: ``sha``, ``tags``,
  ``library_name``, ``siblings``, ``cardData``, ``gated``, ``private``), paginated with
  ``Link: <…>; rel="next"`` headers (``page_size`` per page), as ``HfApi.list_models`` follows;
- ``GET /api/models/{repo}/tree/{rev}`` — the root files with ``size``, git ``oid`` and ``lfs``
  (``oid`` = sha256, ``size``, ``pointerSize``) for LFS files, as ``HfApi.list_repo_tree`` reads;
- ``GET /api/models/{repo}[/revision/{rev}]`` — model info (``siblings`` with sizes when ``blobs``);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}`` — the file with ``X-Repo-Commit``, ``ETag``
  (git blob sha1, or sha256 for LFS files with ``X-Linked-Etag``/``X-Linked-Size``),
  ``Content-Length``, ``Range`` support, as ``hf_hub_download`` expects.

Errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``,
``GatedRepo``) and ``X-Error-Message`` headers and a JSON ``{"error": …}`` body, which is what
huggingface_hub turns into its typed errors.

Each repository's commit sha is deterministic: sha1 over the names and sha256 of its root files,
so editing a file changes the sha. Folders are named ``ORG/<name>`` with :func:`hub_name`.

Fault switches (:class:`Faults`), changeable while serving: ``rate_limit`` (HTTP 429 with
``Retry-After`` on the first N requests whose path contains a string), ``gated`` (downloads answer
401 without a token, 403 with one, ``GatedRepo``), ``private`` (tree, info and downloads answer
401 ``RepoNotFound`` without a token, 403 with one), ``deleted`` (listed, then 404 everywhere),
``slow`` (file bodies delayed by N seconds), ``echo_auth`` (error messages repeat the request's
``Authorization`` header, as a careless proxy would: for testing that tokens are scrubbed),
``listing_status`` (the listing fails with that status).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
LFS_MAGIC = b"version https://git-lfs.github.com/spec/"


def hub_name(rel: str) -> str:
    """A valid Hub repository name for a folder path (``a/b@c---d`` → ``a__b.c-d``, ≤ 96 characters)."""
    name = rel.replace("/", "__").replace("@", ".")
    name = re.sub(r"[^A-Za-z0-9_.\-]", "-", name)
    name = re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", ".", name)).strip("-.")
    return name[:96].rstrip("-.")


@dataclass
class Faults:
    """What the server does wrong; see the module docstring. Mutable while the server runs."""

    rate_limit: dict[str, int] = field(default_factory=dict)
    gated: set[str] = field(default_factory=set)
    private: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    slow: dict[str, float] = field(default_factory=dict)
    echo_auth: bool = False
    listing_status: int = 0
    """When set, the model listing answers with this HTTP status (401: a bad token)."""


@dataclass(frozen=True)
class Logged:
    """One request the server received."""

    method: str
    path: str
    query: str
    status: int
    authorization: str | None
    at: float
    """``time.monotonic()`` when the answer was sent."""


@dataclass(frozen=True)
class _File:
    name: str
    path: Path
    size: int
    sha256: str
    git_oid: str
    lfs: bool


class HubServer:
    """Serve ``repos`` (``"ORG/name"`` → folder) on ``127.0.0.1``; use as a context manager.

    Args:
        repos: repository id → folder whose root files are the repository.
        page_size: models per listing page.
    """

    def __init__(self, repos: dict[str, Path], *, page_size: int = 1000) -> None:
        self.repos = dict(repos)
        self.page_size = page_size
        self.faults = Faults()
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        self._hash_cache: dict[tuple[str, int, int], str] = {}
        self._files_cache: dict[str, tuple[tuple, list[_File]]] = {}
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            if self._thread.is_alive():  # shutdown() waits for serve_forever forever if its thread is gone
                self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- what tests look at -------------------------------------------------------------------

    def requests(self, since: int = 0, *, contains: str = "", method: str | None = None) -> list[Logged]:
        """Requests received after the ``since``-th, whose path contains ``contains``."""
        with self._lock:
            return [r for r in self.log[since:] if contains in r.path and (method is None or r.method == method)]

    def sha(self, repo_id: str) -> str:
        """The repository's current commit sha (40 hex characters)."""
        h = hashlib.sha1()
        for f in self.files(repo_id):
            h.update(f"{f.name}\0{f.sha256}\n".encode())
        return h.hexdigest()

    def files(self, repo_id: str) -> list[_File]:
        """The repository's root files (sorted by name), recomputed when a file's size or mtime changed."""
        paths = [p for p in sorted(self.repos[repo_id].iterdir()) if p.is_file() and not p.name.startswith(".")]
        key = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
        hit = self._files_cache.get(repo_id)
        if hit is not None and hit[0] == key:
            return hit[1]
        out = []
        for path in paths:
            data_hash = self._sha256(path)
            raw = path.read_bytes() if path.stat().st_size < 4096 else b""
            lfs = path.suffix in LFS_SUFFIXES and not raw.startswith(LFS_MAGIC)
            size = path.stat().st_size
            if lfs:
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{data_hash}\nsize {size}\n"
                oid = _git_blob_sha1(pointer.encode())
            else:
                oid = _git_blob_sha1(path.read_bytes())
            out.append(_File(path.name, path, size, data_hash, oid, lfs))
        self._files_cache[repo_id] = (key, out)
        return out

    def _sha256(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._hash_cache:
            with open(path, "rb") as fh:
                self._hash_cache[key] = hashlib.file_digest(fh, "sha256").hexdigest()
        return self._hash_cache[key]

    def card(self, repo_id: str) -> dict:
        """The README front matter (``{}`` when absent or unreadable)."""
        readme = self.repos[repo_id] / "README.md"
        if not readme.is_file():
            return {}
        lines = readme.read_text(errors="replace").lstrip("\ufeff").splitlines()
        if not lines or lines[0].strip() != "---":
            return {}
        end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() in ("---", "...")), None)
        try:
            data = yaml.safe_load("\n".join(lines[1:end])) if end else None
        except yaml.YAMLError:
            return {}
        return data if isinstance(data, dict) else {}

    def model_json(self, repo_id: str, *, sizes: bool = False) -> dict:
        """The listing / model-info record of one repository, as the Hub writes it."""
        files = self.files(repo_id)
        names = {f.name for f in files}
        card = self.card(repo_id)
        library = card.get("library_name") or ("peft" if "adapter_config.json" in names else None)
        tags = [str(t) for t in (card.get("tags") or []) if isinstance(t, (str, int, float))]
        base = card.get("base_model")
        base = base[0] if isinstance(base, list) and base else base
        if isinstance(base, str) and base:
            relation = card.get("base_model_relation") or (
                "adapter" if "adapter_config.json" in names else "finetune" if "config.json" in names else None)
            tags += [f"base_model:{base}"] + ([f"base_model:{relation}:{base}"] if relation else [])
        if library:
            tags.append(str(library))
        mtime = max((f.path.stat().st_mtime for f in files), default=0.0)
        stamp = datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        siblings = []
        for f in files:
            entry: dict = {"rfilename": f.name}
            if sizes:
                entry.update({"size": f.size, "blobId": f.git_oid})
                if f.lfs:
                    entry["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
            siblings.append(entry)
        org = repo_id.split("/")[0]
        return {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
            "author": org, "sha": self.sha(repo_id), "lastModified": stamp, "createdAt": stamp,
            "private": repo_id in self.faults.private,
            "gated": "manual" if repo_id in self.faults.gated else False, "disabled": False,
            "downloads": 0, "likes": 0, "library_name": library, "tags": tags, "pipeline_tag": None,
            "siblings": siblings, "cardData": json.loads(json.dumps(card, default=str)) if card else None,
        }


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stalls

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence stderr
        return

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._route(head=False)

    # --- routing ------------------------------------------------------------------------------

    def _route(self, *, head: bool) -> None:
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        self._status = 0
        try:
            if self._rate_limited(path):
                return
            if m := _RESOLVE.match(path):
                self._resolve(m["repo"], unquote(m["rev"]), m["file"], head)
            elif head:
                self._error(405, None, "method not allowed")
            elif path == "/api/models" and self.hub.faults.listing_status:
                self._error(self.hub.faults.listing_status, None, "Invalid credentials in Authorization header")
            elif path == "/api/models":
                self._list(query)
            elif m := _TREE.match(path):
                self._tree(m["repo"], unquote(m["rev"]), m["sub"] or "")
            elif m := _INFO.match(path):
                self._info(m["repo"], unquote(m["rev"]) if m["rev"] else None, query)
            else:
                self._error(404, None, f"no route for {path}")
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with self.hub._lock:
                self.hub.log.append(Logged(self.command, path, parts.query, self._status,
                                           self.headers.get("Authorization"), time.monotonic()))

    def _rate_limited(self, path: str) -> bool:
        with self.hub._lock:
            for key, left in self.hub.faults.rate_limit.items():
                if key in path and left > 0:
                    self.hub.faults.rate_limit[key] = left - 1
                    break
            else:
                return False
        self._send(429, {"error": "rate limit reached, retry later"}, headers={"Retry-After": "1"})
        return True

    def _repo(self, repo_id: str, rev: str | None, *, download: bool) -> str | None:
        """The sha to serve, or ``None`` after answering with the repository's fault or a 404."""
        faults, authed = self.hub.faults, bool(self.headers.get("Authorization"))
        if repo_id not in self.hub.repos or repo_id in faults.deleted:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if repo_id in faults.private:
            if authed:
                self._error(403, None, "This token does not have read access to this repository")
            else:
                self._error(401, "RepoNotFound", "Repository not found")
            return None
        if download and repo_id in faults.gated:
            self._error(403 if authed else 401, "GatedRepo",
                        f"Access to model {repo_id} is restricted and you are not in the authorized list.")
            return None
        sha = self.hub.sha(repo_id)
        if rev not in (None, "main", sha):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return sha

    # --- endpoints ----------------------------------------------------------------------------

    def _list(self, query: dict[str, list[str]]) -> None:
        author = (query.get("author") or [""])[0]
        ids = sorted(r for r in self.hub.repos if r.split("/")[0] == author or not author)
        start = int((query.get("cursor") or ["0"])[0])
        page = ids[start:start + self.hub.page_size]
        headers = {}
        if start + self.hub.page_size < len(ids):
            nxt = {k: v[0] for k, v in query.items() if k != "cursor"} | {"cursor": str(start + self.hub.page_size)}
            headers["Link"] = f'<{self.hub.url}/api/models?{urlencode(nxt)}>; rel="next"'
        self._send(200, [self.hub.model_json(r) for r in page], headers=headers)

    def _tree(self, repo_id: str, rev: str, sub: str) -> None:
        if self._repo(repo_id, rev, download=False) is None:
            return
        if sub:
            self._error(404, "EntryNotFound", f"{sub} does not exist")
            return
        entries = []
        for f in self.hub.files(repo_id):
            entry = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.name}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
            entries.append(entry)
        self._send(200, entries)

    def _info(self, repo_id: str, rev: str | None, query: dict[str, list[str]]) -> None:
        if self._repo(repo_id, rev, download=False) is None:
            return
        blobs = (query.get("blobs") or ["false"])[0].lower() in ("1", "true")
        self._send(200, self.hub.model_json(repo_id, sizes=blobs))

    def _resolve(self, repo_id: str, rev: str, name: str, head: bool) -> None:
        sha = self._repo(repo_id, rev, download=True)
        if sha is None:
            return
        f = next((f for f in self.hub.files(repo_id) if f.name == name), None)
        if f is None:
            self._error(404, "EntryNotFound", f"{name} does not exist at {sha}", headers={"X-Repo-Commit": sha})
            return
        etag = f.sha256 if f.lfs else f.git_oid
        headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if f.lfs:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(f.size)})
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "") or "")
        if match and int(match[1]) < f.size:
            start = int(match[1])
            headers["Content-Range"] = f"bytes {start}-{f.size - 1}/{f.size}"
        if head:
            self._send_headers(200, f.size, headers)
            return
        delay = self.hub.faults.slow.get(repo_id, 0.0)
        if delay:
            time.sleep(delay)
        self._send_headers(206 if start else 200, f.size - start, headers)
        self.wfile.flush()
        with open(f.path, "rb") as fh:
            self.connection.sendfile(fh, offset=start)

    # --- responses ----------------------------------------------------------------------------

    def _error(self, status: int, code: str | None, message: str, headers: dict | None = None) -> None:
        if self.hub.faults.echo_auth and self.headers.get("Authorization"):
            message += f" (request header Authorization: {self.headers['Authorization']})"
        extra = dict(headers or {})
        if code:
            extra["X-Error-Code"] = code
        extra["X-Error-Message"] = message
        self._send(status, {"error": message}, headers=extra)

    def _send(self, status: int, body: object, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self._send_headers(status, len(data), {"Content-Type": "application/json", **(headers or {})})
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_headers(self, status: int, length: int, headers: dict) -> None:
        self._status = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()


def serve_folders(root: Path, org: str) -> dict[str, Path]:
    """Every folder under ``root`` (any depth) holding an ``adapter_config.json`` or a ``config.json``,
    as ``{"ORG/<hub_name(relative path)>": folder}``."""
    out: dict[str, Path] = {}
    for marker in ("adapter_config.json", "config.json"):
        for cfg in sorted(root.rglob(marker)):
            rel = cfg.parent.relative_to(root).as_posix()
            if any(part.startswith(".") for part in Path(rel).parts):
                continue
            repo = f"{org}/{hub_name(rel if rel != '.' else root.name)}"
            assert repo not in out or out[repo] == cfg.parent, f"two folders map to {repo}"
            out[repo] = cfg.parent
    return out




def point_client_at(monkeypatch, server: HubServer, cache: Path, token: str | None = None) -> None:
    """Point huggingface_hub at ``server`` the way a user would: ``HF_ENDPOINT`` (plus a fresh
    ``HF_HUB_CACHE``, and ``HF_TOKEN`` when given). No token file is read: the test must not pick
    up a developer's login."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(cache / "no-token-file"))
    if token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", token)

"""Classifier artifacts: saved with skops (never pickle), integrity-checked on load.

An artifact is the skops serialization of a fitted scikit-learn model; its sha256 is recorded in
the ``classifiers`` table when it is written. Loading refuses a file whose hash differs (tampered
or truncated) and refuses any type outside an allowlist of scikit-learn and numpy types, so a
planted artifact cannot execute code.
"""

from __future__ import annotations

import hashlib

from audit.errors import IntegrityError
from audit.store.parquet import ParquetStore

ALLOWED_PREFIXES = ("sklearn.", "numpy.", "scipy.")
ARTIFACT_DIR = "artifacts/classifiers"


def dumps(model) -> bytes:
    """Serialize a fitted model with skops."""
    import skops.io as sio

    return sio.dumps(model)


def loads(data: bytes, expected_sha256: str):
    """Deserialize an artifact after checking its hash and the types it contains.

    Raises:
        IntegrityError: the hash differs from ``expected_sha256``, or the artifact holds a type
            that is not scikit-learn, numpy or scipy.
    """
    import skops.io as sio

    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise IntegrityError(f"classifier artifact hash {digest[:16]}… does not match the recorded "
                             f"{expected_sha256[:16]}…: refusing to load it")
    untrusted = sio.get_untrusted_types(data=data)
    bad = [t for t in untrusted if not t.startswith(ALLOWED_PREFIXES)]
    if bad:
        raise IntegrityError(f"classifier artifact contains types outside scikit-learn/numpy/scipy: {bad}")
    return sio.loads(data, trusted=untrusted)


def save(store: ParquetStore, classifier_id: str, model) -> tuple[str, str]:
    """Write a model's artifact into the store; returns ``(relative path, sha256)``."""
    data = dumps(model)
    path = f"{ARTIFACT_DIR}/{classifier_id}.skops"
    store.write_blob(path, data)
    return path, hashlib.sha256(data).hexdigest()


def load(store: ParquetStore, path: str, sha256: str):
    """Read and check an artifact written by :func:`save`.

    Raises:
        IntegrityError: see :func:`loads`.
    """
    return loads(store.read_blob(path), sha256)

"""Feature vectors of adapters, computed from the store (the classifiers' input).

Feature sets, by name: ``spectral-v1`` (:mod:`.spectral`, from the delta spectra of every
adapter), ``directional-v1`` (:mod:`.directional`, from the directional measures against the base
model's refusal direction: only adapters whose base model was at hand), and their concatenation
``spectral-v1+directional-v1``.
"""

from __future__ import annotations

import numpy as np

from audit.errors import ConfigurationError
from audit.features.directional import FEATURE_SET as DIRECTIONAL
from audit.features.directional import directional_features, has_directions
from audit.features.spectral import FEATURE_SET, feature_names, spectral_features

SPECTRAL = FEATURE_SET
BOTH = f"{SPECTRAL}+{DIRECTIONAL}"
FEATURE_SETS = (SPECTRAL, DIRECTIONAL, BOTH)

__all__ = ["BOTH", "DIRECTIONAL", "FEATURE_SET", "FEATURE_SETS", "SPECTRAL", "feature_names", "features",
           "needs_directions", "spectral_features"]


def needs_directions(feature_set: str) -> bool:
    """Whether ``feature_set`` includes the directional features."""
    return DIRECTIONAL in feature_set.split("+")


def features(con, adapter_ids: list[str], feature_set: str) -> tuple[np.ndarray, np.ndarray]:
    """Features of ``adapter_ids`` (in that order) in ``feature_set``.

    Returns:
        ``(X, ok)``: float64 ``[n, d]`` (NaN where undefined) and ``[n]`` bool, False for adapters
        that lack a part the set needs (no directional measures: their base model was not at hand).

    Raises:
        ConfigurationError: unknown feature set.
    """
    if feature_set not in FEATURE_SETS:
        raise ConfigurationError(f"unknown feature set {feature_set!r}: known are {', '.join(FEATURE_SETS)}")
    parts, ok = [], np.ones(len(adapter_ids), dtype=bool)
    for part in feature_set.split("+"):
        if part == SPECTRAL:
            parts.append(spectral_features(con, list(adapter_ids))[1])
        else:
            X = directional_features(con, list(adapter_ids))[1]
            ok &= has_directions(X)
            parts.append(X)
    return np.concatenate(parts, axis=1) if parts else np.zeros((len(adapter_ids), 0)), ok

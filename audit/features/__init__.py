"""Feature vectors of adapters, computed from the store (the classifiers' input).

A feature set comes with the analyzer that measures it (``register_analyzer(...,
feature_set=...)``, :class:`audit.features.base.FeatureSet`). Built in: ``spectral-v1``
(:mod:`.spectral`, from the delta spectra of every adapter) and ``directional-v1``
(:mod:`.directional`, from the directional measures against the base model's refusal direction:
only adapters whose base model was at hand). Sets are concatenated by name with ``+``
(``spectral-v1+directional-v1``).
"""

from __future__ import annotations

import importlib

import numpy as np

from audit.errors import ConfigurationError
from audit.features.base import FeatureSet
from audit.features.directional import FEATURE_SET as DIRECTIONAL
from audit.features.spectral import FEATURE_SET, feature_names, spectral_features

SPECTRAL = FEATURE_SET
BOTH = f"{SPECTRAL}+{DIRECTIONAL}"

__all__ = ["BOTH", "DIRECTIONAL", "FEATURE_SET", "FeatureSet", "SPECTRAL", "feature_names", "feature_sets",
           "features", "spectral_features"]


def feature_sets() -> dict[str, FeatureSet]:
    """Every registered analyzer's feature set, by name."""
    from audit.analyzers.base import registrations

    out: dict[str, FeatureSet] = {}
    for reg in registrations().values():
        for ref in reg.feature_sets:
            module, _, attr = ref.partition(":")
            fs = getattr(importlib.import_module(module), attr)
            out[fs.name] = fs
    return out


def features(con, adapter_ids: list[str], feature_set: str) -> tuple[np.ndarray, np.ndarray]:
    """Features of ``adapter_ids`` (in that order) in ``feature_set`` (a registered set, or several
    joined with ``+``).

    Returns:
        ``(X, ok)``: float64 ``[n, d]`` (NaN where undefined) and ``[n]`` bool, False for adapters
        that lack a part the set needs (no directional measures: their base model was not at hand).

    Raises:
        ConfigurationError: unknown feature set.
    """
    known = feature_sets()
    parts = feature_set.split("+")
    unknown = [p for p in parts if p not in known]
    if unknown:
        raise ConfigurationError(f"unknown feature set {feature_set!r}: known are {', '.join(sorted(known))} "
                                 "(or several joined with '+')")
    blocks, ok = [], np.ones(len(adapter_ids), dtype=bool)
    for part in parts:
        fs = known[part]
        X = fs.compute(con, list(adapter_ids))[1]
        if fs.present is not None:
            ok &= fs.present(X)
        blocks.append(X)
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(adapter_ids), 0)), ok

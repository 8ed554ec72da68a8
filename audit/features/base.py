"""What a feature set is: a name, its columns, and how to read them from the store.

Each analyzer that feeds the classifiers registers one (``register_analyzer(...,
feature_set="package.module:FEATURES")``); :func:`audit.features.features` reads any of them, or
their concatenation ``a+b``, by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureSet:
    """One feature set.

    Attributes:
        name: versioned name (``spectral-v1``), recorded with every classifier trained on it.
        names: the column names, in order (fixed whatever the adapters).
        compute: ``compute(con, adapter_ids) -> (adapter_ids, X)``, ``X`` float64
            ``[n, len(names())]``, NaN where undefined; ``con`` has the store's views.
        present: ``present(X) -> [n] bool``: rows the analyzer measured at all (an adapter
            without them gets no verdict from a classifier that needs this set); ``None``: every
            row (the set is defined for every adapter).
    """

    name: str
    names: Callable[[], list[str]]
    compute: Callable[..., tuple[list[str], np.ndarray]]
    present: Callable[[np.ndarray], np.ndarray] | None = None

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


def fill_groups(cur, X: np.ndarray, row_of: dict[str, int], col_of: dict[str, int], prefix: str = "") -> None:
    """Write a long-format aggregate result into ``X`` ``[n_adapters, n_features]`` in place.

    Args:
        cur: an executed DuckDB query with columns ``adapter_id``, ``grp`` and one per statistic.
        row_of: adapter id -> row of ``X``; col_of: ``f"{prefix}{grp}.{statistic}"`` -> column.
        (A NULL aggregate, or a name without a column, leaves the NaN in place.)
    """
    cols = [d[0] for d in cur.description]
    for row in cur.fetchall():
        rec = dict(zip(cols, row, strict=True))
        i = row_of[rec.pop("adapter_id")]
        grp = rec.pop("grp")
        for key, value in rec.items():
            j = col_of.get(f"{prefix}{grp}.{key}")
            if j is not None and value is not None:
                X[i, j] = value


def grouped_features(con, adapter_ids: list[str], names: list[str], totals_sql: str, groups_sql: str, *,
                     prefix: str = "") -> np.ndarray:
    """A feature matrix float64 ``[len(adapter_ids), len(names)]`` (NaN where undefined) from two
    queries over the store's views that read the adapters wanted from a temporary table
    ``_wanted(adapter_id)``, registered on ``con`` for the call:

    - ``totals_sql``: ``adapter_id`` and k values, written into the first k columns;
    - ``groups_sql``: the long format of :func:`fill_groups` (``adapter_id``, ``grp``, one column
      per statistic), written into the columns named ``f"{prefix}{grp}.{statistic}"``.

    Raises:
        duckdb.Error: a query fails (a view the set reads is missing).
    """
    from audit.pyarrow_without_pandas import pa

    X = np.full((len(adapter_ids), len(names)), np.nan)
    if not adapter_ids:
        return X
    con.register("_wanted", pa.table({"adapter_id": pa.array(list(adapter_ids), pa.string())}))
    try:
        row_of = {a: i for i, a in enumerate(adapter_ids)}
        col_of = {n: j for j, n in enumerate(names)}
        for adapter_id, *values in con.execute(totals_sql).fetchall():
            X[row_of[adapter_id], : len(values)] = values
        fill_groups(con.execute(groups_sql), X, row_of, col_of, prefix=prefix)
    finally:
        con.unregister("_wanted")
    return X
